"""Checkpoint I/O for fine-tuning: load pretrained parts honestly, save/load ``model.pt``.

``load_pretrained(model, init, part)`` copies the keys under ``PARTS[part]``
(``encoder``, ``encoder+aspp`` or ``all``) from a ``pretrained.pt`` (any method) or a
``model.pt`` into the network and returns a report: ``loaded`` (count), ``missing``
(network keys left at their initialisation: the parts not loaded, the head, mean/std),
``skipped`` (checkpoint keys outside the part) and ``unexpected`` (checkpoint keys the
network does not have). Unexpected keys, an incomplete part, or a shape mismatch are
errors: such a checkpoint is of another architecture. The head is never loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glcnet.config import ModelConfig, to_dict
from glcnet.engine import load_torch
from glcnet.errors import GlcnetError
from glcnet.models import DeepLab, build_model
from glcnet.models.deeplab import PARTS, atrous_rates, checkpoint_model_config, resolved

MODEL_KEYS = ("kind", "model", "in_channels", "bands", "mean", "std", "value_range",
              "classes", "colors", "ignore_index", "state_dict")


def resolve_init(init: str) -> Path | None:
    """``none`` -> None; a run folder -> its ``pretrained.pt``; else the file itself."""
    if init.strip().lower() in ("", "none"):
        return None
    p = Path(init)
    return p / "pretrained.pt" if p.is_dir() else p


def _check_arch(path: Path, ckpt: dict[str, Any], model_cfg: ModelConfig, in_channels: int) -> None:
    """Same encoder / band count / ASPP width, else a one-line error before any key check."""
    saved = dict(ckpt.get("model") or {})
    saved["atrous_rates"] = list(checkpoint_model_config(saved, f"{path}: model").atrous_rates or ())
    want = {**to_dict(model_cfg), "atrous_rates": list(atrous_rates(model_cfg))}
    for key in ("encoder", "aspp_channels", "output_stride", "atrous_rates"):
        if key in saved and saved[key] != want[key]:
            value = str(saved[key]).replace(" ", "")
            raise GlcnetError(f"{path}: checkpoint has model.{key}={saved[key]!r} but the config asks for "
                              f"{want[key]!r} (set model.{key}={value})")
    if ckpt.get("in_channels") not in (None, in_channels):
        raise GlcnetError(f"{path}: checkpoint was trained on {ckpt['in_channels']} bands "
                          f"but the data has {in_channels}")


def load_pretrained(model: DeepLab, init: str, part: str, model_cfg: ModelConfig) -> dict[str, Any]:
    """Load ``part`` of a checkpoint into ``model``; return the loading report (see module doc)."""
    if part not in PARTS:
        raise GlcnetError(f"load: unknown part {part!r} (valid: {', '.join(PARTS)})")
    own = model.state_dict()
    path = resolve_init(init)
    if path is None:
        return {"init": "none", "part": part, "loaded": 0, "missing": sorted(own), "skipped": [], "unexpected": []}
    ckpt = load_torch(path, "pretrained checkpoint")
    if ckpt.get("kind") not in ("pretrained", "segmentation") or not isinstance(ckpt.get("state_dict"), dict):
        raise GlcnetError(f"{path}: not a glcnet pretrained.pt/model.pt (kind={ckpt.get('kind')!r})")
    _check_arch(path, ckpt, model_cfg, model.in_channels)
    state: dict[str, torch.Tensor] = ckpt["state_dict"]
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise GlcnetError(f"{path}: {len(unexpected)} unexpected keys (e.g. {unexpected[0]}): "
                          f"not a checkpoint of this DeepLabv3+ ({model_cfg.encoder})")
    prefixes = PARTS[part]
    wanted = [k for k in own if k.startswith(prefixes)]
    absent = [k for k in wanted if k not in state]
    if absent:
        raise GlcnetError(f"{path}: part {part!r} incomplete, {len(absent)} keys missing (e.g. {absent[0]})")
    for k in wanted:
        if state[k].shape != own[k].shape:
            raise GlcnetError(f"{path}: {k} has shape {list(state[k].shape)} in the checkpoint but "
                              f"{list(own[k].shape)} in the model (another encoder or band count?)")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return {
        "init": str(path),
        "method": ckpt.get("method"),
        "part": part,
        "loaded": len(wanted),
        "missing": [k for k in own if k not in wanted],
        "skipped": [k for k in state if k not in wanted],
        "unexpected": unexpected,
    }


def summary(report: dict[str, Any]) -> str:
    """One line: ``init X (method): loaded N keys of part P; M left at init (head, ...)``."""
    groups = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("decoder.") else "")
                     for k in report["missing"]})
    src = report["init"] + (f" ({report['method']})" if report.get("method") else "")
    return (f"init {src}: loaded {report['loaded']} keys of part {report['part']!r}; "
            f"{len(report['missing'])} keys at initialisation ({', '.join(groups)}); "
            f"{len(report['skipped'])} checkpoint keys skipped; 0 unexpected")


def model_checkpoint(model: DeepLab, model_cfg: ModelConfig, *, bands: Sequence[str], value_range: Any,
                     classes: Sequence[str], colors: Any, ignore_index: int, **extra: Any) -> dict[str, Any]:
    """The ``model.pt`` dict of the design doc (``kind: segmentation``)."""
    return {
        "kind": "segmentation",
        "model": to_dict(resolved(model_cfg)),
        "in_channels": model.in_channels,
        "bands": list(bands),
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "value_range": [list(map(float, r)) for r in value_range],
        "classes": list(classes),
        "colors": [list(map(int, c)) for c in colors],
        "ignore_index": int(ignore_index),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def load_model(path: str | Path) -> tuple[DeepLab, dict[str, Any]]:
    """Rebuild the network of a ``model.pt``; returns ``(model in eval mode, checkpoint dict)``."""
    path = Path(path)
    ckpt = load_torch(path, "model checkpoint")
    kind = ckpt.get("kind")
    if kind == "pretrained":
        raise GlcnetError(f"{path}: a pretrained checkpoint has no classification head; "
                          "fine-tune it first (glcnet finetune --init ...) and use its model.pt")
    if "pytorch-lightning_version" in ckpt:
        raise GlcnetError(f"{path}: a Lightning training checkpoint; use the run's model.pt")
    absent = [k for k in MODEL_KEYS if k not in ckpt]
    if kind != "segmentation" or absent:
        raise GlcnetError(f"{path}: not a glcnet model.pt (kind={kind!r}, missing {', '.join(absent) or 'nothing'})")
    cfg = checkpoint_model_config(ckpt["model"], f"{path}: model")
    model = build_model(cfg, ckpt["in_channels"], num_classes=len(ckpt["classes"]), mean=ckpt["mean"], std=ckpt["std"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise GlcnetError(f"{path}: weights do not fit DeepLabv3+ {cfg.encoder} with {ckpt['in_channels']} bands "
                          f"and {len(ckpt['classes'])} classes ({first[:160]})") from None
    return model.eval(), ckpt
