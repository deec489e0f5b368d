"""Segmentation metrics from ONE confusion matrix pooled over every evaluated pixel.

``cm[i, j]`` counts pixels of true class ``i`` predicted as class ``j``; pixels whose
label is ``ignore_index`` are left out. With ``N = sum(cm)``, ``TP_c = cm[c, c]``,
``FP_c = sum_i cm[i, c] - TP_c``, ``FN_c = sum_j cm[c, j] - TP_c``::

    OA        = sum_c TP_c / N
    Kappa     = (po - pe) / (1 - pe),  po = OA,  pe = sum_c rows_c * cols_c / N^2
    IoU_c     = TP_c / (TP_c + FP_c + FN_c)
    P_c       = TP_c / (TP_c + FP_c)      R_c = TP_c / (TP_c + FN_c)
    F1_c      = 2 P_c R_c / (P_c + R_c) = 2 TP_c / (2 TP_c + FP_c + FN_c)

Absent classes: a class that occurs neither in the ground truth nor in the prediction
gets NaN for every per-class value and is left out of the means (mIoU, mean F1, ...).
A class that occurs in only one of them has IoU = F1 = 0, and the undefined one of P/R
(0/0) is 0, as scikit-learn's ``zero_division=0``. Means are plain (macro) averages.
Kappa is NaN when ``pe == 1`` (one class everywhere), as in scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from glcnet.errors import GlcnetError


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                     num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Pooled confusion matrix ``[K, K]`` (int64, rows = truth): torchmetrics'
    ``multiclass_confusion_matrix``, the one validation also accumulates
    (:class:`~glcnet.finetune.task.SegmentationTask`), after a check that turns bad masks
    into one-line errors.

    ``pred`` and ``target`` are class indices of any (equal) shape; ``target == ignore_index``
    pixels are skipped. A target value outside ``0..K-1`` (and not ignore) is an error.
    """
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long()
    if pred.shape != target.shape:
        raise GlcnetError(f"prediction has {pred.numel()} pixels but the mask has {target.numel()}")
    labelled = target[target != ignore_index]
    if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= num_classes):
        raise GlcnetError(f"mask holds class {int(labelled.max())} but there are only {num_classes} classes "
                          f"(ignore index {ignore_index})")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"prediction outside 0..{num_classes - 1}")
    return multiclass_confusion_matrix(pred, target, num_classes, ignore_index=ignore_index,
                                       validate_args=False).cpu()


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a / b with 0/0 -> 0."""
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def compute_metrics(cm: torch.Tensor | np.ndarray, classes: Sequence[str] | None = None,
                    exclude: Sequence[int] = ()) -> dict[str, Any]:
    """All metrics of one pooled confusion matrix ``[K, K]`` (rows = truth), see module doc.

    ``exclude``: class indices left out of the means (their per-class values are still
    reported), e.g. clutter under the ISPRS convention.

    Returns ``oa``, ``kappa``, ``miou``, ``mean_f1``, ``mean_precision``, ``mean_recall``,
    ``pixels``, ``per_class`` (name -> ``iou``, ``precision``, ``recall``, ``f1``, ``support``)
    and ``confusion`` (the matrix as nested lists). Undefined values are ``float('nan')``.
    """
    cm = np.asarray(torch.as_tensor(cm).cpu(), dtype=np.float64)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    n = cm.sum()
    tp = np.diag(cm)
    rows, cols = cm.sum(1), cm.sum(0)  # truth / prediction counts per class
    fp, fn = cols - tp, rows - tp
    present = (rows + cols) > 0
    counted = present & ~np.isin(np.arange(k), list(exclude))  # classes in the means
    nan = float("nan")

    def per(values: np.ndarray) -> np.ndarray:
        return np.where(present, values, np.nan)

    iou = per(_div(tp, tp + fp + fn))
    precision = per(_div(tp, tp + fp))
    recall = per(_div(tp, tp + fn))
    f1 = per(_div(2 * tp, 2 * tp + fp + fn))
    oa = float(tp.sum() / n) if n > 0 else nan
    pe = float((rows * cols).sum() / n**2) if n > 0 else nan
    kappa = (oa - pe) / (1 - pe) if n > 0 and pe < 1 else nan

    def mean(values: np.ndarray) -> float:
        return float(values[counted].mean()) if counted.any() else nan

    return {
        "oa": oa,
        "kappa": float(kappa),
        "miou": mean(iou),
        "mean_f1": mean(f1),
        "mean_precision": mean(precision),
        "mean_recall": mean(recall),
        "pixels": int(n),
        "excluded_from_means": [names[c] for c in exclude],
        "per_class": {
            name: {"iou": float(iou[c]), "precision": float(precision[c]), "recall": float(recall[c]),
                   "f1": float(f1[c]), "support": int(rows[c])}
            for c, name in enumerate(names)
        },
        "confusion": cm.astype(np.int64).tolist(),
    }


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
