"""Scene splits, tile windows and nested labelled subsets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glcnet.data.formats import POTSDAM_TEST, POTSDAM_TRAIN, VAIHINGEN_TEST, VAIHINGEN_TRAIN
from glcnet.data.splits import assign_splits, labelled_subsets, split_counts, tile_windows
from glcnet.errors import GlcnetError


def test_standard_split_lists():
    assert len(POTSDAM_TRAIN) == 24 and len(POTSDAM_TEST) == 14 and not set(POTSDAM_TRAIN) & set(POTSDAM_TEST)
    assert len(VAIHINGEN_TRAIN) == 16 and len(VAIHINGEN_TEST) == 17
    assert not set(VAIHINGEN_TRAIN) & set(VAIHINGEN_TEST)


@pytest.mark.parametrize("h,w,tile,stride", [(512, 512, 256, 256), (400, 300, 128, 100), (100, 256, 100, 37),
                                              (256, 256, 256, 64)])
def test_tile_windows_cover_scene(h, w, tile, stride):
    wins = tile_windows(h, w, tile, stride)
    cover = np.zeros((h, w), int)
    for x, y in wins:
        assert 0 <= x <= w - tile and 0 <= y <= h - tile
        cover[y:y + tile, x:x + tile] += 1
    assert cover.min() >= 1  # whole scene covered
    xs = sorted({x for x, _ in wins})
    assert xs[0] == 0 and xs[-1] == w - tile  # last column aligned to the border
    assert all(b - a <= stride for a, b in zip(xs, xs[1:]))
    assert len(wins) == len(set(wins))


@pytest.mark.parametrize("n,ratios,expect", [(3, (0.6, 0.2, 0.2), [1, 1, 1]), (10, (0.6, 0.2, 0.2), [6, 2, 2]),
                                             (1, (0.6, 0.2, 0.2), [1, 0, 0]), (7, (1, 0, 0), [7, 0, 0]),
                                             (5, (0.8, 0.2, 0), [4, 1, 0]), (2, (0.6, 0.2, 0.2), [1, 1, 0])])
def test_split_counts(n, ratios, expect):
    assert split_counts(n, ratios) == expect


def test_split_counts_bad_ratios():
    with pytest.raises(GlcnetError, match="split-ratios"):
        split_counts(3, (0.5, -0.1, 0.6))


def _scenes(n, split=None):
    return {f"s{i:02d}": (split, True) for i in range(n)}


def test_random_split_disjoint_and_seeded():
    scenes = {**_scenes(20), "u": (None, False)}
    a = assign_splits(scenes, seed=0)
    assert a == assign_splits(scenes, seed=0)
    assert a != assign_splits(scenes, seed=1)
    assert a["u"] == "unlabeled" and set(a) == set(scenes)  # each scene exactly one split
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [12, 4, 4]


def test_known_split_val_scenes_and_default():
    scenes = {f"top_potsdam_{s}": ("train", True) for s in POTSDAM_TRAIN}
    scenes.update({f"top_potsdam_{s}": ("test", True) for s in POTSDAM_TEST})
    a = assign_splits(scenes, seed=0, default_val=2)
    val = [n for n, s in a.items() if s == "val"]
    assert len(val) == 2 and all(n[len("top_potsdam_"):] in POTSDAM_TRAIN for n in val)
    assert sum(s == "test" for s in a.values()) == 14 and sum(s == "train" for s in a.values()) == 22
    b = assign_splits(scenes, seed=0, val_scenes=["2_10", "top_potsdam_7_12"])
    assert sorted(n for n, s in b.items() if s == "val") == ["top_potsdam_2_10", "top_potsdam_7_12"]
    with pytest.raises(GlcnetError, match="2_13.*no train scene"):
        assign_splits(scenes, val_scenes=["2_13"])  # a test scene


def test_split_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"s00": "test", "s01": "train"}))
    assert assign_splits(_scenes(2), split_file=f) == {"s00": "test", "s01": "train"}
    with pytest.raises(GlcnetError, match="s.json: scene 's02' has no split"):
        assign_splits(_scenes(3), split_file=f)
    f.write_text(json.dumps({"s00": "tain", "s01": "train"}))
    with pytest.raises(GlcnetError, match="split 'tain'"):
        assign_splits(_scenes(2), split_file=f)


def test_labelled_subsets_nested_sizes_seeded():
    ids = list(range(100, 337))  # 237 tiles
    fr = (0.01, 0.05, 0.1, 0.2, 1.0)
    a = labelled_subsets(ids, fr, seed=0)
    assert [len(a[k]) for k in ("0.01", "0.05", "0.1", "0.2", "1.0")] == [3, 12, 24, 48, 237]
    keys = list(a)
    for small, big in zip(keys, keys[1:]):
        assert set(a[small]) < set(a[big])
    assert a == labelled_subsets(ids, fr, seed=0)
    assert a["0.1"] != labelled_subsets(ids, fr, seed=1)["0.1"]
    assert len(labelled_subsets(list(range(30)), [0.1])["0.1"]) == 3  # 0.1 * 30 is not 4 by rounding
    assert labelled_subsets([5], [0.01]) == {"0.01": [5]}  # at least one tile
    assert len(labelled_subsets(ids, [0.5])["0.5"]) == 119
    with pytest.raises(GlcnetError, match="not in"):
        labelled_subsets(ids, [0.0])
