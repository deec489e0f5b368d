"""Reader of prepared folders: PreparedDataset, TileDataset, SceneDataset (prepared in-process)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from glcnet.data.prepare import prepare
from glcnet.data.prepared import PreparedDataset, SceneDataset, TileDataset
from glcnet.errors import GlcnetError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
H, W = 48, 80


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """5 uint16 scenes whose bands encode the pixel position: band0 = 100 + x, band1 = 100 + y,
    band2 = 100 + 10 * class; masks with an ignore stripe; 1 unlabeled scene."""
    root = tmp_path_factory.mktemp("prep")
    yy, xx = np.mgrid[:H, :W]
    cls = (xx // 20 + yy // 16) % 3
    for i in range(5):
        for d in ("images", "masks"):
            (root / "raw" / d).mkdir(parents=True, exist_ok=True)
        mask = cls.astype(np.uint8)
        mask[:, 70:] = 255  # ignore stripe
        img = np.stack([100 + xx, 100 + yy, 100 + 10 * cls]).astype(np.uint16)
        with rasterio.open(root / "raw/images" / f"s{i}.tif", "w", driver="GTiff", count=3, height=H, width=W,
                           dtype="uint16") as dst:
            dst.write(img)
        Image.fromarray(mask).save(root / "raw/masks" / f"s{i}.png")
    (root / "unl").mkdir()
    with rasterio.open(root / "unl/u.tif", "w", driver="GTiff", count=3, height=H, width=W, dtype="uint16") as dst:
        dst.write(np.full((3, H, W), 150, np.uint16))
    out = prepare("generic", root / "raw", root / "out", tile_size=32, stride=24, seed=0, classes=["a", "b", "c"],
                  unlabeled=root / "unl", split_ratios=(0.6, 0.2, 0.2))
    return PreparedDataset(out)


def test_metadata(prepared):
    ds = prepared
    assert ds.classes == ["a", "b", "c"] and ds.num_classes == 3 and ds.in_channels == 3
    assert ds.bands == ["R", "G", "B"] and ds.ignore_index == 255 and len(ds.colors) == 3
    assert [len(ds.scenes(s)) for s in ("train", "val", "test", "unlabeled")] == [3, 1, 1, 1]
    # 80 wide: x 0,24,48; 48 high: y 0,16 -> 6 tiles per scene
    assert len(ds.tiles("train")) == 18 and len(ds.tiles(("train", "unlabeled"))) == 24
    sub = json.loads((ds.root / "splits.json").read_text())["labelled"]
    assert [t.tile_id for t in ds.tiles("train", 0.1)] == sub["0.1"] and len(sub["0.1"]) == 2
    assert ds.fractions == [0.01, 0.05, 0.1, 0.2, 1.0]
    with pytest.raises(GlcnetError, match="no labelled subset 0.3"):
        ds.tiles("train", 0.3)
    lo, hi = ds.value_range[0]
    assert 100 <= lo < 101 and 178 < hi <= 179  # 0.5/99.5 percentiles of x = 0..79


def test_tile_samples(prepared):
    ds = prepared
    tiles = TileDataset(ds, ("train",))
    t = tiles.items[1]
    s = tiles[1]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 32, 32)
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (32, 32)
    raw = np.load(ds.root / "images" / f"{t.scene}.npy")[:, t.y:t.y + 32, t.x:t.x + 32].astype(np.float64)
    vr = np.array(ds.value_range)
    expect = np.clip((raw - vr[:, :1, None]) / (vr[:, 1:, None] - vr[:, :1, None]), 0, 1)
    np.testing.assert_allclose(s["image"].numpy(), expect, atol=1e-6)
    mask = np.load(ds.root / "masks" / f"{t.scene}.npy")[t.y:t.y + 32, t.x:t.x + 32]
    assert np.array_equal(s["mask"].numpy(), mask)


def _position(image, ds):
    """Invert the scaling of bands 0/1 -> pixel x, y."""
    (lo0, hi0), (lo1, hi1) = ds.value_range[:2]
    x = image[0].numpy() * (hi0 - lo0) + lo0 - 100
    y = image[1].numpy() * (hi1 - lo1) + lo1 - 100
    return np.rint(x).astype(int), np.rint(y).astype(int)


def test_crop_augment_and_unlabeled(prepared):
    ds = prepared
    torch.manual_seed(0)
    tiles = TileDataset(ds, ("train",), crop=20, augment=True)
    seen_rot = set()
    for i in range(12):
        s = tiles[i % len(tiles)]
        t = tiles.items[i % len(tiles)]
        x, y = _position(s["image"], ds)
        assert s["image"].shape == (3, 20, 20) and s["mask"].shape == (20, 20)
        assert t.x <= x.min() and x.max() < t.x + 32 and t.y <= y.min() and y.max() < t.y + 32  # inside the tile
        assert x.max() - x.min() == 19 and y.max() - y.min() == 19
        mask = np.load(ds.root / "masks" / f"{t.scene}.npy")
        assert np.array_equal(s["mask"].numpy(), mask[y, x])  # mask follows the image through flips/rotations
        seen_rot.add(bool(x[0, 1] == x[0, 0]))  # x constant along a row: rotated by 90/270
    assert seen_rot == {True, False}
    unl = TileDataset(ds, ("unlabeled",))
    assert (unl[0]["mask"] == 255).all() and len(unl) == 6
    with pytest.raises(GlcnetError, match="crop 40 is larger"):
        TileDataset(ds, ("train",), crop=40)
    with pytest.raises(GlcnetError, match="no tiles"):
        TileDataset(ds, ("nope",))


def test_pickle_and_workers(prepared):
    tiles = TileDataset(prepared, ("train",), fraction=1.0)
    tiles[0]  # opens memory maps
    clone = pickle.loads(pickle.dumps(tiles))
    assert clone.ds._arrays == {} and torch.equal(clone[0]["mask"], tiles[0]["mask"])
    loader = torch.utils.data.DataLoader(tiles, batch_size=4, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)


def test_scene_dataset(prepared):
    scenes = SceneDataset(prepared, "val")
    s = scenes[0]
    assert s["name"] == prepared.scenes("val")[0] and s["image"].shape == (3, H, W)
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (H, W) and "eval_mask" not in s
    assert "mask" not in SceneDataset(prepared, "unlabeled")[0]


def test_not_a_prepared_folder(tmp_path, prepared):
    with pytest.raises(GlcnetError, match="not a prepared data set"):
        PreparedDataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(GlcnetError, match="corrupt prepared data set"):
        PreparedDataset(tmp_path)
    (tmp_path / "dataset.json").write_text((prepared.root / "dataset.json").read_text())
    with pytest.raises(GlcnetError, match="splits.json: missing"):
        PreparedDataset(tmp_path)


def test_uint8_tiles_only_for_8bit_data(prepared, tmp_path):
    assert not prepared.is_8bit  # uint16 with percentile ranges: floats, whatever is asked
    assert TileDataset(prepared, ("train",), uint8=True)[0]["image"].dtype == torch.float32
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (tmp_path / "raw" / d).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / "raw/images" / f"s{i}.png")
        Image.fromarray(rng.integers(0, 2, (H, W), dtype=np.uint8)).save(tmp_path / "raw/masks" / f"s{i}.png")
    ds = PreparedDataset(prepare("generic", tmp_path / "raw", tmp_path / "out", tile_size=32, seed=0,
                                 classes=["a", "b"], split_ratios=(0.34, 0.33, 0.33)))
    assert ds.is_8bit
    raw, scaled = TileDataset(ds, ("train",), uint8=True)[1]["image"], TileDataset(ds, ("train",))[1]["image"]
    assert raw.dtype == torch.uint8 and torch.equal(raw.float() / 255, scaled)
