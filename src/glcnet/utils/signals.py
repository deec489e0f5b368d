"""SIGTERM and SIGINT end a command promptly, truthfully and without losing work.

:func:`handled` (around every CLI command) turns both signals into :class:`Interrupted`, a
``BaseException``: ``except Exception`` blocks (a failing experiment cell) do not swallow
it, atomic outputs remove their temporaries on the way out, and the CLI prints one line
and exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

Outside training the exception is raised at once. Inside :func:`deferred` (the Lightning
fit loop) the first signal is only recorded (:func:`requested`): training stops at the end
of the current step, where ``glcnet.engine`` saves a resumable checkpoint. A second signal,
or ``GRACE_S`` seconds without reaching the end of a step, raises at once; the run then
resumes from its previous checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

GRACE_S = float(os.environ.get("GLCNET_STOP_GRACE_S", 10))


class Interrupted(BaseException):
    """A command stopped by a signal; ``detail`` says where, ``hint`` how to continue."""

    def __init__(self, signum: int, detail: str = "", hint: str = ""):
        super().__init__(signum)
        self.signum, self.detail, self.hint = int(signum), detail, hint
        self.resumable = False  # a training run left a checkpoint to resume from

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        name = signal.Signals(self.signum).name
        return "; ".join(x for x in (f"interrupted by {name}{self.detail}", self.hint) if x)


_state: dict[str, Any] = {"pid": None, "deferring": False, "requested": None}


def requested() -> int | None:
    """The signal received while deferring, or None."""
    return _state["requested"]


def _handler(signum: int, frame: Any) -> None:
    if os.getpid() != _state["pid"]:
        return  # a forked DataLoader worker: the main process ends it
    if _state["deferring"] and _state["requested"] is None:
        _state["requested"] = signum
        signal.signal(signal.SIGALRM, _deadline)
        signal.setitimer(signal.ITIMER_REAL, GRACE_S)
        return
    raise Interrupted(_state["requested"] or signum)


def _deadline(signum: int, frame: Any) -> None:
    if os.getpid() == _state["pid"] and _state["requested"] is not None:
        raise Interrupted(_state["requested"], " (no safe point within the grace period; no new checkpoint)")


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Handle SIGTERM and SIGINT in this (main) process as the module doc says, for the block."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    pid, _state["pid"] = _state["pid"], os.getpid()
    for s in before:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        _state["pid"] = pid


def take_over() -> None:
    """Put our handlers back where a library replaced them (Lightning's SIGTERM handler, which
    would end a fit quietly with exit status 0)."""
    if _state["pid"] == os.getpid():
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a first signal is recorded, not raised (see the module doc)."""
    before = _state["deferring"]
    _state["deferring"] = _state["pid"] == os.getpid()
    try:
        yield
    finally:
        _state["deferring"] = before
        signum = _state["requested"]
        if not before:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _state["requested"] = None
    if signum is not None and not before:  # the block ended normally after a signal
        raise Interrupted(signum)
