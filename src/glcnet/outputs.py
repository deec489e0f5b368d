"""Who may write where: every command writes only into an output it owns.

An output folder made by a glcnet command holds a marker file, ``.glcnet.json``, naming
the command that made it (its *kind*: prepare, pretrain, finetune, evaluate, predict,
experiment, demo, synthetic). One rule for every command (:func:`check`):

* a path that does not exist, or an empty folder, is free;
* a folder of the same kind is replaced only with ``--overwrite``, continued with
  ``--resume`` (training runs, experiments), or added to (``predict``);
* anything else is refused: a file, a folder made by another command, a non-empty folder
  that no glcnet command made, and any path that is, or contains, one of the command's inputs.

Refusals are one line (:class:`~glcnet.errors.GlcnetError`) raised before anything is
written. :func:`new_folder` builds a folder atomically (temp folder beside it, renamed at the
end); :func:`run_folder` claims a long-lived run folder, locks it (``flock``: a second
process writing the same folder is refused, and a killed process never leaves a stale
lock) and removes it again if the command fails before it holds anything worth keeping.
In a distributed run only rank 0 claims the folder (the other ranks write nothing in it).
Single-file outputs (``benchmark --json``) use :func:`check_file`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from glcnet.errors import GlcnetError
from glcnet.utils.atomic import atomic_dir, makedirs, remove_empty, write_json

MARKER = ".glcnet.json"
_locks: dict[Path, int] = {}  # folder -> fd holding its flock, for the life of the process


def rank() -> int:
    """This process's global rank in a distributed run (torchrun, SLURM, Lightning's launcher), else 0;
    read from the environment like Lightning does, before any process group exists."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def marker(kind: str) -> dict:
    """The content of a folder's ``.glcnet.json``: which command made it, when, from which process."""
    return {"kind": kind, "command": ["glcnet", *sys.argv[1:]], "pid": os.getpid(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of glcnet output in folder ``path`` (its marker, or the files of versions before
    markers), or None."""
    p = Path(path)
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        return str(json.loads((p / MARKER).read_text())["kind"])
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        return str(json.loads((p / "run.json").read_text())["task"])
    if (p / "dataset.json").is_file() and (p / "tiles.csv").is_file():
        return "prepare"
    if (p / "metrics.json").is_file() and (p / "metrics.md").is_file():
        return "evaluate"
    return None


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_inputs(path: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    out = path.resolve()
    for i in inputs:
        if i is None or str(i) in ("", "none"):
            continue
        inp = Path(i).resolve()
        if _contains(out, inp):
            what = "is" if inp == out else "contains"
            raise GlcnetError(f"{path}: {what} the input {i}; an output never replaces an input "
                              "(choose another --out)")


def _check_writable(path: Path) -> None:
    """The nearest existing ancestor must be a folder we can create entries in (probed for real:
    permissions, read-only file systems and root all answer the same way)."""
    anc = next(p for p in [path, *path.parents] if p.exists() or p == p.parent)
    if not anc.is_dir():
        raise GlcnetError(f"{path}: cannot be created, {anc} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".glcnet-probe-", dir=anc))
    except OSError as e:
        raise GlcnetError(f"{path}: cannot be written, {anc} refuses new files ({e.strerror})") from None


def check(path: str | os.PathLike, kind: str, *, overwrite: bool = False, resume: bool = False,
          adds: bool = False, inputs: Iterable[str | os.PathLike | None] = (), hint: str = "") -> bool:
    """Raise unless ``kind`` may write ``path`` (rules in the module doc); nothing is written.

    Returns True when ``path`` already holds an output of this kind (to be replaced,
    resumed or added to), False when it is free. ``hint`` replaces the default advice
    (``use --overwrite``) when the same kind is there and none of overwrite/resume/adds is given.
    """
    p = Path(path)
    _check_inputs(p, inputs)
    if not p.exists():
        _check_writable(p)
        return False
    if not p.is_dir():
        raise GlcnetError(f"{p}: exists and is a file, not an output folder (choose another --out)")
    if not any(p.iterdir()):
        _check_writable(p / "x")
        return False
    other = kind_of(p)
    if other is None:
        raise GlcnetError(f"{p}: exists, is not empty and was not made by glcnet {kind}; "
                          "it is left as it is (choose another --out)")
    if other != kind:
        raise GlcnetError(f"{p}: holds the output of glcnet {other}; glcnet {kind} will not write there "
                          "(choose another --out)")
    if not (overwrite or resume or adds):
        hint = hint or f"already holds the output of an earlier glcnet {kind} (--overwrite replaces it)"
        raise GlcnetError(f"{p}: {hint}")
    _check_writable(p / "x")
    return True


@contextlib.contextmanager
def new_folder(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Check ``path`` for ``kind``, then yield a temporary folder beside it that becomes ``path``
    (with its marker) only when the block completes (:func:`glcnet.utils.atomic.atomic_dir`)."""
    exists = check(path, kind, overwrite=overwrite, inputs=inputs)
    with atomic_dir(path, overwrite=exists or Path(path).is_dir()) as tmp:
        write_json(tmp / MARKER, marker(kind))
        yield tmp


def lock(folder: Path) -> None:
    """Hold an exclusive ``flock`` on ``folder`` until the process ends; refuse if another holds it."""
    folder = folder.resolve()
    if folder in _locks:
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = ""
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = f" (pid {json.loads((folder / MARKER).read_text())['pid']})"
        raise GlcnetError(f"{folder}: another glcnet process{pid} is writing this folder; "
                          "wait for it to end or choose another --out") from None
    _locks[folder] = fd


def unlock(folder: Path) -> None:
    """Release this process's lock on ``folder`` (no-op when it holds none)."""
    fd = _locks.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def run_folder(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = (), hint: str = "",
               keep: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Claim ``path`` as a run folder of ``kind`` for the block: checked, created, marked, locked.

    ``overwrite`` replaces a run of the same kind (the old one is deleted when the new one
    starts); ``resume`` continues it. If the block fails (or is interrupted) in a folder that
    this call created, the folder is removed unless ``keep(path)`` (e.g. it holds a checkpoint).
    """
    p = Path(path)
    if rank() != 0:  # other DDP ranks: rank 0 checks, claims and locks the folder; they write nothing in it
        yield p
        return
    inputs = list(inputs)
    if resume and overwrite:
        raise GlcnetError(f"{p}: --resume continues a run and --overwrite replaces it; give one of them")
    exists = check(p, kind, overwrite=overwrite, resume=resume, inputs=inputs, hint=hint)
    fresh = not exists or (overwrite and not resume)
    created = makedirs(p)
    try:
        lock(p)
    except BaseException:
        remove_empty(created)
        raise
    try:
        check(p, kind, overwrite=overwrite, resume=resume, inputs=inputs, hint=hint)  # again, under the lock
        if exists and fresh:  # --overwrite: clear the old run (we hold its lock)
            for child in p.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if not (p / MARKER).is_file():
            write_json(p / MARKER, marker(kind))
        yield p
    except BaseException:
        if fresh and p.is_dir() and not keep(p):
            unlock(p)
            shutil.rmtree(p, ignore_errors=True)
            remove_empty(created[:-1])
        raise
    finally:
        unlock(p)


def check_file(path: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
               overwrite: bool | None = None) -> None:
    """A single-file JSON output (``benchmark --json``, ``probe --out``, ``export``'s sidecar): refuse a
    folder, an input, or an existing file not written by the same ``kind`` (its ``"glcnet"`` key, see
    :func:`write_file`). ``overwrite=False``: an existing file of the same kind is refused too."""
    p = Path(path)
    _check_inputs(p, inputs)
    if p.is_dir():
        raise GlcnetError(f"{p}: is a folder; give a file name for the JSON output")
    if p.exists():
        try:
            mine = json.loads(p.read_text()).get("glcnet") == kind
        except (OSError, ValueError, AttributeError):
            mine = False
        if not mine:
            raise GlcnetError(f"{p}: exists and was not written by glcnet {kind}; it is left as it is "
                              "(choose another file name)")
        if overwrite is False:
            raise GlcnetError(f"{p}: already exists (--overwrite replaces it)")
        return
    _check_writable(p)


def write_file(path: str | os.PathLike, kind: str, obj: dict) -> None:
    """Write the JSON output ``obj`` of ``kind`` to ``path`` (atomically), tagged ``"glcnet": kind``."""
    check_file(path, kind)
    write_json(path, {"glcnet": kind, **obj})
