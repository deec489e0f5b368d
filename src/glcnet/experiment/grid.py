"""``glcnet experiment``: methods x label fractions x seeds, resumable, one results table.

Layout of ``OUT`` (``ExperimentConfig.out``)::

    config.yaml, run.json, metrics.jsonl        resolved config and one line per finished cell
    pretrain/<method>-s<seed>-<hash>/           one pretraining per (method, seed), reused by every fraction
    cells/<method>-f<fraction>-s<seed>-<hash>/  probe.json, finetune/ (model.pt), eval/, result.json or error.txt
    results.csv, results.md, report.html       tables and the page to open in a browser (glcnet.experiment.report)
    kappa_vs_fraction.png | kappa_by_method.png the Kappa plot (over fractions, or by method for one fraction)
    probe_curves.png                            with probes: probe mIoU along the pretraining

A method entry is a name (``glcnet``, ``simclr``, ``glcnet_no_local``...) or a name with
pretraining overrides, ``glcnet[method.lam=0.25,method.patch_size=8]`` (keys are paths in
the pretrain config: ``method.*``, ``views.*``, ``optim.*``...): its own row, folder
(``glcnet+method.lam=0.25+method.patch_size=8``) and pretraining, for sweeps and
augmentation studies. Keys under ``finetune.`` change that row's fine-tuning only
(``glcnet[finetune.load=all]``): it shares the pretraining of the entry without them.
``pretrain_seed: S`` (>= 0) makes every seed's cells start from one pretraining of seed S
(fine-tuning seeds then vary the labelled subset with ``subsets: seed``, crops and order
only); the default -1 pretrains once per seed. ``pretrain_seeds: [S1, S2, ...]`` runs every
cell of a pretrained method once per pretraining (folders ``...-s<seed>-p<S>-<hash>``), and the
tables' intervals include the pretrainings' variance (:mod:`glcnet.experiment.stats`). Every
cell records its val-scene metrics at the selected epoch next to the test metrics, so that a
sweep is chosen on val (``val_kappa_mean`` in ``results.csv``) and only then read on test.

``<hash>`` is a short SHA-1 of the resolved sub-config that determines the run (data
identity and every setting that differs from the defaults: seed, model, method, schedule;
not output paths or logging options), so
rerunning an unchanged config skips finished work and a changed one runs anew. A killed
pretraining or fine-tuning resumes from its ``checkpoints/last.ckpt``; a finished cell keeps
its weights (``finetune/model.pt``, ``model_last.pt``) and drops that resume state (about
280 MB a cell for ResNet-18, 13 GB for the long CPU grid). A failing cell
writes its traceback to ``error.txt``, is shown as failed, and the grid goes on; the
command then exits with status 1. ``OUT`` is the experiment's own folder
(:mod:`glcnet.outputs`, kind ``experiment``): rerunning into it continues it, and while it
runs no second process may write it.

With ``probe: true`` (default) every cell also probes the frozen features of the network
its fine-tuning starts from (the pretrained weights, or the seeded random init of
``none``) on its labelled subset (``probe.json``, columns ``probe_*``), and every
pretraining runs the online probe (``pretrain.probe``, on the smallest fraction of the
grid unless ``pretrain.probe.fraction`` is one of the grid's) whose curves over the
pretraining steps go to ``probe_curves.png``. Probe settings change neither the weights
nor the fine-tuning, so they are not part of any hash.

One module, longer than the others: what a cell is (method entries, configs, hashes,
folders) and how the grid runs it are changed together.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from glcnet import outputs
from glcnet.config import (
    ExperimentConfig,
    FinetuneConfig,
    PretrainConfig,
    add_config_args,
    check_values,
    config_from_args,
    flat,
    split_top,
    to_dict,
    with_overrides,
)
from glcnet.errors import GlcnetError
from glcnet.experiment.curves import plot_probe_curves
from glcnet.experiment.table import CellResult, frac_label, label, split_spec, write_tables
from glcnet.runs import RunDir
from glcnet.utils.atomic import write_json, write_text
from glcnet.utils.progress import Eta
from glcnet.utils.progress import log as _log

# options that change neither the trained weights nor the metrics: left out of the hash
_NO_EFFECT = {"out", "trainer.progress", "trainer.tensorboard", "trainer.log_every", "trainer.num_workers",
              "trainer.checkpoint_every"}


def short_hash(obj: Any) -> str:
    """First 8 hex digits of the SHA-1 of ``obj`` as canonical JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _hashable(cfg: Any) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from its defaults, as ``{"a.b": value}``.

    Only non-default values are keyed, so a field added to the configs later (with a
    default that keeps the old behaviour) does not invalidate finished cells. Left out:
    ``_NO_EFFECT`` and ``data`` (identified by content, see :func:`data_id`).
    """
    default = flat(to_dict(type(cfg)()))
    return {k: v for k, v in flat(to_dict(cfg)).items()
            if k not in _NO_EFFECT and k != "data" and not k.startswith("probe.")
            and (k not in default or default[k] != v)}


def data_id(data: str | Path) -> str:
    """Identity of a prepared data set (:func:`glcnet.data.prepared.dataset_id`)."""
    from glcnet.data.prepared import dataset_id

    return dataset_id(data)


def parse_method(spec: str) -> tuple[str, list[str]]:
    """``"glcnet[method.lam=0.25,views.scale=[0.2,1.0]]"`` -> ``("glcnet", ["method.lam=0.25",
    "views.scale=[0.2,1.0]"])`` (commas inside brackets stay with their value)."""
    name, inner = split_spec(spec.strip())
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or ("[" in spec and not spec.strip().endswith("]")):
        raise GlcnetError(f"experiment: method entry {spec!r}: expected NAME or NAME[key=value,...]")
    parts = split_top(inner)
    bad = [p for p in parts if "=" not in p]
    if bad:
        raise GlcnetError(f"experiment: method entry {spec!r}: {bad[0]!r} is not key=value")
    return name, parts


def is_random(spec: str) -> bool:
    """A method entry of random initialisation: ``none`` or ``none[finetune.*=...]``."""
    return parse_method(spec)[0] == "none"


def slug(spec: str, pretrain_only: bool = False) -> str:
    """Folder-name form of a method entry: ``glcnet[method.lam=0.25]`` -> ``glcnet+method.lam=0.25``
    (``pretrain_only``: without its ``finetune.*`` overrides, the name of its pretraining)."""
    name, overrides = parse_method(spec)
    if pretrain_only:
        overrides = _split(overrides)[0]
    return "+".join([name] + [re.sub(r"[^A-Za-z0-9_.=-]+", "_", o) for o in overrides])


def _split(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Overrides of a method entry: (pretraining ones, fine-tuning ones without their ``finetune.`` prefix)."""
    ft = [o[len("finetune."):] for o in overrides if o.startswith("finetune.")]
    return [o for o in overrides if not o.startswith("finetune.")], ft


def pretrain_config(cfg: ExperimentConfig, method: str, seed: int) -> PretrainConfig:
    """The pretraining config of a method entry (its overrides but ``finetune.*`` applied) and seed."""
    name, overrides = parse_method(method)
    pc = with_overrides(cfg.pretrain, _split(overrides)[0], f"experiment: method entry {method!r}: pretrain")
    check_values(pc, "pretrain.")
    pc.data, pc.seed, pc.method.name = cfg.data, seed, name
    if not any(abs(pc.probe.fraction - f) < 1e-9 for f in cfg.fractions):
        pc.probe.fraction = min(cfg.fractions)
    if not cfg.probe:
        pc.probe.every = 0
    return pc


SUBSETS = ("prepared", "seed")


def finetune_config(cfg: ExperimentConfig, fraction: float, seed: int, method: str = "none") -> FinetuneConfig:
    """The fine-tuning of a cell: ``cfg.finetune`` + the method entry's ``finetune.*`` overrides."""
    overrides = _split(parse_method(method)[1])[1]
    fc = with_overrides(cfg.finetune, overrides, f"experiment: method entry {method!r}: finetune")
    fc.data, fc.seed, fc.fraction = cfg.data, seed, fraction
    if cfg.subsets == "seed":
        fc.subset_seed = seed
    elif "{seed}" in cfg.subsets or "{fraction}" in cfg.subsets:
        fc.subset = cfg.subsets.format(seed=seed, fraction=f"{fraction:g}")
    return fc


def _stages() -> dict[str, Any]:
    """The pipeline stages the grid orchestrates (imported lazily; tests replace this)."""
    from glcnet.finetune import evaluate, train
    from glcnet.finetune.probe_cli import probe_checkpoint
    from glcnet.ssl import METHOD_NAMES, pretrain

    return {"methods": METHOD_NAMES, "pretrain": pretrain.run, "finetune": train.run, "evaluate": evaluate.run,
            "val_metrics": train.selected_val_metrics, "probe": probe_checkpoint}


def _check(cfg: ExperimentConfig) -> None:
    """Fail early, in one line, on config problems that would fail every cell."""
    names = _stages()["methods"]
    if not cfg.methods or not cfg.fractions or not cfg.seeds:
        raise GlcnetError("experiment: methods, fractions and seeds must each list at least one value")
    if cfg.subsets not in SUBSETS and "{seed}" not in cfg.subsets and "{fraction}" not in cfg.subsets:
        raise GlcnetError(f"experiment: subsets: expected one of {', '.join(SUBSETS)} or a subset file path with "
                          f"{{seed}} in it, got {cfg.subsets!r}")
    for s in cfg.seeds if "{" in cfg.subsets else []:
        for f in cfg.fractions:
            path = Path(cfg.subsets.format(seed=s, fraction=f"{f:g}"))
            if not path.is_file():
                raise GlcnetError(f"experiment: subsets: {path} (seed {s}, fraction {f:g}) not found "
                                  "(glcnet select --out it)")
    for spec in cfg.methods:
        name, overrides = parse_method(spec)
        if name not in names:
            raise GlcnetError(f"experiment: unknown method {name!r} (valid: {', '.join(names)})")
        if name == "none" and _split(overrides)[0]:
            raise GlcnetError(f"experiment: method entry {spec!r}: 'none' has nothing to pretrain to override")
        pretrain_config(cfg, spec, 0)  # unknown keys / bad values: one line now, not in every cell
        finetune_config(cfg, cfg.fractions[0], 0, spec)
    if len(set(cfg.methods)) < len(cfg.methods):
        raise GlcnetError("experiment: a method entry is listed twice")
    if cfg.pretrain_seeds and cfg.pretrain_seed >= 0:
        raise GlcnetError("experiment: set pretrain_seeds or pretrain_seed, not both")
    if len(set(cfg.pretrain_seeds)) < len(cfg.pretrain_seeds):
        raise GlcnetError(f"experiment: pretrain_seeds lists a seed twice: {cfg.pretrain_seeds}")
    if to_dict(cfg.pretrain.model) != to_dict(cfg.finetune.model):
        raise GlcnetError("experiment: pretrain.model and finetune.model differ; set both to the same network")
    labelled = json.loads((Path(cfg.data) / "splits.json").read_text()).get("labelled", {})
    have = {float(k) for k in labelled}
    missing = [f for f in cfg.fractions if float(f) not in have]
    if missing:
        raise GlcnetError(f"{cfg.data}/splits.json: no labelled subset for fraction {missing[0]:g} "
                          f"(has: {', '.join(f'{f:g}' for f in sorted(have))}; re-run prepare with fractions=...)")


def _last_ckpt(run: Path) -> bool:
    return (run / "checkpoints" / "last.ckpt").is_file()


def _train(run_fn: Callable[..., Path], cfg: Any, run: Path) -> Path:
    """Run a training stage into ``run`` unless it completed before; resume a killed one.

    Completion is our own marker ``run/complete.json`` (the stages write their products,
    e.g. ``pretrained.pt``, every epoch). A leftover folder with neither the marker nor a
    last checkpoint (killed before the first checkpoint, or failed) is ours and is cleared.
    """
    if (run / "complete.json").is_file():
        return run / json.loads((run / "complete.json").read_text())["product"]
    if run.exists() and not _last_ckpt(run):
        shutil.rmtree(run)
    cfg.out = str(run)
    product = Path(run_fn(cfg, resume=_last_ckpt(run)))
    write_json(run / "complete.json", {"product": product.name})  # relative: OUT may move
    return run / product.name


def _probe_flat(cell: Path) -> dict[str, float]:
    """``{"decoder_miou": .., "aspp_kappa": ..}`` from ``cell/probe.json`` (empty when absent)."""
    if not (cell / "probe.json").is_file():
        return {}
    r = json.loads((cell / "probe.json").read_text())
    return {f"{layer}_{k}": float(v) for layer, m in r.items() if isinstance(m, dict)
            for k, v in m.items() if k in ("miou", "kappa", "oa")}


def _result(cell: Path) -> dict[str, Any] | None:
    """``cell/result.json`` when it is a complete result; None when absent, or unreadable (a damaged
    file is said once, and the cell counts as not done: it runs again)."""
    path = cell / "result.json"
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
        if all(isinstance(r["metrics"][k], (int, float)) for k in ("kappa", "miou", "oa", "mean_f1")):
            return dict(r)
        raise ValueError("metrics that are not numbers")
    except (OSError, ValueError, KeyError, TypeError) as e:
        if path not in _damaged:
            _damaged.add(path)
            _log.warning(f"warning: {path} is damaged ({type(e).__name__}: {e}); the cell counts as not done and "
                         "runs again")
        return None


_damaged: set[Path] = set()


def _read_cell(cell: Path, method: str, fraction: float, seed: int, rel: str, pseed: int | None = None) -> CellResult:
    """The stored state of a cell: done (result.json), failed (error.txt) or pending."""
    r = _result(cell)
    if r is not None:
        val = r["val"] if "val" in r else _stages()["val_metrics"](cell / "finetune")  # cells of older versions
        return CellResult(method, fraction, seed, rel, "done", {k: r["metrics"][k] for k in r["metrics"]}, val=val,
                          probe=_probe_flat(cell), pretrain_seed=pseed)
    if (cell / "error.txt").is_file():
        lines = (cell / "error.txt").read_text().strip().splitlines()
        return CellResult(method, fraction, seed, rel, "failed", error=lines[-1] if lines else "", pretrain_seed=pseed)
    return CellResult(method, fraction, seed, rel, "pending", pretrain_seed=pseed)


# Bumped when a default changes what a run computes, so that a rerun into an earlier experiment
# folder does not take its finished cells for the new settings (cell and pretraining hashes).
# 2: ASPP rates fitted to the map, AdamW, view presets, batch-norm-recalibrated probes.
DEFAULTS_VERSION = 2


class Cell(NamedTuple):
    """One cell of the grid: ``pretrain`` is the pretraining seed when the grid has several, else None."""

    method: str
    fraction: float
    seed: int
    pretrain: int | None = None


class Grid:
    """The cells of an experiment config, their folders, and how to run each one."""

    def __init__(self, cfg: ExperimentConfig, log: Callable[[str], None] = _log.info):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.data = data_id(cfg.data)
        self._pretrain_errors: dict[Path, str] = {}  # failed pretrainings of this process: not retried

    def pretrain_seed(self, seed: int, pretrain: int | None = None) -> int:
        """The pretraining a cell of ``seed`` starts from: ``pretrain`` (one of ``pretrain_seeds``), its own
        seed, or the shared ``pretrain_seed``."""
        if pretrain is not None:
            return pretrain
        if self.cfg.pretrain_seeds:
            return self.cfg.pretrain_seeds[0]
        return seed if self.cfg.pretrain_seed < 0 else self.cfg.pretrain_seed

    def pretrain_dir(self, method: str, seed: int, pretrain: int | None = None) -> Path:
        """The pretraining of ``method``'s cells of ``seed`` (shared by entries that differ in ``finetune.*`` only)."""
        seed = self.pretrain_seed(seed, pretrain)
        h = short_hash({"data": self.data, "v": DEFAULTS_VERSION,
                        "pretrain": _hashable(pretrain_config(self.cfg, method, seed))})
        return self.out / "pretrain" / f"{slug(method, pretrain_only=True)}-s{seed}-{h}"

    def cell_dir(self, method: str, fraction: float, seed: int, pretrain: int | None = None) -> Path:
        init = "none" if is_random(method) else self.pretrain_dir(method, seed, pretrain).name
        ft = _hashable(finetune_config(self.cfg, fraction, seed, method))
        ft.pop("init", None)  # replaced by the pretraining's folder name (its hash)
        if ft.get("subset"):  # a subset file: by content
            ft["subset"] = short_hash(Path(ft["subset"]).read_text()) if Path(ft["subset"]).is_file() else ft["subset"]
        h = short_hash({"data": self.data, "v": DEFAULTS_VERSION, "init": init, "finetune": ft})
        p = "" if pretrain is None else f"-p{pretrain}"
        return self.out / "cells" / f"{slug(method)}-f{fraction:g}-s{seed}{p}-{h}"

    def cells(self) -> list[Cell]:
        """The cells in run order: seed-major, so early seeds complete whole rows first; with several
        ``pretrain_seeds``, a pretrained method's cell once per pretraining."""
        several = self.cfg.pretrain_seeds if len(self.cfg.pretrain_seeds) > 1 else []
        return [Cell(m, f, s, p) for s in self.cfg.seeds for m in self.cfg.methods for f in self.cfg.fractions
                for p in (several if several and not is_random(m) else [None])]

    def results(self) -> list[CellResult]:
        out = []
        for c in self.cells():
            d = self.cell_dir(*c)
            out.append(_read_cell(d, c.method, c.fraction, c.seed, str(d.relative_to(self.out)), c.pretrain))
        return out

    def _pretrain(self, method: str, seed: int, pretrain: int | None = None) -> Path:
        run = self.pretrain_dir(method, seed, pretrain)
        if run in self._pretrain_errors:
            raise GlcnetError(f"{run}: pretraining failed earlier in this run ({self._pretrain_errors[run]})")
        seed = self.pretrain_seed(seed, pretrain)
        try:
            return _train(_stages()["pretrain"], pretrain_config(self.cfg, method, seed), run)
        except Exception as e:
            self._pretrain_errors[run] = f"{type(e).__name__}: {e}"
            raise

    def _probe(self, cell: Path, fraction: float, seed: int, init: str) -> None:
        """Probe the frozen features of the cell's initial network into ``cell/probe.json`` (once)."""
        if not self.cfg.probe or (cell / "probe.json").is_file():
            return
        pc = copy.deepcopy(self.cfg.pretrain.probe)
        # the cell's subset
        ft = finetune_config(self.cfg, fraction, seed)
        pc.fraction, pc.subset_seed, pc.subset = fraction, ft.subset_seed, ft.subset
        # a pretrained init: its weights; none: the cell's own random network (fine-tuning builds it from seed)
        result = _stages()["probe"](init, self.cfg.data, pc, self.cfg.finetune.model, seed)
        cell.mkdir(parents=True, exist_ok=True)
        write_json(cell / "probe.json", result)

    def run_cell(self, method: str, fraction: float, seed: int, pretrain: int | None = None) -> CellResult:
        """Pretrain (cached per method/seed), probe, fine-tune, evaluate on test; never raises Exception."""
        cell = self.cell_dir(method, fraction, seed, pretrain)
        rel = str(cell.relative_to(self.out))
        done = _read_cell(cell, method, fraction, seed, rel, pretrain)
        if done.status == "done":
            if self.cfg.probe and not (cell / "probe.json").is_file():  # a cell of a version without the probe
                self._probe(cell, fraction, seed, (_result(cell) or {}).get("init", "none"))
                return _read_cell(cell, method, fraction, seed, rel, pretrain)
            return done
        (cell / "error.txt").unlink(missing_ok=True)
        t0 = time.time()
        try:
            ft = finetune_config(self.cfg, fraction, seed, method)
            ft.init = "none" if is_random(method) else str(self._pretrain(method, seed, pretrain))
            self._probe(cell, fraction, seed, ft.init)
            model = _train(_stages()["finetune"], ft, cell / "finetune")
            shutil.rmtree(cell / "eval", ignore_errors=True)  # a killed evaluation starts over
            metrics = _stages()["evaluate"](model, self.cfg.data, split="test", cfg=ft.eval, out=cell / "eval")
        except Exception as e:  # a failed cell is reported; the grid goes on
            cell.mkdir(parents=True, exist_ok=True)
            write_text(cell / "error.txt", traceback.format_exc())
            self.log(f"FAILED {rel}: {type(e).__name__}: {e}")
            return _read_cell(cell, method, fraction, seed, rel, pretrain)
        keep = {k: float(metrics[k]) for k in ("kappa", "miou", "oa", "mean_f1")}
        write_json(cell / "result.json", {
            "method": method, "fraction": fraction, "seed": seed, "metrics": keep,
            "val": _stages()["val_metrics"](cell / "finetune"),
            "per_class": metrics.get("per_class"), "init": ft.init, "model": str(model),
            "seconds": round(time.time() - t0, 1)})
        shutil.rmtree(cell / "finetune" / "checkpoints", ignore_errors=True)  # resume state of a finished cell
        return _read_cell(cell, method, fraction, seed, rel, pretrain)

    def run(self, title: str = "", note: str = "") -> dict[str, Path]:
        """Run every unfinished cell, rewriting the tables after each one; return the output paths.

        Before each cell that has work to do: ``cell i/N: ... (elapsed, ETA)``, the ETA from
        the mean time of the cells run so far (finished cells skipped in this run cost nothing).
        """
        with outputs.run_folder(self.out, "experiment", resume=True, inputs=[self.cfg.data],
                                keep=lambda p: (p / "cells").exists() or (p / "pretrain").exists()):
            return self._run(title, note)

    def _run(self, title: str, note: str) -> dict[str, Path]:
        run_dir = RunDir.create(self.out, self.cfg, self.cfg.seeds[0],
                                extra={"task": "experiment", "data_id": self.data})
        todo = self.cells()
        eta = Eta(len(todo))
        for i, cell in enumerate(todo, 1):
            t0 = time.time()
            m, f, s, p = cell
            name = f"{m} {frac_label(f)} seed {s}" + ("" if p is None else f" pretraining {p}")
            skip = _result(self.cell_dir(*cell)) is not None
            if not skip:
                self.log(f"cell {i}/{len(todo)}: {name} ({eta.text()})")
            r = self.run_cell(*cell)
            eta.step(ran=not skip)
            kappa = f" kappa={100 * r.metrics['kappa']:.2f}" if r.status == "done" else ""
            self.log(f"[{i}/{len(todo)}] {name}: {r.status}{kappa} ({time.time() - t0:.0f} s)")
            run_dir.log({"cell": r.path, "status": r.status, **r.metrics})
            write_tables(self.results(), self.out, title, note, with_plot=False)  # progress so far
        return self.tables(title, note)

    def tables(self, title: str = "", note: str = "") -> dict[str, Path]:
        """results.csv/.md, the Kappa plot, (with probes) probe_curves.png and report.html."""
        from glcnet.experiment.report import write_page

        cells = self.results()
        paths = write_tables(cells, self.out, title, note)
        runs: dict[str, list[Path]] = {}
        names: dict[str, str] = {}
        for m in self.cfg.methods:
            if is_random(m):
                continue
            key = slug(m, pretrain_only=True)
            name, pre = parse_method(m)[0], _split(parse_method(m)[1])[0]
            names[key] = label(f"{name}[{','.join(pre)}]" if pre else name)
            pretrains: list[int | None] = [*self.cfg.pretrain_seeds] or [None]
            runs[key] = sorted({d for s in self.cfg.seeds for p in pretrains
                                if (d := self.pretrain_dir(m, s, p)).is_dir()})
        none = [c.probe for c in cells if is_random(c.method) and c.probe and c.fraction == min(self.cfg.fractions)]
        baseline = {layer: sum(p[f"{layer}_miou"] for p in none) / len(none)
                    for layer in ("decoder", "aspp") if none and all(f"{layer}_miou" in p for p in none)}
        if plot_probe_curves(runs, self.out / "probe_curves.png", names, baseline):
            paths["probe_curves"] = self.out / "probe_curves.png"
        paths["html"] = write_page(self.out, cells, self.cfg.data, title, note, plot=paths["png"])
        return paths


def _check_table(grid: Grid) -> None:
    """``--only-table`` writes nothing unless the settings name finished cells of ``grid.out``: a table of
    nothing (a mistyped --out, other settings) is refused, as is one with fewer finished cells than the
    tables already there (written for other settings), which it would replace."""
    out = grid.out
    own = f"--config {out / 'config.yaml'}" if (out / "config.yaml").is_file() else "the experiment's own settings"
    if not out.is_dir():
        raise GlcnetError(f"{out}: no experiment there (check --out); nothing written")
    done = sum((grid.cell_dir(*c) / "result.json").is_file() for c in grid.cells())  # damaged ones too
    if done == 0:
        raise GlcnetError(f"{out}: none of the {len(grid.cells())} cells of these settings has finished (other "
                          f"settings than the experiment's? use {own}); nothing written")
    before = 0
    with contextlib.suppress(OSError, ValueError, KeyError, csv.Error):
        with open(out / "results.csv", newline="") as f:
            before = sum(int(row["n_done"]) for row in csv.DictReader(f))
    if done < before:
        raise GlcnetError(f"{out}: its tables hold {before} finished cells, these settings only {done}; rebuild "
                          f"them with {own} (nothing written)")


def run(cfg: ExperimentConfig, only_table: bool = False, title: str = "", note: str = "",
        log: Callable[[str], None] = _log.info) -> dict[str, Path]:
    """Run (or with ``only_table`` just re-tabulate) the grid of ``cfg``; return the table paths."""
    grid = Grid(cfg, log)
    _check(cfg)
    if only_table:
        _check_table(grid)
        with outputs.run_folder(grid.out, "experiment", resume=True, inputs=[cfg.data]):
            return grid.tables(title, note)
    return grid.run(title, note)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet experiment``."""
    add_config_args(parser, "experiment_cpu, experiment_potsdam_paper", resume=False,
                    out_help="experiment folder (overrides out:); a rerun continues it",
                    example="seeds=[0,1] pretrain.optim.epochs=5")
    parser.add_argument("--only-table", action="store_true",
                        help="rebuild the tables, plot and report.html from finished cells; run nothing")


def failed_cells(cfg: ExperimentConfig) -> list[CellResult]:
    """The cells of ``cfg`` whose last run failed (they have an ``error.txt``)."""
    return [r for r in Grid(cfg, log=lambda m: None).results() if r.status == "failed"]


def exit_status(cfg: ExperimentConfig) -> int:
    """0 when no cell failed, else 1 with one line saying which (their error.txt has the traceback)."""
    failed = failed_cells(cfg)
    if failed:
        _log.error(f"error: {len(failed)} cell(s) failed, e.g. {Path(cfg.out) / failed[0].path}/error.txt: "
                   f"{failed[0].error}")
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet experiment``; returns the exit status."""
    cfg = config_from_args(ExperimentConfig, args)
    paths = run(cfg, only_table=args.only_table)
    print(paths["md"].read_text())
    print(f"report: {paths['html']}  (also results.md, results.csv, {paths['png'].name})")
    return exit_status(cfg)
