"""Pooled confusion-matrix metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, jaccard_score, precision_recall_fscore_support
from torchmetrics.classification import MulticlassConfusionMatrix

from glcnet.errors import GlcnetError
from glcnet.finetune.metrics import compute_metrics, confusion_matrix, json_safe


def pairs_from_cm(cm: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) pixel lists realising confusion matrix ``cm`` (rows = truth)."""
    target, pred = [], []
    for i, row in enumerate(cm):
        for j, n in enumerate(row):
            target += [i] * n
            pred += [j] * n
    return np.array(pred), np.array(target)


def test_hand_computed_three_classes():
    cm = [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    pred, target = pairs_from_cm(cm)
    got = confusion_matrix(pred, target, 3)
    assert got.tolist() == cm
    m = compute_metrics(got, ["a", "b", "c"])
    # N = 10, diag = 3 + 2 + 2; rows = cols = (4, 3, 3): pe = (16 + 9 + 9) / 100
    assert m["oa"] == pytest.approx(0.7)
    assert m["kappa"] == pytest.approx((0.7 - 0.34) / (1 - 0.34))
    # IoU: a 3/(3+1+1), b 2/(2+1+1), c 2/(2+1+1)
    assert [m["per_class"][c]["iou"] for c in "abc"] == pytest.approx([0.6, 0.5, 0.5])
    assert m["miou"] == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    # precision = TP / column sum, recall = TP / row sum
    assert [m["per_class"][c]["precision"] for c in "abc"] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert [m["per_class"][c]["recall"] for c in "abc"] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.75)
    assert m["mean_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert [m["per_class"][c]["support"] for c in "abc"] == [4, 3, 3]
    assert m["pixels"] == 10


def test_ignore_index_and_absent_class():
    # class 2 never occurs (truth nor prediction); class 1 is in the truth, never predicted
    target = np.array([0, 0, 0, 1, 255, 255])
    pred = np.array([0, 0, 1, 0, 2, 1])
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert cm.tolist() == [[2, 1, 0], [1, 0, 0], [0, 0, 0]]
    m = compute_metrics(cm)
    assert math.isnan(m["per_class"]["2"]["iou"]) and math.isnan(m["per_class"]["2"]["f1"])
    assert m["per_class"]["1"]["iou"] == 0.0 and m["per_class"]["1"]["precision"] == 0.0
    # IoU_0 = 2 / (2 + 1 + 1); mean over the two present classes only
    assert m["miou"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["oa"] == pytest.approx(0.5)
    # po = 0.5, pe = (3*3 + 1*1) / 16
    assert m["kappa"] == pytest.approx((0.5 - 10 / 16) / (1 - 10 / 16))
    text = json.dumps(json_safe(m), allow_nan=False)
    assert json.loads(text)["per_class"]["2"]["iou"] is None


def test_against_sklearn_and_torchmetrics_random():
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k, size=(4, 37, 41))
    target[rng.random(target.shape) < 0.1] = 255
    # a noisy predictor so that metrics are far from 0 and 1
    pred = np.where(rng.random(target.shape) < 0.6, np.clip(target, 0, k - 1), rng.integers(0, k, target.shape))
    cm = confusion_matrix(pred, target, k)
    tm = MulticlassConfusionMatrix(num_classes=k, ignore_index=255)
    assert torch.equal(tm(torch.as_tensor(pred), torch.as_tensor(target)), cm)
    m = compute_metrics(cm)
    keep = target != 255
    t, p = target[keep], pred[keep]
    assert m["kappa"] == pytest.approx(cohen_kappa_score(t, p))
    assert m["oa"] == pytest.approx((t == p).mean())
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=range(k), zero_division=0)
    iou = jaccard_score(t, p, labels=range(k), average=None)
    for c in range(k):
        pc = m["per_class"][str(c)]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["iou"]) == pytest.approx((prec[c], rec[c], f1[c], iou[c]))
    assert m["miou"] == pytest.approx(iou.mean())
    assert m["mean_f1"] == pytest.approx(f1.mean())


def test_bad_mask_value_is_a_one_line_error():
    with pytest.raises(GlcnetError, match="class 7"):
        confusion_matrix(np.zeros(3, int), np.array([0, 7, 1]), 6)
