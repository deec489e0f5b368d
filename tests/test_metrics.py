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


def test_continent_sized_counts_do_not_overflow():
    """10^10 pixels per class: ``sum rows_c cols_c`` is ~10^20, past int64; the metrics are those of the
    same matrix scaled down (every metric is invariant to scaling all counts)."""
    small = np.array([[70, 20, 10], [5, 80, 15], [10, 10, 80]], dtype=np.int64)
    big = compute_metrics(torch.as_tensor(small * 10**8))  # int64 counts, as confusion_matrix returns
    ref = compute_metrics(small)
    for key in ("oa", "kappa", "miou", "mean_f1", "mean_precision", "mean_recall"):
        assert big[key] == pytest.approx(ref[key], rel=1e-12), key
    assert big["pixels"] == int(small.sum()) * 10**8 and big["confusion"][0][0] == 70 * 10**8


def test_undefined_ratios_are_zero_and_names_must_match():
    # class 2 is predicted but never true: recall 0/0 -> 0 (as sklearn's zero_division=0), IoU 0
    m = compute_metrics(np.array([[5, 0, 1], [0, 4, 0], [0, 0, 0]]))
    c2 = m["per_class"]["2"]
    assert (c2["recall"], c2["iou"], c2["f1"], c2["precision"], c2["support"]) == (0.0, 0.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="2 class names for a 3x3 confusion matrix"):
        compute_metrics(np.eye(3), classes=["a", "b"])


def test_json_safe_replaces_non_finite_values_at_any_depth():
    obj = {"a": [1.0, float("nan"), (float("inf"), 2)], "b": {"c": -float("inf"), "d": "x"}, "e": 3}
    assert json_safe(obj) == {"a": [1.0, None, [None, 2]], "b": {"c": None, "d": "x"}, "e": 3}
    json.dumps(json_safe(obj), allow_nan=False)
