"""Run directories: resolved config, git commit, seed, versions, metrics as JSON lines.

Layout of every run (pretrain, finetune, evaluate, experiment)::

    RUN/config.yaml      resolved typed config (rerun with --config RUN/config.yaml)
    RUN/run.json         command line, git commit, seed, library versions, start time
    RUN/metrics.jsonl    one JSON object per logged step/epoch
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from glcnet.config import save_config
from glcnet.utils.atomic import write_json


def git_commit() -> str | None:
    """Commit hash of the glcnet source tree (``+dirty`` when modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions (``run.json``)."""
    out = {"python": platform.python_version()}
    for mod in ("torch", "lightning", "segmentation_models_pytorch", "torchmetrics", "numpy", "rasterio"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return out


class RunDir:
    """A run directory; ``RunDir.create`` writes config.yaml and run.json (on rank 0)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | os.PathLike, cfg: Any, seed: int, extra: dict[str, Any] | None = None) -> RunDir:
        run = cls(path)
        from glcnet.outputs import rank

        if rank() != 0:  # DDP: rank 0 writes the run's files
            return run
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.path / "config.yaml")
        info = {
            "command": sys.argv,
            "git_commit": git_commit(),
            "seed": seed,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "versions": versions(),
            **(extra or {}),
        }
        write_json(run.path / "run.json", info)
        return run

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (flushed at once)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl, in order; a line cut by a kill is skipped."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows
