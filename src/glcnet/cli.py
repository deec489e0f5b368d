"""``glcnet`` command line: one subcommand per pipeline step.

Each subcommand lives in its own module, which defines ``configure(parser)`` and
``main(args) -> int``; modules are imported only when their command runs, so
``glcnet --help`` is instant. A :class:`~glcnet.errors.GlcnetError` is printed as one
line (``error: ...``) with exit status 2, never as a traceback. Messages go through the
``glcnet`` logger to stderr, bars only to terminals (:mod:`glcnet.utils.progress`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glcnet.errors import GlcnetError
from glcnet.utils import signals
from glcnet.utils.progress import log, setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("glcnet.data.prepare_cli", "tile scenes, decode labels, make splits: raw data -> prepared folder"),
    "info": ("glcnet.data.info_cli", "summarise a prepared data set"),
    "pretrain": ("glcnet.ssl.pretrain", "self-supervised pretraining (glcnet, glcnet_m, vicregl, simclr, mocov2, ...)"),
    "finetune": ("glcnet.finetune.train", "fine-tune DeepLabv3+ on a labelled fraction, select on val scenes"),
    "select": ("glcnet.select", "choose which train tiles to label with a frozen network's features (-> subset file)"),
    "probe": ("glcnet.finetune.probe_cli",
              "dense linear probe of frozen features (any checkpoint or none) on the val scenes"),
    "evaluate": ("glcnet.finetune.evaluate", "whole-scene sliding-window evaluation: OA, Kappa, mIoU, F1"),
    "predict": ("glcnet.finetune.predict", "predict georeferenced class maps for rasters of any size"),
    "experiment": ("glcnet.experiment.grid", "methods x label fractions x seeds comparison table"),
    "demo": ("glcnet.experiment.demo", "small comparison on built-in synthetic scenes (no download)"),
    "export": ("glcnet.models.export",
               "write a run's weights for smp, timm or torchgeo code (+ a JSON of bands, statistics)"),
    "benchmark": ("glcnet.benchmarks", "speed/memory benchmarks: views, pretrain, predict, gpu"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``glcnet`` parser; only the subcommand ``only`` gets its arguments (fast ``--help``)."""
    parser = argparse.ArgumentParser(prog="glcnet", description=__doc__.splitlines()[0])
    from glcnet import __version__

    parser.add_argument("--version", action="version", version=f"glcnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only == name:
            importlib.import_module(module).configure(p)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order (``--data D optim.lr=1e-3 --out O``)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    if command not in COMMANDS:
        return parser.parse_args(argv)
    i = argv.index(command)
    parser.parse_args(argv[:i])  # --version / --help before the command
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[command]
    nested = any(a.nargs == argparse.PARSER for a in sub._actions)  # benchmark NAME ...: no intermixing
    args = sub.parse_args(argv[i + 1:]) if nested else sub.parse_intermixed_args(argv[i + 1:])
    args.command = command
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 done, 1 failed (a disk or system fault, a failed experiment
    cell), 2 refused (bad input or setting, nothing written), 128 + N stopped by signal N."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    setup_logging()
    _quiet_libraries()
    with signals.handled():
        try:
            module = importlib.import_module(COMMANDS[args.command][0])
            return int(module.main(args) or 0)
        except GlcnetError as e:
            log.error("error: %s", e)
            return 2
        except signals.Interrupted as e:
            if not e.hint:
                e.hint = _continue_hint(args.command, argv, e.resumable)
            log.error("%s", e.message())
            return e.exit_code
        except OSError as e:  # full disk, I/O error, permission: the environment, not the input
            from glcnet.utils.atomic import reason

            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            log.error("error: %s%s", where, reason(e))
            return 1


def _continue_hint(command: str, argv: list[str], saved: bool) -> str:
    """How to carry on after an interruption, as a command line."""
    import shlex

    again = shlex.join(["glcnet", *argv])
    if command in ("pretrain", "finetune"):
        if "--resume" in argv:
            return f"resume with: {again}"
        if "--overwrite" in argv:  # the replacement was built beside the earlier run, which is untouched
            resume = shlex.join(["glcnet", *(a for a in argv if a != "--overwrite"), "--resume"])
            return ("the earlier run is untouched; " + (f"continue the replacement with: {resume} (it takes the "
                    "earlier run's place when it finishes)" if saved else "the replacement had no checkpoint yet"))
        return f"resume with: {again} --resume" if saved else "no checkpoint yet, so nothing was kept"
    if command in ("experiment", "demo"):
        return f"finished cells are kept; continue with: {again}"
    if command == "predict":
        return "maps finished before the signal are complete; no other file was written"
    return "nothing was written"


def _quiet_libraries() -> None:
    """Keep library warnings that say nothing to a user out of the terminal (see also glcnet/engine/trainer.py)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


if __name__ == "__main__":
    sys.exit(main())
