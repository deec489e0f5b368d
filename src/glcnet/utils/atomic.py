"""Atomic outputs: write to a temporary name next to the target, flush to disk, then rename.

A crash, a full disk or an interruption never leaves a half-written file or folder under
the final name: the temporary lives in the target's own folder (so the rename is atomic,
never a cross-device copy), is fsynced before the rename, and is removed on any error.

Checkpoints and weights (:func:`torch_save`) also get ``NAME.sha256`` beside them, in
``sha256sum`` format, so that a file damaged later (a bad disk, a partial copy, an edit) is
refused when read (:func:`verify`) instead of silently loading other numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def makedirs(path: str | os.PathLike) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, outermost first (to undo on failure)."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()][::-1]
    for p in missing:
        p.mkdir(exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders :func:`makedirs` created, innermost first, where they are still empty."""
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


def reason(e: OSError) -> str:
    """What went wrong, in words, also for an OSError without ``strerror`` (a library's own message)."""
    if e.strerror:
        return str(e.strerror)
    if e.errno:
        return os.strerror(e.errno)
    text = str(e.args[0]) if e.args else ""
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _name_final(e: BaseException, tmp: Path, final: Path) -> None:
    """An OSError about the temporary name names the final one (what the user asked for)."""
    if isinstance(e, OSError) and e.filename and str(e.filename).startswith(str(tmp)):
        e.strerror = f"{reason(e)} (nothing was written under this name)"
        e.filename = str(final) + str(e.filename)[len(str(tmp)):]


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; rename it to ``final`` on success.

    On any exception (also an interruption) the temporary folder is removed and ``final``
    is untouched. With ``overwrite`` an existing ``final`` is replaced only after the new
    one is complete. Who may replace what is decided by :mod:`glcnet.outputs`, not here.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        from glcnet.errors import GlcnetError

        raise GlcnetError(f"{final}: output already exists (use --overwrite to replace it)")
    created = makedirs(final.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except BaseException:
        remove_empty(created)
        raise
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result should be an ordinary folder
    try:
        yield tmp
        fsync_dir(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        _name_final(e, tmp, final)
        raise


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``final``; fsync and rename it to ``final`` on success."""
    final = Path(final)
    created = makedirs(final.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=final.suffix, dir=final.parent)
    except BaseException:
        remove_empty(created)
        raise
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result should be an ordinary file
    try:
        yield tmp
        if tmp.is_file():  # the body may have written it through another library
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        remove_empty(created)
        if isinstance(e, OSError) and not e.filename:  # a failed write() names no file: it was this one
            e.strerror = f"{reason(e)} (nothing was written under this name)"
            e.filename = str(final)
        _name_final(e, tmp, final)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (a full disk raises ``OSError`` and leaves no file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def checksum_path(path: str | os.PathLike) -> Path:
    """``NAME.sha256`` beside ``NAME``."""
    return Path(f"{os.fspath(path)}.sha256")


def write_checked(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` and its SHA-256 to ``path.sha256``. The old checksum goes
    once the new bytes are on disk under the temporary name, before the rename: a failed write keeps
    the old file and its checksum; a crash between the rename and the new checksum leaves a file
    without one (read unverified), never one wrongly refused."""
    side = checksum_path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        side.unlink(missing_ok=True)
    write_text(side, f"{hashlib.sha256(data).hexdigest()}  {Path(path).name}\n")


def verify(path: str | os.PathLike, data: bytes) -> bool:
    """Whether ``data`` (the bytes read from ``path``) matches ``path.sha256``; True when there is none
    (files of earlier versions, or copied without it)."""
    side = checksum_path(path)
    try:
        want = side.read_text().split()[0]
    except (OSError, IndexError):
        return True
    return hashlib.sha256(data).hexdigest() == want


class _Stream:
    """A file seen only through ``write`` (``str``: its name): ``np.save`` then writes it in chunks
    with ``write``, whose errors carry their errno, instead of ``ndarray.tofile``, whose short write
    says only "N requested and M written"."""

    def __init__(self, f: Any):
        self.write, self.name = f.write, f.name

    def __str__(self) -> str:
        return str(self.name)


def save_npy(path: str | os.PathLike, arr: Any) -> None:
    """``np.save(path, arr)``, with a failed write raised as an ``OSError`` naming ``path`` and its
    cause (``No space left on device``, ``File too large``). Not atomic by itself: for files inside
    a folder written with :func:`atomic_dir`."""
    import numpy as np

    try:
        with open(path, "wb") as f:
            np.save(_Stream(f), arr)
    except OSError as e:
        if not e.filename:
            e.strerror, e.filename = reason(e), str(path)
        raise


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomically ``torch.save`` ``obj`` to ``path``, with its checksum (:func:`write_checked`).

    Serialised in memory first, so that a write error is a plain ``OSError`` (ENOSPC, EFBIG)
    rather than torch's zip writer's ``RuntimeError``.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_checked(path, buf.getvalue())


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Swap two existing paths: in one atomic step where the OS has it (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``), else by two renames through a third name (a crash between them leaves
    both under their own names or the third one, never one lost)."""
    a, b = os.fspath(a), os.fspath(b)
    with contextlib.suppress(AttributeError, OSError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) == 0:
            fsync_dir(Path(a).parent)
            return
    third = f"{a}.exchange-{os.getpid()}"
    os.replace(a, third)
    os.replace(b, a)
    os.replace(third, b)
    fsync_dir(Path(a).parent)
