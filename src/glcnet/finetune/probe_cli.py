"""``glcnet probe --ckpt RUN|pretrained.pt|model.pt|none --fraction 0.01``: the dense linear probe after the fact.

Fits the per-pixel linear classifiers of :mod:`glcnet.finetune.probe` on the frozen
features of any checkpoint (``none``: a random initialisation of ``model.*`` with
``--seed``, the baseline) and scores them on the val scenes. Prints one line per layer
and, with ``--out FILE.json``, writes the result (atomically; an existing file only if an
earlier ``glcnet probe`` wrote it, see :func:`glcnet.outputs.check_file`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from glcnet.config import ModelConfig, ProbeConfig, load_config, to_dict
from glcnet.engine import load_torch
from glcnet.errors import GlcnetError
from glcnet.models import DeepLab, build_model
from glcnet.models.deeplab import checkpoint_model_config


def _resolve(ckpt: str) -> tuple[Path | None, Path | None]:
    """``(checkpoint file, run folder)``: a run folder holds ``pretrained.pt`` or ``model.pt``."""
    if ckpt.strip().lower() == "none":
        return None, None
    p = Path(ckpt)
    if p.is_dir():
        for name in ("pretrained.pt", "model.pt"):
            if (p / name).is_file():
                return p / name, p
        raise GlcnetError(f"{p}: no pretrained.pt or model.pt in this folder")
    return p, p.parent


def load_network(ckpt: str, model_cfg: ModelConfig, in_channels: int, mean: list[float], std: list[float],
                 seed: int = 0) -> tuple[DeepLab, dict[str, Any]]:
    """The DeepLab (no head) of a pretrained.pt / model.pt, or a seeded random one for ``none``."""
    path, _ = _resolve(ckpt)
    if path is None:
        torch.manual_seed(seed)
        return build_model(model_cfg, in_channels, 0, mean, std), {"init": "none", "seed": seed}
    meta = load_torch(path, "checkpoint")
    if meta.get("kind") not in ("pretrained", "segmentation") or not isinstance(meta.get("state_dict"), dict):
        raise GlcnetError(f"{path}: not a glcnet pretrained.pt/model.pt (kind={meta.get('kind')!r})")
    cfg = checkpoint_model_config(dict(meta.get("model") or {}), f"{path}: model")
    if meta.get("in_channels") not in (None, in_channels):
        raise GlcnetError(f"{path}: trained on {meta['in_channels']} bands but the data set has {in_channels}")
    net = build_model(cfg, in_channels, 0, meta.get("mean", mean), meta.get("std", std))
    state = {k: v for k, v in meta["state_dict"].items() if not k.startswith("head.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise GlcnetError(f"{path}: weights do not fit DeepLabv3+ {cfg.encoder} ({str(e).splitlines()[0]})") from None
    return net, {"init": str(path), "method": meta.get("method"), "step": meta.get("step")}


def probe_checkpoint(ckpt: str, data: str | Path, cfg: ProbeConfig, model_cfg: ModelConfig | None = None,
                     seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Probe ``ckpt`` (or ``none``) on ``data``: ``{layer: metrics, "seconds", "fraction", "init", ...}``."""
    from glcnet.data.prepared import PreparedDataset
    from glcnet.finetune.probe import DenseProbe

    ds = PreparedDataset(data)
    net, info = load_network(ckpt, model_cfg or ModelConfig(), ds.in_channels, ds.mean, ds.std, seed)
    why = DenseProbe.unavailable(ds, cfg.fraction)
    if why:
        raise GlcnetError(f"{data}: cannot probe: {why}")
    result = DenseProbe.from_config(ds, cfg)(net.to(device))
    return {**result, "fraction": cfg.fraction, "data": str(data), **info}


def _data_of(ckpt: str) -> str | None:
    """The data set a run was trained on: ``RUN/config.yaml`` (pretraining) or ``model.pt``'s ``data``."""
    path, run = _resolve(ckpt)
    if run is not None and (run / "config.yaml").is_file():
        import yaml

        return (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data") or None
    if path is not None and path.is_file():
        return load_torch(path, "checkpoint").get("data")
    return None


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet probe``."""
    parser.add_argument("--ckpt", required=True, help="pretraining run folder, pretrained.pt, model.pt, or none")
    parser.add_argument("--data", help="prepared data set (default: the one the run was trained on)")
    parser.add_argument("--fraction", type=float, help="labelled train subset to fit on (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random network for --ckpt none")
    parser.add_argument("--out", help="write the result as JSON to this file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="probe.* / model.* settings, e.g. probe.layers=[decoder] model.encoder=resnet50")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet probe``; returns the exit status."""
    from glcnet import outputs
    from glcnet.config import PretrainConfig
    from glcnet.finetune.probe import summary_line

    overrides = list(args.overrides) + ([f"probe.fraction={args.fraction}"] if args.fraction is not None else [])
    cfg = load_config(PretrainConfig, None, overrides)
    data = args.data or _data_of(args.ckpt)
    if not data:
        raise GlcnetError(f"{args.ckpt}: no data set recorded; pass --data PREPARED")
    if args.out:  # before the probe's minutes of work: may the file be written?
        outputs.check_file(args.out, "probe", inputs=[args.ckpt, data])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = probe_checkpoint(args.ckpt, data, cfg.probe, cfg.model, args.seed, device)
    print(summary_line(result, f"probe of {result['init']} (fraction {cfg.probe.fraction:g})"))
    if args.out:
        outputs.write_file(args.out, "probe", {**result, "probe": to_dict(cfg.probe)})
        print(f"written: {args.out}")
    return 0
