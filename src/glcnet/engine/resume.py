"""``--resume``: where a run continues from, and whether it may.

``RUN/checkpoints/last.ckpt`` (:func:`resume_ckpt`) is what a run resumes. :func:`check_resume`
refuses a corrupt checkpoint, or settings that cannot continue it, before the run folder is
touched; :func:`previous_run` does the checks of both commands and words their advice.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from glcnet.config import flat, to_dict
from glcnet.engine.checkpoints import load_torch
from glcnet.errors import GlcnetError
from glcnet.runs import RunDir


def resume_ckpt(run: RunDir | Path | str) -> str | None:
    """``RUN/checkpoints/last.ckpt`` if a previous (possibly killed) run left one."""
    p = (run.path if isinstance(run, RunDir) else Path(run)) / "checkpoints" / "last.ckpt"
    return str(p) if p.is_file() else None


def has_checkpoint(run: Path) -> bool:
    """A run folder worth keeping after a failure: it can be resumed."""
    return resume_ckpt(run) is not None


# settings that may differ when a run is resumed (longer schedule, other hardware, logging)
MAY_CHANGE_ON_RESUME = ("out", "optim.epochs", "trainer.max_steps", "trainer.progress", "trainer.log_every",
                        "trainer.num_workers", "trainer.checkpoint_every", "trainer.devices", "trainer.num_nodes",
                        "trainer.strategy", "trainer.accelerator", "early_stop", "eval.")
_PATH_KEYS = ("data", "init")


def _same(key: str, a: Any, b: Any) -> bool:
    if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str) and "none" not in (a.lower(), b.lower()):
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def _rates_resolved(config: dict[str, Any]) -> dict[str, Any]:
    """A flat config with ``model.atrous_rates`` as built: null is the output stride's default, and a
    config of a version without the key was built with smp's (``glcnet.models.deeplab``)."""
    from glcnet.models.deeplab import DEFAULT_ATROUS_RATES, LEGACY_ATROUS_RATES

    if "model.output_stride" not in config:
        return config
    rates = config.get("model.atrous_rates", LEGACY_ATROUS_RATES)
    rates = DEFAULT_ATROUS_RATES.get(config["model.output_stride"], ()) if rates is None else rates
    return {**config, "model.atrous_rates": list(rates)}


def check_resume(last: str | Path, kind: str, cfg: Any) -> None:
    """Refuse (one line, nothing touched) to resume ``last`` if it is unreadable, of another kind,
    or was started with settings other than ``cfg`` outside :data:`MAY_CHANGE_ON_RESUME`."""
    last = Path(last)
    ckpt = load_torch(last, "training checkpoint")
    meta = ckpt.get("glcnet") or {}
    if "state_dict" not in ckpt or "loops" not in ckpt:
        raise GlcnetError(f"{last}: not a Lightning training checkpoint; cannot resume from it")
    if meta.get("kind") not in (None, kind):
        raise GlcnetError(f"{last}: a {meta['kind']} checkpoint; glcnet {kind} cannot resume it")
    saved = meta.get("config")
    if saved is None:  # checkpoints of earlier versions: the run's config.yaml
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError):
            saved = yaml.safe_load((last.parent.parent / "config.yaml").read_text())
    run = last.parent.parent
    if meta.get("data_id") and getattr(cfg, "data", None):  # the same data set: by identity, wherever it lies
        from glcnet.data.prepared import dataset_id

        have = dataset_id(cfg.data)
        if have != meta["data_id"]:
            was = (saved or {}).get("data") if isinstance(saved, dict) else None
            raise GlcnetError(f"{run}: cannot resume on {cfg.data}: it is not the data set the run was trained on "
                              f"(identity {have}, the run's {meta['data_id']}: another data set, or re-prepared)"
                              + (f"; the run was trained on {was}" if was else ""))
    if not isinstance(saved, dict):
        return
    old, new = _rates_resolved(flat(saved)), _rates_resolved(flat(to_dict(cfg)))
    for key in sorted(set(old) | set(new)):
        if key.startswith(MAY_CHANGE_ON_RESUME) or key in MAY_CHANGE_ON_RESUME:
            continue
        if key == "data" and meta.get("data_id"):  # compared by identity above
            continue
        if not _same(key, old.get(key), new.get(key)):
            raise GlcnetError(f"{run}: cannot resume with {key}={new.get(key)!r}: the run was "
                              f"started with {key}={old.get(key)!r} (resume with the run's own settings, --config "
                              f"{(run / 'config.yaml').resolve()}, or choose another --out)")


def previous_run(out: Path, kind: str, cfg: Any, resume: bool, *, result: str, noun: str) -> tuple[str | None, str]:
    """What ``out`` holds from an earlier run of ``glcnet kind``: ``(last, hint)``.

    ``last``: the checkpoint a resumed run continues (:func:`resume_ckpt` of the folder the run
    writes into, :func:`glcnet.outputs.run_target`: an interrupted ``--overwrite``'s replacement
    first), or None. With ``resume``, refuses (one line) when there is none, or when
    :func:`check_resume` refuses it. ``hint``: the advice of :func:`glcnet.outputs.run_folder` when
    ``out`` is taken: a finished run (``out/result`` exists), one to resume, or one that stopped
    before its first checkpoint; ``noun`` names the run ("pretraining").
    """
    from glcnet.outputs import replacement, run_target

    last = resume_ckpt(run_target(out, kind, resume=resume))
    if resume and last is None:
        raise GlcnetError(f"{out}: nothing to resume (no checkpoints/last.ckpt)")
    if resume and last is not None:
        check_resume(last, kind, cfg)
    if resume_ckpt(replacement(out)) is not None:
        return last, (f"an interrupted --overwrite left its replacement {noun} beside it; continue that with "
                      "--resume, or start the replacement again with --overwrite (the run in it stays until "
                      "a replacement finishes)")
    hint = (f"a finished {noun} is already there (--overwrite replaces it, or choose another --out)"
            if (out / result).exists() else
            f"holds an unfinished {noun}; continue it with --resume (or --overwrite to start again)"
            if last is not None else f"holds a {noun} that stopped before its first checkpoint "
            "(--overwrite starts it again)")
    return last, hint
