"""What goes into a checkpoint and how it is read and written.

Lightning checkpoints are written atomically next to their final name
(:class:`AtomicCheckpointIO`): complete or absent. Besides Lightning's own state they hold
every rank's RNG states (:class:`RngState`) and the run's kind and config
(:class:`ConfigInCheckpoint`). :func:`load_torch` reads any glcnet checkpoint with one-line errors.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from glcnet.config import to_dict
from glcnet.errors import GlcnetError
from glcnet.utils.atomic import checksum_path, torch_save, verify
from glcnet.utils.progress import log
from glcnet.utils.rng import capture, rank_seed, restore, seed_globals


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through :func:`glcnet.utils.atomic.torch_save`: a temporary file in the
    checkpoint's own folder, fsynced, then renamed (Lightning's own goes through the system temp
    folder, so its final step can be a non-atomic cross-device copy)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        torch_save(checkpoint, path)


class RngState(Callback):
    """Random streams per rank (:mod:`glcnet.utils.rng`) and their states in checkpoints.

    ``setup``: with more than one process, rank ``r`` reseeds the global Python, NumPy and
    torch RNGs with ``(seed, r)`` (one process keeps the stream of ``seed``), and the task's
    ``generator`` attribute, if any, is seeded by the task. Checkpoints hold the list of
    EVERY rank's states (global RNGs + that generator), gathered from all ranks; on
    ``--resume`` each rank restores its own, so a resumed run continues every rank's stream
    exactly. A checkpoint of another process count restores the ranks it has and warns.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            seed_globals(rank_seed(self.seed, trainer.global_rank))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        mine = capture(getattr(pl_module, "generator", None))
        states: list[Any] = [mine]
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # every rank builds the checkpoint dict (at once); rank 0 writes it
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, mine)
        checkpoint["rng"] = {"ranks": states}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if not rng:
            return
        states = rng["ranks"] if "ranks" in rng else [rng]  # checkpoints before per-rank states: one
        if len(states) != trainer.world_size and trainer.is_global_zero:
            log.warning(f"warning: the checkpoint holds the random streams of {len(states)} process(es), this run "
                        f"has {trainer.world_size}: ranks beyond them start fresh streams, so the resume is not exact")
        if trainer.global_rank < len(states):
            restore(states[trainer.global_rank], getattr(pl_module, "generator", None))


class ConfigInCheckpoint(Callback):
    """Store ``{"kind", "config", "data_id"}`` in every checkpoint, so that --resume can check its
    settings and that it continues on the same data set (its identity, not its path)."""

    def __init__(self, kind: str, cfg: Any, data_id: str | None = None):
        self.meta = {"kind": kind, "config": to_dict(cfg), "data_id": data_id}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["glcnet"] = self.meta


def load_torch(path: str | os.PathLike, what: str, weights_only: bool = True) -> dict[str, Any]:
    """``torch.load`` a checkpoint dict, with one-line errors naming the file; a file whose bytes do
    not match the checksum written with it (``NAME.sha256``) is refused."""
    p = Path(path)
    if not p.is_file():
        raise GlcnetError(f"{p}: {what} not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise GlcnetError(f"{p}: cannot read the {what} ({e.strerror})") from None
    if not verify(p, data):
        raise GlcnetError(f"{p}: damaged: its bytes do not match the checksum written with it "
                          f"({checksum_path(p).name}); restore the file, or rerun what made it")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
    except Exception as e:  # corrupt, truncated, not a torch file
        raise GlcnetError(f"{p}: not a readable {what} ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise GlcnetError(f"{p}: not a glcnet {what} (expected a dict)")
    return obj
