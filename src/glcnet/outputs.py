"""Who may write where: every command writes only into an output it owns.

An output folder made by a glcnet command holds a marker file, ``.glcnet.json``, naming
the command that made it (its *kind*: prepare, pretrain, finetune, evaluate, predict,
experiment, demo, synthetic). One rule for every command (:func:`check`):

* a path that does not exist, or an empty folder, is free;
* a folder of the same kind is replaced only with ``--overwrite``, continued with
  ``--resume`` (training runs, experiments), or added to (``predict``);
* anything else is refused: a file, a folder made by another command, a non-empty folder
  that no glcnet command made, and any path that is, or contains, one of the command's inputs.

``--overwrite`` deletes only what glcnet provably wrote: the folder must hold the marker
(file names alone, as in folders of versions before markers, prove nothing), and every entry
in it must be one of the files its kind writes (:data:`OWNED`), a folder with a glcnet marker of
its own, or one of our temporary names; anything else (a user's notes) refuses the overwrite.

Refusals are one line (:class:`~glcnet.errors.GlcnetError`) raised before anything is
written. :func:`new_folder` builds a folder atomically (temp folder beside it, renamed at the
end); :func:`run_folder` claims a long-lived run folder, locks it (``flock``: a second
process writing the same folder is refused, and a killed process never leaves a stale
lock) and removes it again if the command fails before it holds anything worth keeping.
A run started with ``--overwrite`` is built beside the earlier one, in ``.NAME.replacement``,
and takes its place only when it completes (one atomic exchange of the two folders where
the OS has one); until then the earlier run is untouched, and an interrupted replacement
that holds a checkpoint is continued by ``--resume``.
In a distributed run only rank 0 claims the folder (the other ranks write nothing in it).
Single-file outputs (``benchmark --json``) use :func:`check_file`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import fnmatch
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from glcnet.errors import GlcnetError
from glcnet.utils.atomic import atomic_dir, exchange, makedirs, remove_empty, write_json

MARKER = ".glcnet.json"
LOCKFILE = ".glcnet.lock"  # the process that holds the folder's lock now (informative: the lock is the flock)
_locks: dict[Path, int] = {}  # folder -> fd holding its flock, for the life of the process
_RUN = ("config.yaml", "run.json", "metrics.jsonl", "logs", "checkpoints", "tensorboard")
# what each kind of output writes at its top level (glob patterns); --overwrite deletes nothing else
OWNED: dict[str, tuple[str, ...]] = {
    "pretrain": (*_RUN, "pretrained.pt"),
    "finetune": (*_RUN, "init.json", "model.pt", "model_last.pt"),
    "evaluate": ("metrics.json", "metrics.md", "*.png", "pred", "report.html"),
    "prepare": ("dataset.json", "splits.json", "tiles.csv", "images", "masks", "eval_masks"),
    "synthetic": ("images", "masks", "unlabeled", "README.txt"),
}
_OURS = (MARKER, LOCKFILE, ".*.tmp-*", "*.sha256")  # the marker, atomic writes' temporary names, checksums


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


def foreign_entries(path: Path, kind: str) -> list[str]:
    """Entries of the output folder ``path`` that glcnet ``kind`` did not write (module doc)."""
    owned = (*OWNED.get(kind, ()), *_OURS)
    return sorted(e.name for e in path.iterdir()
                  if not any(fnmatch.fnmatchcase(e.name, pat) for pat in owned)
                  and not (e.is_dir() and (e / MARKER).is_file()))


def _check_replaceable(p: Path, kind: str) -> None:
    """``--overwrite`` of ``p``: refuse unless glcnet provably wrote all of it (module doc)."""
    if not (p / MARKER).is_file():
        raise GlcnetError(f"{p}: looks like the output of glcnet {kind} but has no {MARKER} marker (made by an "
                          "older version, or not by glcnet), so --overwrite will not delete it; remove it yourself "
                          "or choose another --out")
    alien = foreign_entries(p, kind)
    if alien:
        raise GlcnetError(f"{p}: holds {', '.join(alien[:3])}{' ...' if len(alien) > 3 else ''}, which glcnet "
                          f"{kind} did not write; --overwrite deletes only its own files (move them out, or choose "
                          "another --out)")


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
    if locked_by_other(p):  # a running command: say so, not "finished" or "stopped"
        raise _busy(p)
    if not any(e.name != LOCKFILE for e in p.iterdir()):  # (a lock file alone: killed while claiming it)
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
    if overwrite and not resume and not adds:
        _check_replaceable(p, kind)
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


def _busy(folder: Path) -> GlcnetError:
    """The refusal for a folder another process holds, naming that process: the latest ``.glcnet.lock``
    in the folder or its replacement, written by the holder into the folder it writes when it took
    the lock (the marker's pid is the process that *made* the folder)."""
    who = ""
    infos = []
    for f in (folder / LOCKFILE, replacement(folder) / LOCKFILE):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            infos.append(json.loads(f.read_text()))
    with contextlib.suppress(ValueError, KeyError, TypeError):
        info = max(infos, key=lambda i: str(i["since"]))
        who = f" (pid {info['pid']}, since {info['since']}: {' '.join(info['command'])})"
    return GlcnetError(f"{folder}: another glcnet process{who} is writing this folder; "
                       "wait for it to end or choose another --out")


def locked_by_other(folder: Path) -> bool:
    """Whether another process holds ``folder``'s lock (a shared lock is probed and released at once)."""
    if folder.resolve() in _locks or not folder.is_dir():
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock


def lock(folder: Path, info: bool = True) -> None:
    """Hold an exclusive ``flock`` on ``folder`` until the process ends; refuse if another holds it.
    ``info``: write who holds it into the folder (not into an earlier run that is only kept safe)."""
    folder = folder.resolve()
    if folder in _locks:
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(folder) from None
    _locks[folder] = fd
    if not info:
        return
    with contextlib.suppress(OSError):  # who holds it, for a refused second process
        write_json(folder / LOCKFILE, {"pid": os.getpid(), "command": ["glcnet", *sys.argv[1:]],
                                       "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})


def unlock(folder: Path) -> None:
    """Release this process's lock on ``folder`` (no-op when it holds none)."""
    fd = _locks.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


def replacement(path: str | os.PathLike) -> Path:
    """Where an ``--overwrite`` run of ``path`` is built until it completes (module doc)."""
    p = Path(path)
    return p.parent / f".{p.name}.replacement"


def _has_checkpoint(run: Path) -> bool:
    return (run / "checkpoints" / "last.ckpt").is_file()


def run_target(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False) -> Path:
    """The folder a run of ``kind`` asked for ``path`` writes into: the replacement beside it when it
    replaces an earlier run (``overwrite``) or continues an interrupted replacement (``resume``), else
    ``path``. Decided from what is on disk before the run starts, so every DDP rank finds the same."""
    p = Path(path)
    staged = replacement(p)
    if resume and _has_checkpoint(staged) and kind_of(staged) == kind:
        return staged
    if overwrite and not resume and p.is_dir() and kind_of(p) == kind:
        return staged
    return p


@contextlib.contextmanager
def run_folder(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = (), hint: str = "",
               keep: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Claim ``path`` as a run folder of ``kind`` for the block: checked, created, marked, locked;
    yields the folder to write into (:func:`run_target`).

    ``overwrite`` builds the new run in :func:`replacement` and exchanges it with the earlier one
    when the block completes (the earlier one is then deleted); ``resume`` continues the run, or
    an interrupted replacement. If the block fails (or is interrupted) in a folder that this call
    created, the folder is removed unless ``keep(folder)`` (e.g. it holds a checkpoint); an earlier
    run being replaced is never touched then.
    """
    p = Path(path)
    target = run_target(p, kind, resume=resume, overwrite=overwrite)
    if rank() != 0:  # other DDP ranks: rank 0 checks, claims and locks the folder; they write nothing in it
        yield target
        return
    inputs = list(inputs)
    if resume and overwrite:
        raise GlcnetError(f"{p}: --resume continues a run and --overwrite replaces it; give one of them")
    exists = check(p, kind, overwrite=overwrite, resume=resume, inputs=inputs, hint=hint)
    staged = target != p
    if staged and not resume and target.exists():  # an earlier replacement that was not continued: ours
        _check_replaceable(target, kind)
        shutil.rmtree(target)
    fresh = not exists or (overwrite and not resume)
    created = makedirs(target)
    try:
        if p.exists():
            lock(p, info=target == p)  # an earlier run being replaced: locked, left as it is
        lock(target)
    except BaseException:
        remove_empty(created)
        unlock(p)
        raise
    try:
        check(p, kind, overwrite=overwrite, resume=resume, inputs=inputs, hint=hint)  # again, under the lock
        if not (target / MARKER).is_file():
            write_json(target / MARKER, marker(kind))
        yield target
        if staged:  # the replacement is complete: it takes the earlier run's place, which is then deleted
            unlock(target)
            unlock(p)
            if p.exists():
                exchange(p, target)
                shutil.rmtree(target)
            else:
                os.replace(target, p)
    except BaseException:
        if fresh and target.is_dir() and not keep(target):
            unlock(target)
            shutil.rmtree(target, ignore_errors=True)
            remove_empty(created[:-1])
        raise
    finally:
        unlock(target)
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
    if p.exists() and not p.is_file():  # a pipe or a device: reading it to check would wait for ever
        raise GlcnetError(f"{p}: is not a regular file (a pipe or a device); give a file name for the JSON output")
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
