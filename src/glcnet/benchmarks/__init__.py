"""``glcnet benchmark NAME``: speed/memory figures and ratios (never run by the tests).

Each benchmark is a module ``glcnet.benchmarks.<name>`` with ``configure(parser)`` and
``main(args) -> int``; it prints its figures and writes them as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "views": "two-view generation: reference per-sample pipeline vs batched (ms/sample, ratio)",
    "pretrain": "pretraining step per method vs the bare network fwd+bwd (ratio), glcnet vs simclr, loader",
    "predict": "sliding-window inference px/s and peak memory on 2000^2 and 6000^2 scenes",
    "gpu": "the prepared GPU check (<= 8 min, JSON): views, resnet50 pretraining grid, mini experiment",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark``."""
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, help_ in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(f"glcnet.benchmarks.{name}").configure(p)


def write_result(args: argparse.Namespace, result: dict) -> None:
    """``--json PATH``: the figures, tagged with the benchmark that wrote them (glcnet.outputs.check_file)."""
    from glcnet.outputs import write_file

    write_file(args.json, f"benchmark {args.benchmark}", result)


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark``; returns the exit status."""
    if getattr(args, "json", None):  # before minutes of measuring: may the file be written?
        from glcnet.outputs import check_file

        check_file(args.json, f"benchmark {args.benchmark}")
    return importlib.import_module(f"glcnet.benchmarks.{args.benchmark}").main(args)
