"""``glcnet evaluate --ckpt model.pt --split test``: whole-scene metrics and a report folder.

Every scene of the split is predicted whole with the blended sliding window
(:mod:`glcnet.finetune.sliding`); one confusion matrix is pooled over all its labelled
pixels (ignore index excluded) and turned into OA, Kappa, per-class IoU/P/R/F1, mIoU and
mean F1 (:mod:`glcnet.finetune.metrics`). Where the data set has ISPRS evaluation masks
(eroded boundaries and clutter set to ignore) and ``eval.isprs`` is on, the same metrics on
those labels are added under ``isprs``, with the classes absent from them (clutter) left
out of the means. Report folder (written atomically): see :mod:`glcnet.finetune.report`,
plus ``report.html`` (:func:`glcnet.finetune.page.evaluation_page`), a page to open in a browser.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from glcnet import outputs
from glcnet.config import EvalConfig, check_values, to_dict
from glcnet.errors import GlcnetError
from glcnet.finetune.metrics import compute_metrics, confusion_matrix
from glcnet.finetune.page import PAGE_SCENES, evaluation_page, file_uri, scene_images
from glcnet.finetune.predict import (
    add_inference_args,
    check_like_training,
    inference_fn,
    parse_value_range,
    resolve_device,
)
from glcnet.finetune.report import class_map_png, display_step, scene_figure, write_report
from glcnet.finetune.sliding import check_window, count_windows, sliding_classes
from glcnet.finetune.weights import load_model
from glcnet.utils.progress import bar, duration, log


def _check_match(ckpt: dict[str, Any], ds: Any, path: Path) -> None:
    if list(ckpt["classes"]) != ds.classes:
        raise GlcnetError(f"{path}: model classes {ckpt['classes']} differ from the data set's {ds.classes}")
    if ckpt["in_channels"] != ds.in_channels:
        raise GlcnetError(f"{path}: model expects {ckpt['in_channels']} bands, the data set has {ds.in_channels}")


def _check_unseen(ckpt: dict[str, Any], ds: Any, split: str, path: Path) -> None:
    """A data set re-prepared since the model was trained (another identity) must not score the model on
    scenes it was trained or selected on: refused when one is among ``split``'s, else a warning."""
    if not ckpt.get("data_id") or ckpt["data_id"] == ds.identity:
        return
    seen = {s for part in ("train", "val") for s in (ckpt.get("scenes") or {}).get(part, [])}
    used = sorted(seen & set(ds.scenes(split)))
    if used:
        raise GlcnetError(f"{ds.root}: its splits changed since {path} was trained (re-prepared: identity "
                          f"{ds.identity}, the model's {ckpt['data_id']}); {split} scene {used[0]} "
                          f"{'and ' + str(len(used) - 1) + ' more ' if len(used) > 1 else ''}was one of the scenes "
                          "it was trained or selected on; evaluate on the data set it was trained on")
    log.warning(f"warning: {ds.root} changed since {path} was trained (identity {ds.identity}, the model's "
                f"{ckpt['data_id']}); none of its {split} scenes was a scene the model was trained or selected on")


def run(ckpt: str | Path, data: str | Path | None = None, split: str = "test", cfg: EvalConfig | None = None,
        out: str | Path | None = None, device: str = "auto", progress: bool = True, overwrite: bool = False,
        value_range: str | None = None) -> dict[str, Any]:
    """Evaluate ``ckpt`` (model.pt) on the ``split`` scenes of ``data``; write the report when ``out``.

    ``data`` defaults to the data set the model was fine-tuned on (its absolute path in
    model.pt). Scenes are scaled with the model's value range after checking that the data
    set's values are like the model's training data, or with ``value_range`` (``"LO,HI"``).
    Returns the metrics dict (``oa``, ``kappa``, ``miou``, ``mean_f1``, ``per_class``,
    ``confusion``, ``scenes``, [``isprs``]).
    """
    from glcnet.data.prepared import PreparedDataset, SceneDataset

    cfg = cfg or EvalConfig()
    check_values(cfg, flag=True)
    check_window(cfg.window, cfg.stride)
    dev = resolve_device(device)
    model, meta = load_model(ckpt)
    if not data:
        data = meta.get("data")
        if not data:
            raise GlcnetError(f"{ckpt}: no data set recorded in the model; pass --data PREPARED")
        if not Path(data).is_dir():
            raise GlcnetError(f"{ckpt}: the data set it was fine-tuned on, {data}, is not there; "
                              "pass --data PREPARED")
    ds = PreparedDataset(data)
    _check_match(meta, ds, Path(ckpt))
    vr = parse_value_range(value_range, ds.in_channels)
    if vr is None:
        check_like_training(Path(data) / "dataset.json", meta, ds.meta.get("dtype", "uint8"), ds.value_range)
    _check_unseen(meta, ds, split, Path(ckpt))  # after the refusals: its warning is not a second line
    ds.meta["value_range"] = vr or meta["value_range"]  # scale as the model was trained
    scenes = SceneDataset(ds, split)
    if out:
        outputs.check(out, "evaluate", overwrite=overwrite, inputs=[ckpt, data])
    model_fn = inference_fn(model, dev)
    k, classes = ds.num_classes, ds.classes
    cm = torch.zeros(k, k, dtype=torch.int64)
    cm_isprs = torch.zeros(k, k, dtype=torch.int64)
    per_scene: dict[str, Any] = {}
    has_isprs = False
    sizes = [ds.scene_info(n) for n in scenes.names]
    total = sum(count_windows(i["height"], i["width"], cfg.window, cfg.stride) for i in sizes)
    shown: list[tuple[str, str, str | None, str]] = []  # scenes on report.html
    t0 = time.monotonic()
    with (outputs.new_folder(out, "evaluate", overwrite=overwrite, inputs=[ckpt, data]) if out
          else contextlib.nullcontext()) as folder, \
            bar(total, f"evaluate {split}", unit="window", enabled=progress) as windows:
        if folder is not None:
            (folder / "pred").mkdir()
        for i in range(len(scenes)):
            s = scenes[i]
            if "mask" not in s:
                raise GlcnetError(f"{ds.root}: scene {s['name']} in split {split!r} has no mask")
            windows.set_postfix_str(f"{s['name']} ({i + 1}/{len(scenes)})")
            pred = sliding_classes(model_fn, s["image"], window=cfg.window, stride=cfg.stride,
                                   batch_size=cfg.batch_size, blend=cfg.blend, tta=cfg.tta, device=dev,
                                   on_windows=windows.update).cpu()  # [H, W]
            scene_cm = confusion_matrix(pred, s["mask"], k, ds.ignore_index)
            cm += scene_cm
            m = compute_metrics(scene_cm, classes)
            per_scene[s["name"]] = {key: m[key] for key in ("oa", "kappa", "miou", "mean_f1", "pixels")}
            if cfg.isprs and "eval_mask" in s:
                has_isprs = True
                cm_isprs += confusion_matrix(pred, s["eval_mask"], k, ds.ignore_index)
            if folder is not None:
                image, mask, pred_np = s["image"].numpy(), s["mask"].numpy(), pred.numpy()
                title = f"{s['name']}: Kappa {100 * m['kappa']:.1f}, mIoU {100 * m['miou']:.1f} (%)"
                scene_figure(image, mask, pred_np, classes, meta["colors"], ds.bands, folder / f"{s['name']}.png",
                             title)
                step = display_step(pred_np.shape)
                class_map_png(pred_np[::step, ::step], meta["colors"], folder / "pred" / f"{s['name']}.png")
                if len(shown) < PAGE_SCENES:
                    img, truth = scene_images(image, mask, meta["colors"], ds.bands)
                    shown.append((s["name"], img, truth, file_uri(folder / "pred" / f"{s['name']}.png")))
        metrics = {"split": split, "data": str(data), "checkpoint": str(ckpt), "eval": to_dict(cfg),
                   **compute_metrics(cm, classes), "scenes": per_scene}
        if has_isprs:
            absent = [c for c in range(k) if int(cm_isprs[c].sum()) == 0]
            metrics["isprs"] = compute_metrics(cm_isprs, classes, exclude=absent)
        if folder is not None:
            write_report(folder, metrics, classes)
            evaluation_page(folder, metrics, meta, ds.bands, shown)
    log.info("evaluate %s: %d scene%s, %d windows, Kappa %.2f, mIoU %.2f (%%) in %s", split, len(scenes),
             "s" if len(scenes) != 1 else "", total, 100 * metrics["kappa"], 100 * metrics["miou"],
             duration(time.monotonic() - t0))
    return metrics


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet evaluate``."""
    parser.add_argument("--ckpt", required=True, help="model.pt written by glcnet finetune")
    parser.add_argument("--data", help="prepared data set (default: the one the model was fine-tuned on)")
    parser.add_argument("--split", default="test", help="scenes to evaluate: test (default) or val")
    parser.add_argument("--out", help="report folder (default: CKPT_DIR/eval_SPLIT)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    add_inference_args(parser)
    parser.add_argument("--no-isprs", action="store_true", help="skip the ISPRS-convention metrics")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet evaluate``; returns the exit status."""
    cfg = EvalConfig(window=args.window, stride=args.stride, blend=args.blend, tta=args.tta,
                     batch_size=args.batch_size, isprs=not args.no_isprs)
    out = Path(args.out) if args.out else Path(args.ckpt).resolve().parent / f"eval_{args.split}"
    m = run(args.ckpt, args.data, args.split, cfg, out, device=args.device, overwrite=args.overwrite,
            value_range=args.value_range)
    print(f"{args.split}: OA {100 * m['oa']:.2f}  Kappa {100 * m['kappa']:.2f}  mIoU {100 * m['miou']:.2f}  "
          f"mean F1 {100 * m['mean_f1']:.2f}  ({m['pixels']} px)")
    if "isprs" in m:
        i = m["isprs"]
        print(f"ISPRS convention: OA {100 * i['oa']:.2f}  Kappa {100 * i['kappa']:.2f}  mIoU {100 * i['miou']:.2f}  "
              f"mean F1 {100 * i['mean_f1']:.2f}")
    print(f"report: {out / 'report.html'}")
    return 0
