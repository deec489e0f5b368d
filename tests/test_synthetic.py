"""Synthetic aerial-like scenes: shapes, classes, spectra, determinism, readable GeoTIFFs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from PIL import Image

from glcnet.data.synthetic import (
    BANDS,
    CLASSES,
    IMPERVIOUS,
    LOW_VEG,
    TREE,
    WATER,
    generate_scenes,
    make_scene,
    value_noise,
)
from glcnet.errors import GlcnetError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("syn") / "raw", n_scenes=6, size=256, seed=0)


def test_scene_shapes_and_dtypes():
    img, mask = make_scene(128, seed=3)
    assert img.shape == (4, 128, 128) and img.dtype == np.uint8
    assert mask.shape == (128, 128) and mask.dtype == np.uint8
    assert mask.max() < len(CLASSES)
    assert img.std() > 10  # not a flat image


def test_deterministic_by_seed():
    a, ma = make_scene(128, seed=5)
    b, mb = make_scene(128, seed=5)
    c, mc = make_scene(128, seed=6)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)


def test_value_noise_range_and_smoothness():
    n = value_noise(np.random.default_rng(0), 64, 16.0)
    assert n.shape == (64, 64) and n.min() >= -1 and n.max() <= 1
    # neighbouring pixels are far more alike than random pairs (spatially correlated texture)
    assert np.abs(np.diff(n, axis=1)).mean() < 0.5 * np.abs(n - n[::-1, ::-1]).mean()


def test_files_classes_and_spectra(scenes):
    images = sorted((scenes / "images").glob("*.tif"))
    masks = sorted((scenes / "masks").glob("*.png"))
    assert len(images) == len(masks) == 6
    assert [p.stem for p in images] == [p.stem for p in masks]
    assert "SYNTHETIC" in (scenes / "README.txt").read_text()
    seen = np.zeros(len(CLASSES), bool)
    nir = {k: [] for k in (IMPERVIOUS, LOW_VEG, TREE, WATER)}
    layouts = set()
    for ip, mp in zip(images, masks):
        with rasterio.open(ip) as src:
            assert src.count == 4 and src.dtypes == ("uint8",) * 4
            assert src.crs is not None and src.crs.to_epsg() == 32633
            assert src.transform.a > 0 and src.transform.e < 0
            assert list(src.descriptions) == BANDS
            img = src.read()  # [4, H, W]
        mask = np.array(Image.open(mp))
        assert mask.shape == img.shape[1:] == (256, 256)
        seen[np.unique(mask)] = True
        layouts.add(mask.tobytes())
        for k in nir:
            nir[k].append(img[3][mask == k])
    assert seen.all(), f"classes never generated: {[c for c, s in zip(CLASSES, seen) if not s]}"
    assert len(layouts) == 6
    mean = {k: np.concatenate(v).mean() for k, v in nir.items()}
    assert mean[LOW_VEG] > mean[IMPERVIOUS] + 40 and mean[TREE] > mean[IMPERVIOUS] + 20
    assert mean[WATER] < 0.5 * mean[IMPERVIOUS]


def test_three_bands_and_bad_input(tmp_path):
    out = generate_scenes(tmp_path / "rgb", n_scenes=1, size=64, bands=3, n_unlabeled=2)
    with rasterio.open(next((out / "images").glob("*.tif"))) as src:
        assert src.count == 3
    assert [p.name for p in sorted((out / "unlabeled").iterdir())] == ["scene_01.tif", "scene_02.tif"]
    assert [p.name for p in (out / "masks").iterdir()] == ["scene_00.png"]
    with pytest.raises(GlcnetError, match="already holds the output of an earlier glcnet synthetic"):
        generate_scenes(out, n_scenes=1, size=64)
    with pytest.raises(GlcnetError, match="bands must be 3 or 4"):
        generate_scenes(tmp_path / "b5", n_scenes=1, size=64, bands=5)
    with pytest.raises(GlcnetError, match="size must be >= 64"):
        make_scene(32)
