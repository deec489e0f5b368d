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
from glcnet.utils.progress import log, setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("glcnet.data.prepare_cli", "tile scenes, decode labels, make splits: raw data -> prepared folder"),
    "info": ("glcnet.data.info_cli", "summarise a prepared data set"),
    "pretrain": ("glcnet.ssl.pretrain", "self-supervised pretraining (glcnet, glcnet_m, vicregl, simclr, mocov2, ...)"),
    "finetune": ("glcnet.finetune.train", "fine-tune DeepLabv3+ on a labelled fraction, select on val scenes"),
    "probe": ("glcnet.finetune.probe_cli", "dense linear probe of frozen features (any checkpoint or none) on the val scenes"),
    "evaluate": ("glcnet.finetune.evaluate", "whole-scene sliding-window evaluation: OA, Kappa, mIoU, F1"),
    "predict": ("glcnet.finetune.predict", "predict georeferenced class maps for rasters of any size"),
    "experiment": ("glcnet.experiment.grid", "methods x label fractions x seeds comparison table"),
    "demo": ("glcnet.experiment.demo", "small comparison on built-in synthetic scenes (no download)"),
    "export": ("glcnet.models.export", "write a run's weights for smp, timm or torchgeo code (+ a JSON of bands, statistics)"),
    "benchmark": ("glcnet.benchmarks", "speed/memory benchmarks: views, pretrain, predict"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glcnet", description=__doc__.splitlines()[0])
    from glcnet import __version__

    parser.add_argument("--version", action="version", version=f"glcnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only == name:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging()
    _quiet_libraries()
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.main(args) or 0)
    except GlcnetError as e:
        log.error("error: %s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def _quiet_libraries() -> None:
    """Keep library warnings that say nothing to a user out of the terminal (see also engine.py)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


if __name__ == "__main__":
    sys.exit(main())
