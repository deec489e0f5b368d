"""Random streams per DDP rank, and their states for exact resume.

Every rank of a multi-process run is seeded with the same ``seed``; draws made from that
alone would repeat on every rank (the i-th sample of each rank would get the same crops
and patches). So each rank draws from streams seeded by ``(seed, global rank)``:

- the training task's CPU ``torch.Generator`` (:func:`rank_generator`), which every random
  draw of the pretraining methods uses (:class:`glcnet.ssl.base.SSLMethod`);
- with more than one process, the global Python, NumPy and torch RNGs as well
  (:func:`seed_globals`; e.g. fine-tuning crops made in the main process).

:func:`capture` / :func:`restore` take and set one rank's states; checkpoints hold the
list of every rank's states (``glcnet.engine.RngState``).
"""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for ``(seed, rank)`` (NumPy ``SeedSequence`` hashing: independent streams)."""
    state = np.random.SeedSequence([seed % 2**64, rank]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def rank_generator(seed: int, rank: int) -> torch.Generator:
    """CPU generator of rank ``rank``: parameters are drawn on the CPU, then moved to the device."""
    return torch.Generator().manual_seed(rank_seed(seed, rank))


def seed_globals(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _np_state_to_torch(state: tuple) -> tuple:
    """NumPy's RNG state with its key array as a tensor (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _np_state_from_torch(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def capture(generator: torch.Generator | None = None) -> dict[str, Any]:
    """This process's RNG states: Python, NumPy, torch CPU and CUDA, and ``generator``'s."""
    state = {
        "python": random.getstate(),
        "numpy": _np_state_to_torch(cast(tuple, np.random.get_state(legacy=True))),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Set the states taken by :func:`capture` (``generator``'s too when both have one)."""
    random.setstate(state["python"])
    np.random.set_state(_np_state_from_torch(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
