"""Self-supervised pretraining methods: one module per method, one registry.

``METHODS``: name -> :class:`~glcnet.ssl.base.SSLMethod` subclass. ``VARIANTS``: ablations of
GLCNet as ``name -> (base name, MethodConfig overrides)``. ``none`` (random initialisation)
is a valid entry of the comparison table but has nothing to pretrain.

Under DDP, a method whose ``find_unused_parameters`` attribute is true (SimCLR, MoCo v2,
Jigsaw and GLCNet without the local term use the ASPP output only, so the decoder blocks
get no gradient) needs ``DDPStrategy(find_unused_parameters=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glcnet.config import PretrainConfig, replace
from glcnet.errors import GlcnetError
from glcnet.ssl.base import SSLMethod
from glcnet.ssl.glcnet import GLCNet
from glcnet.ssl.glcnet_m import GLCNetM
from glcnet.ssl.inpainting import Inpainting
from glcnet.ssl.jigsaw import Jigsaw
from glcnet.ssl.mocov2 import MoCoV2
from glcnet.ssl.simclr import SimCLR
from glcnet.ssl.vicregl import VICRegL

METHODS: dict[str, type[SSLMethod]] = {
    "glcnet": GLCNet,
    "simclr": SimCLR,
    "mocov2": MoCoV2,
    "inpainting": Inpainting,
    "jigsaw": Jigsaw,
    "glcnet_m": GLCNetM,
    "vicregl": VICRegL,
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "glcnet_no_style": ("glcnet", {"style": False}),  # mean only
    "glcnet_no_global": ("glcnet", {"lam": 0.0}),
    "glcnet_no_local": ("glcnet", {"lam": 1.0}),
    "glcnet_fn": ("glcnet", {"fn_topk": 16}),  # false-negative-aware local term
    "glcnet_m_fn": ("glcnet_m", {"fn_topk": 16}),
}
METHOD_NAMES: tuple[str, ...] = ("none", *METHODS, *VARIANTS)


def check_method_name(name: str) -> str:
    """Return ``name`` if it is a valid method (incl. ``none``), else raise listing the valid ones."""
    if name not in METHOD_NAMES:
        raise GlcnetError(f"unknown method {name!r} (valid: {', '.join(METHOD_NAMES)})")
    return name


def resolve(cfg: PretrainConfig) -> tuple[type[SSLMethod], PretrainConfig]:
    """Method class and the config with the variant's overrides applied (``method.name`` kept)."""
    name = check_method_name(cfg.method.name)
    if name == "none":
        raise GlcnetError("method 'none' is random initialisation: there is nothing to pretrain "
                          "(use it as an experiment method or finetune init=none)")
    base, overrides = VARIANTS.get(name, (name, {}))
    return METHODS[base], replace(cfg, method=replace(cfg.method, **overrides))


def build_method(cfg: PretrainConfig, in_channels: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> SSLMethod:
    """Build the method named by ``cfg.method.name`` (variants resolved) around a fresh DeepLab."""
    cls, cfg = resolve(cfg)
    return cls(cfg, in_channels, mean=mean, std=std)


__all__ = ["METHODS", "METHOD_NAMES", "VARIANTS", "SSLMethod", "build_method", "check_method_name"]
