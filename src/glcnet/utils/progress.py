"""What a user sees while glcnet works: one ``glcnet`` logger and tqdm progress bars.

- :func:`setup_logging` (called once by ``glcnet.cli.main``) sends the ``glcnet`` logger
  to stderr, one message per line, through ``tqdm.write`` so a message never breaks a bar.
- Bars (:func:`bar`; Lightning's own bar for training, see ``glcnet.engine``) show rate
  and ETA, and only when their stream is a terminal. In CI and log files there are no
  bars; every finished stage still logs one line, and long trainings log an epoch line
  at most every :data:`HEARTBEAT_S` seconds.
- stdout carries only each command's result (output paths, metric summaries, the
  experiment table), so ``glcnet ... > result.txt`` keeps the result and shows the progress.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

log = logging.getLogger("glcnet")
HEARTBEAT_S = 60.0  # without a bar: at most one progress line per minute per training


class _TqdmHandler(logging.Handler):
    """Writes records to the *current* ``sys.stderr`` (pytest swaps it) above any open bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except (OSError, ValueError):  # pragma: no cover - a closed stream: logging must never raise
            self.handleError(record)


def _rank() -> int:
    """This process's rank under torchrun / SLURM / Lightning's DDP launcher (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def setup_logging(level: int = logging.INFO) -> None:
    """Route the ``glcnet`` logger to stderr (idempotent: one handler however often called).
    Under DDP only rank 0 tells the progress; the other ranks log warnings and errors."""
    for h in [h for h in log.handlers if isinstance(h, _TqdmHandler)]:
        log.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level if _rank() == 0 else max(level, logging.WARNING))
    log.propagate = False


def interactive(stream: IO[Any] | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal, i.e. a bar can be redrawn in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar on stderr with rate and ETA (``kw`` go to tqdm); a silent stand-in when
    stderr is not a terminal or ``enabled`` is false."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and interactive()), leave=False,
                dynamic_ncols=True, file=sys.stderr, **kw)


def duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``; ``9`` -> ``"9s"``."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Eta:
    """Elapsed time and ETA of ``total`` work units of which some may be skipped (already done).

    ``eta = (time per unit actually run) * (units left)``: units finished in an earlier
    run cost nothing now and are left out of the rate.
    """

    def __init__(self, total: int):
        self.total, self.done, self.ran = total, 0, 0
        self.t0 = time.monotonic()

    def step(self, ran: bool = True) -> None:
        self.done += 1
        self.ran += int(ran)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self) -> float | None:
        if self.ran == 0:
            return None
        return self.elapsed / self.ran * (self.total - self.done)

    def text(self) -> str:
        eta = self.eta()
        return f"elapsed {duration(self.elapsed)}, ETA {'?' if eta is None else duration(eta)}"
