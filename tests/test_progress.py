"""The progress helpers: durations, the ETA of partly finished work, one log handler, quiet bars off a terminal."""

from __future__ import annotations

import io
import logging

from glcnet.utils import progress
from glcnet.utils.progress import Eta, bar, duration, interactive, log, setup_logging


def test_duration():
    assert [duration(s) for s in (0, 9.4, 59.6, 75, 3599, 3725, 90000)] == \
        ["0s", "9s", "1m00s", "1m15s", "59m59s", "1h02m", "25h00m"]


def test_eta_counts_only_the_work_run_now(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    eta = Eta(total=5)
    assert eta.eta() is None and eta.text() == "elapsed 0s, ETA ?"
    eta.step(ran=False)  # finished in an earlier run: free
    now[0] += 30
    eta.step(ran=True)  # 30 s
    now[0] += 10
    eta.step(ran=True)  # 10 s: mean 20 s over the 2 units run, 2 units left
    assert eta.eta() == 40 and eta.text() == "elapsed 40s, ETA 40s"


def test_one_handler_to_the_current_stderr(capsys):
    setup_logging()
    setup_logging()
    assert sum(type(h).__name__ == "_TqdmHandler" for h in log.handlers) == 1 and not log.propagate
    logging.getLogger("glcnet.data").info("a child logger's line")
    log.debug("not shown at INFO")
    captured = capsys.readouterr()
    assert captured.err == "a child logger's line\n" and captured.out == ""


def test_no_bar_off_a_terminal(capsys):
    assert not interactive(io.StringIO())
    with bar(10, "work", unit="window") as b:  # pytest's stderr is not a terminal
        b.update(10)
    assert b.disable and capsys.readouterr().err == ""
