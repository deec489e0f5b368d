"""``glcnet benchmark NAME``: speed/memory figures and ratios (never run by the tests).

Each benchmark is a module ``glcnet.benchmarks.<name>`` with ``configure(parser)`` and
``main(args) -> int``; it prints its figures and writes them as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import stat
import sys
from pathlib import Path

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


def is_stream(path: str | os.PathLike) -> bool:
    """True for a ``--json`` that names a stream rather than a file to replace: a pipe, a terminal or
    another device, or a descriptor alias (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``)."""
    p = Path(path)
    if p.parent in (Path("/dev/fd"), Path("/proc/self/fd")) or str(p) in ("/dev/stdout", "/dev/stderr"):
        return True
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _is_stdout(path: str | os.PathLike) -> bool:
    """True when ``path`` is where this process's stdout goes (``--json /dev/stdout``)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        return False


def write_result(args: argparse.Namespace, result: dict) -> None:
    """``--json PATH``: the figures, tagged with the benchmark that wrote them (glcnet.outputs.check_file).
    A stream (``/dev/stdout``, a pipe) is written straight: it has no previous version to keep."""
    kind = f"benchmark {args.benchmark}"
    if is_stream(args.json):
        with open(args.json, "w") as f:
            f.write(json.dumps({"glcnet": kind, **result}, indent=2) + "\n")
        return
    from glcnet.outputs import write_file

    write_file(args.json, kind, result)


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark``; returns the exit status. With ``--json /dev/stdout`` the printed
    figures go to stderr, so that stdout carries the JSON alone (``... --json /dev/stdout | jq``)."""
    run = importlib.import_module(f"glcnet.benchmarks.{args.benchmark}").main
    if not getattr(args, "json", None):
        return run(args)
    if is_stream(args.json):  # never read it (check_file would wait forever on a pipe) nor rename onto it
        with contextlib.redirect_stdout(sys.stderr) if _is_stdout(args.json) else contextlib.nullcontext():
            return run(args)
    from glcnet.outputs import check_file

    check_file(args.json, f"benchmark {args.benchmark}")  # before minutes of measuring: may the file be written?
    return run(args)
