"""``glcnet export RUN --format smp|timm|torchgeo --out FILE``: weights for other libraries' code.

``RUN`` is a pretraining run (``pretrained.pt``), a fine-tuning run (``model.pt``), an
experiment cell (``finetune/model.pt``) or one of those files. Our network *is* smp's
DeepLabV3Plus (``glcnet.models.deeplab``) with the head renamed and the input
normalisation held inside, so each format is a renaming of the same tensors:

==========  =====================================================================  ============
format      FILE holds                                                             loaded by
==========  =====================================================================  ============
smp         state dict of ``smp.DeepLabV3Plus`` (``encoder.*``, ``decoder.*``,      ``model.load_state_dict``
            ``segmentation_head.*``) restricted to ``--part``
timm        encoder-only state dict (``conv1.*``, ``layer1.*``...) of                ``model.load_state_dict``
            ``timm.create_model(name, in_chans=N, num_classes=0)``
torchgeo    ``{"hyper_parameters": {"model": "deeplabv3+", "backbone": name},``   ``SemanticSegmentationTask(
            ``"state_dict": {"model.<encoder key>": ...}}``, the layout of          ..., weights=FILE)``
            torchgeo's ``utils.extract_backbone``
==========  =====================================================================  ============

timm's ResNets and smp's are the same network up to stride 16; our encoder runs its last
stage dilated (output stride 16, smp's dilation on every block) where timm's default
strides it (output stride 32), so that stage sees the same weights at another resolution.

``--part`` (smp only): ``encoder``, ``encoder+aspp`` (default for a pretraining run: the
part the paper fine-tunes; SimCLR, MoCo v2 and Jigsaw never train the decoder blocks),
``all`` (encoder and decoder) or ``model`` (everything with the classification head,
default for a fine-tuned model). Every file is checked at export by loading it into the
target network (smp, timm: strict for the exported keys) before it is renamed into place.

``FILE.json`` beside it: format, library arguments, the exported and the missing keys,
band names, the raw -> input scaling (``value_range``, ``mean``, ``std``) and the method,
so that a user's script feeds the network what it was trained on::

    x = clip((raw - lo) / (hi - lo), 0, 1)      per band, (lo, hi) = value_range[band]
    x = (x - mean) / std                         per band
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from glcnet import outputs
from glcnet.errors import GlcnetError
from glcnet.utils.atomic import atomic_path
from glcnet.utils.progress import log

FORMATS = ("smp", "timm", "torchgeo")
EXPORT_PARTS = {  # state-dict prefixes of our network per --part (head renamed for smp)
    "encoder": ("encoder.",),
    "encoder+aspp": ("encoder.", "decoder.aspp."),
    "all": ("encoder.", "decoder."),
    "model": ("encoder.", "decoder.", "head."),
}
PREPROCESS = ("x = clip((raw - lo) / (hi - lo), 0, 1) per band with (lo, hi) = value_range[band]; "
              "then x = (x - mean[band]) / std[band]; bands in the order of 'bands'")


def find_checkpoint(run: str | Path) -> Path:
    """``model.pt`` / ``pretrained.pt`` of a run folder (or ``finetune/model.pt`` of an experiment cell)."""
    p = Path(run)
    if p.is_file():
        return p
    if not p.is_dir():
        raise GlcnetError(f"{p}: no such run folder or checkpoint")
    for name in ("model.pt", "pretrained.pt", "finetune/model.pt"):
        if (p / name).is_file():
            return p / name
    raise GlcnetError(f"{p}: no model.pt, pretrained.pt or finetune/model.pt (not a glcnet run folder)")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A glcnet ``pretrained.pt`` or ``model.pt`` with the keys an export needs (one-line errors)."""
    from glcnet.engine import load_torch

    ckpt = load_torch(path, "checkpoint")
    if ckpt.get("kind") not in ("pretrained", "segmentation") or not isinstance(ckpt.get("state_dict"), dict):
        raise GlcnetError(f"{path}: not a glcnet pretrained.pt or model.pt (kind={ckpt.get('kind')!r})")
    for key in ("model", "in_channels", "bands", "mean", "std", "value_range"):
        if key not in ckpt:
            raise GlcnetError(f"{path}: checkpoint lacks {key!r} (written by an older glcnet?)")
    return ckpt


def smp_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Arguments of ``smp.DeepLabV3Plus`` that rebuild our network without pretrained downloads
    (``classes`` only for a fine-tuned model: after pretraining the user chooses it)."""
    m = ckpt["model"]
    from glcnet.models.deeplab import LEGACY_ATROUS_RATES

    kw = {"encoder_name": m["encoder"], "encoder_weights": None, "encoder_output_stride": m["output_stride"],
          "decoder_channels": m["aspp_channels"], "in_channels": ckpt["in_channels"],
          "decoder_atrous_rates": list(m.get("atrous_rates") or LEGACY_ATROUS_RATES)}
    if ckpt["kind"] == "segmentation":
        kw["classes"] = len(ckpt["classes"])
    return kw


def timm_name(encoder: str) -> tuple[str, str]:
    """(timm model name, prefix of our encoder keys to strip) for an smp encoder name."""
    if encoder.startswith("tu-"):
        return encoder[3:], "encoder.model."
    if encoder.startswith(("resnet", "resnext")):  # smp's torchvision-style ResNets: timm's keys are the same
        return encoder, "encoder."
    raise GlcnetError(f"export timm: encoder {encoder!r} has no timm counterpart here "
                      "(supported: resnet*, resnext*, tu-*)")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _smp_model(ckpt: dict[str, Any]) -> Any:  # smp.DeepLabV3Plus
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(**{"classes": 1, **smp_kwargs(ckpt)})


def _check_load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> list[str]:
    """Load ``state`` into ``module``: no unexpected key, no shape mismatch; return the missing keys
    as ``load_state_dict`` reports them (batch norms' ``num_batches_tracked`` is never reported)."""
    own = module.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise GlcnetError(f"export {what}: {len(unexpected)} keys the target does not have (e.g. {unexpected[0]})")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise GlcnetError(f"export {what}: {bad[0]} has shape {list(state[bad[0]].shape)}, the target "
                          f"{list(own[bad[0]].shape)}")
    module.load_state_dict(state, strict=False)
    return [k for k in own if k not in state and not k.endswith("num_batches_tracked")]


def build(ckpt: dict[str, Any], fmt: str, part: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The object to save for ``fmt`` and its description (library arguments, keys) for the JSON."""
    state = {k: v for k, v in ckpt["state_dict"].items() if k not in ("mean", "std")}
    encoder = ckpt["model"]["encoder"]
    if fmt == "smp":
        part = part or ("model" if ckpt["kind"] == "segmentation" else "encoder+aspp")
        if part not in EXPORT_PARTS:
            raise GlcnetError(f"export: unknown part {part!r} (valid: {', '.join(EXPORT_PARTS)})")
        if part == "model" and ckpt["kind"] != "segmentation":
            raise GlcnetError("export: --part model needs a fine-tuned model.pt (a pretraining run has no head)")
        keep = {k: v for k, v in state.items() if k.startswith(EXPORT_PARTS[part])}
        obj = {("segmentation_head." + k[5:] if k.startswith("head.") else k): v for k, v in keep.items()}
        missing = _check_load(_smp_model(ckpt), obj, "smp")
        call = "smp.DeepLabV3Plus(**meta['smp'])" if "classes" in smp_kwargs(ckpt) else \
            "smp.DeepLabV3Plus(**meta['smp'], classes=K)"
        return obj, {"part": part, "smp": smp_kwargs(ckpt), "missing_keys": missing,
                     "usage": f"model = {call}; model.load_state_dict(torch.load(FILE), strict={not missing})"}
    if part not in (None, "encoder"):
        raise GlcnetError(f"export {fmt}: exports the encoder only (--part {part} is for --format smp)")
    if fmt == "timm":
        import timm

        name, prefix = timm_name(encoder)
        obj = _strip(state, prefix)
        kwargs = {"model_name": name, "pretrained": False, "in_chans": ckpt["in_channels"], "num_classes": 0}
        missing = _check_load(timm.create_model(**kwargs), obj, "timm")
        if missing:
            raise GlcnetError(f"export timm: {len(missing)} keys of timm's {name} not in the encoder "
                              f"(e.g. {missing[0]})")
        return obj, {"part": "encoder", "timm": kwargs, "output_stride": ckpt["model"]["output_stride"],
                     "usage": "model = timm.create_model(**meta['timm']); model.load_state_dict(torch.load(FILE))"}
    if fmt == "torchgeo":
        enc = _strip(state, "encoder.")
        hp = {"model": "deeplabv3+", "backbone": encoder, "in_channels": ckpt["in_channels"],
              "num_classes": len(ckpt.get("classes") or []) or None}
        obj = {"hyper_parameters": hp, "state_dict": {"model." + k: v for k, v in enc.items()}}
        # what torchgeo.trainers.utils.extract_backbone hands to smp's encoder: every "model." removed
        seen = {k.replace("model.", ""): v for k, v in obj["state_dict"].items()}
        if len(seen) != len(enc) or set(seen) != set(enc):
            raise GlcnetError(f"export torchgeo: encoder {encoder!r} has keys with 'model.' in them, which "
                              "torchgeo's extract_backbone strips; use --format smp")
        missing = _check_load(_smp_model(ckpt).encoder, seen, "torchgeo")  # torchgeo builds the same smp encoder
        if missing:
            raise GlcnetError(f"export torchgeo: encoder incomplete (e.g. {missing[0]} missing)")
        task = {"model": "deeplabv3+", "backbone": encoder, "in_channels": ckpt["in_channels"]}
        return obj, {"part": "encoder", "torchgeo": task,
                     "usage": "task = SemanticSegmentationTask(**meta['torchgeo'], num_classes=K, weights=FILE)"}
    raise GlcnetError(f"export: unknown format {fmt!r} (valid: {', '.join(FORMATS)})")


def sidecar(ckpt: dict[str, Any], source: Path, fmt: str, desc: dict[str, Any], n_tensors: int) -> dict[str, Any]:
    """The ``FILE.json`` written beside an export: format, bands, scaling, normalisation, method."""
    from glcnet import __version__
    from glcnet.runs import git_commit

    out = {"format": fmt, **desc, "tensors": n_tensors, "kind": ckpt["kind"], "method": ckpt.get("method"),
           "encoder": ckpt["model"]["encoder"], "in_channels": ckpt["in_channels"], "bands": list(ckpt["bands"]),
           "value_range": ckpt["value_range"], "mean": list(ckpt["mean"]), "std": list(ckpt["std"]),
           "preprocessing": PREPROCESS}
    if ckpt["kind"] == "segmentation":
        out.update({k: ckpt[k] for k in ("classes", "colors", "ignore_index") if k in ckpt})
        out.update({k: ckpt[k] for k in ("init", "fraction", "epoch") if k in ckpt})
    else:
        out.update({k: ckpt[k] for k in ("epochs", "step") if k in ckpt})
    out.update({"source": str(source), "glcnet_version": __version__, "git_commit": git_commit()})
    return out


def export(run: str | Path, fmt: str, out: str | Path, part: str | None = None,
           overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``out`` (weights for ``fmt``) and ``out.json`` (see module doc); return both paths."""
    if fmt not in FORMATS:
        raise GlcnetError(f"export: unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    out = Path(out)
    meta_path = out.with_suffix(".json")
    if out.suffix == ".json":
        raise GlcnetError(f"{out}: the weights file needs another suffix than .json (e.g. .pt)")
    source = find_checkpoint(run)
    if out.exists() and not overwrite:
        raise GlcnetError(f"{out}: already exists (--overwrite replaces it)")
    # FILE.json says who wrote the pair (glcnet.outputs): only an earlier export is replaced, with --overwrite
    outputs.check_file(meta_path, "export", inputs=[run, source], overwrite=overwrite)
    if not meta_path.exists():  # no sidecar: a weights file under this name is not ours
        outputs.check_file(out, "export", inputs=[run, source], overwrite=overwrite)
    ckpt = load_checkpoint(source)
    obj, desc = build(ckpt, fmt, part)
    tensors = obj["state_dict"] if fmt == "torchgeo" else obj
    with atomic_path(out) as tmp:
        torch.save(obj, tmp)
    outputs.write_file(meta_path, "export", sidecar(ckpt, source, fmt, desc, len(tensors)))
    log.info("export %s: %d tensors (%s) of %s", fmt, len(tensors), desc["part"], source)
    return out, meta_path


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet export``."""
    parser.add_argument("run", metavar="RUN", help="run folder (pretraining or fine-tuning) or its .pt file")
    parser.add_argument("--format", required=True, choices=FORMATS, help="library that will load the weights")
    parser.add_argument("--out", required=True, metavar="FILE", help="weights file (FILE.json is written beside it)")
    parser.add_argument("--part", choices=list(EXPORT_PARTS),
                        help="smp only: encoder | encoder+aspp (pretraining default) | all "
                             "| model (fine-tuned default)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE and FILE.json if they exist")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet export``; returns the exit status."""
    out, meta = export(args.run, args.format, args.out, part=args.part, overwrite=args.overwrite)
    usage = json.loads(meta.read_text())["usage"].replace("FILE", repr(str(out)))
    print(f"{out}\n{meta}\nload it: meta = json.load(open({str(meta)!r})); {usage}")
    return 0
