"""``glcnet prepare`` / ``glcnet info`` through the real CLI: real samples, every format, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image

from conftest import call_cli, run_cli
from glcnet.data.prepared import PreparedDataset, TileDataset

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
ISPRS = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
TRANSFORM = Affine(0.05, 0.0, 366000.0, 0.0, -0.05, 5808000.0)  # 5 cm, UTM 33N


def write_tif(path: Path, arr: np.ndarray, crs: str | None = None) -> Path:
    """[C, H, W] array -> GeoTIFF (georeferenced when ``crs`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    geo = dict(crs=crs, transform=TRANSFORM) if crs else {}
    with rasterio.open(path, "w", driver="GTiff", count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                       dtype=arr.dtype, **geo) as dst:
        dst.write(arr)
    return path


def write_png(path: Path, arr: np.ndarray) -> Path:
    """[H, W] or [H, W, 3] uint8 -> PNG (or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def colour_label(idx: np.ndarray, colors=ISPRS) -> np.ndarray:
    """[H, W] indices (-1 = black) -> [3, H, W] colours."""
    lut = np.array(list(colors) + [(0, 0, 0)], np.uint8)  # index -1 -> black
    return np.moveaxis(lut[idx], -1, 0)


def load(out: Path):
    meta = json.loads((out / "dataset.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    return meta, splits


def no_leftovers(parent: Path, name: str = "out") -> bool:
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# ----------------------------------------------------------------------------- real samples
@pytest.fixture
def cli():
    """``glcnet prepare`` / ``info`` through the real entry point in this process (an interpreter
    start per call costs seconds; test_potsdam_rgbir_real runs the console command in its own)."""
    return call_cli


def test_potsdam_rgbir_real(shared_data, cli, tmp_path):
    out = tmp_path / "pots"
    p = run_cli("prepare", "potsdam", "--src", shared_data / "isprs/potsdam_rgbir", "--out", out)
    assert "prepared potsdam" in p.stdout
    meta, splits = load(out)
    assert meta["bands"] == ["R", "G", "B", "NIR"] and meta["dtype"] == "uint8"
    train, val = "top_potsdam_2_10_RGBIR__36", "top_potsdam_2_13_RGBIR__26"
    assert splits["scenes"]["train"] == [train] and splits["scenes"]["val"] == [val]  # from folder names
    image = np.load(out / "images" / f"{train}.npy")
    assert image.shape == (4, 256, 256)  # band 4 (TIFF "alpha") is NIR and is kept
    with rasterio.open(shared_data / "isprs/potsdam_rgbir/train_RGBIR" / f"{train}.tif") as src:
        assert np.array_equal(image, src.read())
    mask = np.load(out / "masks" / f"{train}.npy")
    counts = np.bincount(mask.ravel(), minlength=256)
    # data README: low vegetation 34,083; impervious 26,613; tree 4,840; nothing else
    assert (counts[2], counts[0], counts[3]) == (34083, 26613, 4840) and counts.sum() == 65536
    assert meta["class_counts"]["val"] == [17614, 0, 26600, 20843, 0, 479]
    rgb = np.array(Image.open(shared_data / "isprs/potsdam_rgbir/train_lbl" / f"{train}.tif"))
    y, x = np.argwhere((rgb == (0, 255, 0)).all(-1))[0]  # a tree pixel
    assert mask[y, x] == ISPRS.index((0, 255, 0)) == 3
    assert meta["value_range"] == [[0, 255]] * 4
    assert all(0 < m < 1 for m in meta["mean"]) and all(0 < s < 0.5 for s in meta["std"])

    info = cli("info", out).stdout
    assert "R,G,B,NIR" in info and "low_vegetation" in info and "52.01" in info  # 34083 / 65536


@pytest.mark.parametrize("folder,bands,counts", [
    # data README, values reduced by one: 0 -> ignore
    ("isprs/vaihingen_irrg_512", "NIR,R,G", {255: 21283, 0: 135362, 1: 79847, 2: 16532, 3: 4908, 4: 4212}),
    ("isprs/potsdam_rgb_512", "R,G,B", {255: 24696, 0: 100557, 1: 64023, 2: 34357, 3: 30670, 4: 7841}),
])
def test_isprs_crops_generic_reduce_zero_label(shared_data, cli, tmp_path, folder, bands, counts):
    out = tmp_path / "out"
    cli("prepare", "generic", "--src", shared_data / folder, "--out", out, "--reduce-zero-label",
        "--bands", bands, "--classes", "impervious,building,low_vegetation,tree,car,clutter", "--tile-size", "200",
        "--stride", "150")
    meta, splits = load(out)
    mask = np.load(out / "masks" / f"{meta['scenes'][0]['name']}.npy")
    values, n = np.unique(mask, return_counts=True)
    assert dict(zip(values.tolist(), n.tolist())) == counts
    assert meta["bands"] == bands.split(",")
    rows = (out / "tiles.csv").read_text().splitlines()[1:]
    xs = sorted({int(r.split(",")[3]) for r in rows})
    assert xs == [0, 150, 300, 312]  # stride 150, last window aligned to the 512 border


def test_loveda_real(shared_data, cli, tmp_path):
    out = tmp_path / "out"
    cli("prepare", "loveda", "--src", shared_data / "loveda", "--out", out)
    meta, splits = load(out)
    mask = np.load(out / "masks" / "0.npy")
    values, n = np.unique(mask, return_counts=True)
    # README 0.png: 1: 142,441; 2: 14,427; 3: 19,208; 4: 3,888; 7: 868,612 (indices shift by one)
    assert dict(zip(values.tolist(), n.tolist())) == {0: 142441, 1: 14427, 2: 19208, 3: 3888, 6: 868612}
    assert meta["classes"][6] == "agriculture" and len(meta["classes"]) == 7
    # 3 scenes, ratios 0.6/0.2/0.2 -> one scene per split, each tiled 4x4
    assert [len(splits["scenes"][s]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert len((out / "tiles.csv").read_text().splitlines()) == 1 + 3 * 16


@pytest.fixture
def roads(shared_data, tmp_path):
    """10 labelled EPFL road images (+ 2 unlabelled) copied into a generic layout."""
    src = tmp_path / "roads"
    for sub in ("images", "groundtruth"):
        (src / sub).mkdir(parents=True)
        for i in range(1, 11):
            shutil.copy(shared_data / "roads/training" / sub / f"satImage_{i:03d}.png", src / sub)
    (tmp_path / "unl").mkdir()
    for i in (1, 2):
        shutil.copy(shared_data / "roads/unlabeled" / f"test_{i}.png", tmp_path / "unl")
    return src


def _prepare_roads(cli, roads, out, seed):
    cli("prepare", "generic", "--src", roads, "--out", out, "--mask-threshold", "128", "--classes",
        "background,road", "--unlabeled", roads.parent / "unl", "--seed", seed, "--tile-size", "128",
        "--stride", "128")
    return load(out)


def test_roads_splits_subsets_seeds(cli, roads, tmp_path):
    meta, splits = _prepare_roads(cli, roads, tmp_path / "a", 0)
    scenes = splits["scenes"]
    assert scenes["unlabeled"] == ["test_1", "test_2"]
    assert [len(scenes[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    all_scenes = sum(scenes.values(), [])
    assert len(all_scenes) == len(set(all_scenes)) == 12  # every scene in exactly one split

    rows = [r.split(",") for r in (tmp_path / "a" / "tiles.csv").read_text().splitlines()[1:]]
    split_of = {sc: sp for sp, names in scenes.items() for sc in names}
    assert all(split_of[r[1]] == r[2] for r in rows)  # tiles inherit their scene's split
    train_ids = {int(r[0]) for r in rows if r[2] == "train"}
    assert len(train_ids) == 6 * 16  # 400 px: starts 0,128,256,272

    mask = np.load(tmp_path / "a" / "masks" / "satImage_001.npy")
    gt = np.array(Image.open(roads / "groundtruth" / "satImage_001.png"))
    assert np.array_equal(mask, (gt >= 128).astype(np.uint8))  # anti-aliased 0..237 -> 0/1
    assert not (tmp_path / "a" / "masks" / "test_1.npy").exists()

    sub = splits["labelled"]
    assert list(sub) == ["0.01", "0.05", "0.1", "0.2", "1.0"]
    sizes = [len(v) for v in sub.values()]
    n = len(sub["1.0"])  # train tiles with at least one labelled pixel
    assert n == len(train_ids)  # thresholded masks have no ignore pixels
    assert sizes == [max(1, int(np.ceil(f * n - 1e-9))) for f in (0.01, 0.05, 0.1, 0.2, 1.0)]
    for small, big in zip(sub.values(), list(sub.values())[1:]):
        assert set(small) <= set(big)  # nested
    assert set(sub["1.0"]) == train_ids

    _prepare_roads(cli, roads, tmp_path / "b", 0)
    for f in ("dataset.json", "splits.json", "tiles.csv", "masks/satImage_001.npy", "images/test_2.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    _, other = _prepare_roads(cli, roads, tmp_path / "c", 1)
    assert other["scenes"]["train"] != scenes["train"] or other["labelled"]["0.1"] != sub["0.1"]
    assert other["labelled"]["0.2"] != sub["0.2"]


# ----------------------------------------------------------------------------- every format, tiny files
def _potsdam_official(root: Path, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, 6, (64, 64))
    idx[10, 20] = 1  # building
    eroded = idx.copy()
    eroded[30, :] = -1  # boundary line (black)
    for sid in ("2_10", "2_11", "2_12", "2_13"):
        image = np.stack([np.full((64, 64), 10 * (b + 1), np.uint8) for b in range(4)])  # R=10 G=20 B=30 NIR=40
        write_tif(root / "4_Ortho_RGBIR" / f"top_potsdam_{sid}_RGBIR.tif", image, crs="EPSG:32633")
        write_tif(root / "5_Labels_all" / f"top_potsdam_{sid}_label.tif", colour_label(idx))
        write_tif(root / "5_Labels_all_noBoundary" / f"top_potsdam_{sid}_label_noBoundary.tif",
                  colour_label(eroded))
    return idx


def test_potsdam_official_layout(cli, tmp_path):
    idx = _potsdam_official(tmp_path / "raw", np.random.default_rng(0))
    out = tmp_path / "out"
    cli("prepare", "potsdam", "--src", tmp_path / "raw", "--out", out, "--tile-size", "32",
        "--val-scenes", "2_11", "--select-bands", "NIR,R,G")
    meta, splits = load(out)
    assert splits["scenes"]["train"] == ["top_potsdam_2_10", "top_potsdam_2_12"]
    assert splits["scenes"]["val"] == ["top_potsdam_2_11"] and splits["scenes"]["test"] == ["top_potsdam_2_13"]
    assert meta["bands"] == ["NIR", "R", "G"]
    image = np.load(out / "images" / "top_potsdam_2_10.npy")
    assert image[:, 0, 0].tolist() == [40, 10, 20]
    sc = meta["scenes"][0]
    assert "32633" in sc["crs"] and sc["transform"] == [0.05, 0.0, 366000.0, 0.0, -0.05, 5808000.0]
    mask = np.load(out / "masks" / "top_potsdam_2_10.npy")
    assert np.array_equal(mask, idx) and mask[10, 20] == 1
    ev = np.load(out / "eval_masks" / "top_potsdam_2_10.npy")
    expect = np.where(idx == 5, 255, idx)  # clutter -> ignore
    expect[30, :] = 255  # eroded boundary -> ignore
    assert np.array_equal(ev, expect) and sc["has_eval_mask"]

    cli("prepare", "potsdam", "--src", tmp_path / "raw", "--out", out, "--tile-size", "32",
        "--labels", "eroded", "--overwrite")
    meta, splits = load(out)
    assert len(splits["scenes"]["val"]) == 2 and len(splits["scenes"]["train"]) == 1  # default: 2 val scenes by seed
    mask = np.load(out / "masks" / "top_potsdam_2_10.npy")
    assert (mask[30] == 255).all() and np.array_equal(mask[:30], idx[:30])


def test_vaihingen_with_dsm(cli, tmp_path):
    raw, rng = tmp_path / "raw" / "ISPRS_semantic_labeling_Vaihingen", np.random.default_rng(1)  # official zip
    idx = rng.integers(0, 6, (48, 40))
    for area in (1, 2, 3):
        write_tif(raw / "top" / f"top_mosaic_09cm_area{area}.tif", rng.integers(0, 256, (3, 48, 40), dtype=np.uint8))
        write_tif(raw / "gts_for_participants" / f"top_mosaic_09cm_area{area}.tif", colour_label(idx))
        dsm = rng.normal(260, 5, (1, 48, 40)).astype(np.float32)
        dsm[0, :5, :7] = np.nan  # no-data of a float raster
        write_tif(raw / "dsm" / f"dsm_09cm_matching_area{area}.tif", dsm)
    out = tmp_path / "out"
    cli("prepare", "vaihingen", "--src", raw, "--out", out, "--tile-size", "32", "--dsm", "--val-scenes", "area3")
    meta, splits = load(out)
    assert np.isfinite(meta["mean"]).all() and np.isfinite(meta["std"]).all()
    tile = TileDataset(PreparedDataset(out), ("train",))[0]["image"]  # the window at (0, 0): NaN no-data -> 0
    assert torch.isfinite(tile).all() and (tile[3, :5, :7] == 0).all()
    assert meta["bands"] == ["NIR", "R", "G", "DSM"] and meta["dtype"] == "float32"
    assert splits["scenes"] == {"train": ["top_mosaic_09cm_area1"], "val": ["top_mosaic_09cm_area3"],
                                "test": ["top_mosaic_09cm_area2"], "unlabeled": []}
    assert meta["value_range"][:3] == [[0, 255]] * 3
    lo, hi = meta["value_range"][3]
    assert 240 < lo < 260 < hi < 280  # DSM: 0.5 / 99.5 percentiles of the train scene
    labels = idx.copy()
    labels[:5, :7] = 255  # no-data in a band (the DSM's NaN): left out of losses and metrics
    assert np.array_equal(np.load(out / "masks" / "top_mosaic_09cm_area1.npy"), labels)
    assert not (out / "eval_masks").exists()


def test_loveda_official_layout(cli, tmp_path):
    raw, rng = tmp_path / "raw", np.random.default_rng(4)
    for split, domain, ids in (("Train", "Urban", (1366, 1367)), ("Train", "Rural", (0,)), ("Val", "Rural", (2522,)),
                               ("Test", "Urban", (4191,))):
        for i in ids:
            write_png(raw / split / domain / "images_png" / f"{i}.png", rng.integers(0, 256, (32, 32, 3), np.uint8))
            if split != "Test":  # LoveDA test masks are not public
                write_png(raw / split / domain / "masks_png" / f"{i}.png", np.full((32, 32), i % 8, np.uint8))
    out = tmp_path / "out"
    p = cli("prepare", "loveda", "--src", raw, "--out", out, "--tile-size", "32", "--dsm", check=False)
    assert p.returncode == 2 and "option --dsm does not apply" in p.stderr
    cli("prepare", "loveda", "--src", raw, "--out", out, "--tile-size", "32")
    meta, splits = load(out)
    assert splits["scenes"] == {"train": ["0", "1366", "1367"], "val": ["2522"], "test": [], "unlabeled": ["4191"]}
    assert (np.load(out / "masks" / "0.npy") == 255).all()  # 0 = no-data
    assert (np.load(out / "masks" / "1367.npy") == 6).all()  # value 1367 % 8 = 7 (agriculture) -> class 6
    assert splits["labelled"]["1.0"] == [1, 2]  # the all-no-data tile of scene 0 is not a labelled tile


def test_deepglobe_binarised_colours(cli, tmp_path):
    raw = tmp_path / "raw" / "train"
    colors = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    rng = np.random.default_rng(2)
    for i in range(3):
        idx = rng.integers(-1, 6, (64, 64))
        rgb = np.moveaxis(colour_label(idx, colors), 0, -1).astype(np.int16)
        noisy = np.clip(rgb + np.where(rgb > 0, -3, 3), 0, 255).astype(np.uint8)  # not exactly 0/255
        write_png(raw / f"{i}_mask.png", noisy)
        write_png(raw / f"{i}_sat.jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        if i == 0:
            first = np.where(idx < 0, 255, idx)
    out = tmp_path / "out"
    cli("prepare", "deepglobe", "--src", tmp_path / "raw", "--out", out, "--tile-size", "64")
    meta, _ = load(out)
    assert meta["classes"][0] == "urban" and meta["colors"][4] == [0, 0, 255]
    assert np.array_equal(np.load(out / "masks" / "0.npy"), first)  # black "unknown" -> 255


def test_generic_legend_and_uint16(cli, tmp_path):
    raw, rng = tmp_path / "raw", np.random.default_rng(3)
    legend = tmp_path / "legend.csv"
    legend.write_text("name,r,g,b,ignore\nwater,0,0,255,0\nland,0,255,0,0\nnodata,0,0,0,1\n")
    for i in range(2):
        idx = rng.integers(-1, 2, (40, 40))
        write_png(raw / "masks" / f"s{i}.png", np.moveaxis(colour_label(idx, [(0, 0, 255), (0, 255, 0)]), 0, -1))
        write_tif(raw / "images" / f"s{i}.tif", rng.integers(100, 4000, (5, 40, 40), dtype=np.uint16))
    out = tmp_path / "out"
    cli("prepare", "generic", "--src", raw, "--out", out, "--legend", legend, "--tile-size", "40",
        "--split-ratios", "1,0,0", "--bands", "B1,B2,B3,B4,B5", "--select-bands", "B5,B1")
    meta, splits = load(out)
    assert meta["classes"] == ["water", "land"] and meta["dtype"] == "uint16" and meta["bands"] == ["B5", "B1"]
    assert splits["scenes"]["train"] == ["s0", "s1"]
    for lo, hi in meta["value_range"]:
        assert 100 <= lo < 200 and 3900 < hi <= 4000  # percentiles of uint16 bands
    assert all(0.4 < m < 0.6 for m in meta["mean"])


# ----------------------------------------------------------------------------- bad inputs
def _generic(root: Path, n: int = 2, size=(64, 64), mask_size=None) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / "images" / f"s{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        write_png(root / "masks" / f"s{i}.png", rng.integers(0, 3, mask_size or size, dtype=np.uint8))
    return root


def _grsim(root: Path, label: np.ndarray, bands: int = 4) -> Path:
    write_tif(root / "train_RGBIR" / "t.tif", np.zeros((bands, 32, 32), np.uint8))
    write_tif(root / "train_lbl" / "t.tif", label)
    return root


def _corrupt(root):
    _generic(root, 3)
    (root / "images" / "s1.png").write_bytes(b"not an image at all")
    return "s1.png", "cannot read"


def _truncated(root):
    _generic(root, 3)
    data = (root / "images" / "s2.png").read_bytes()
    (root / "images" / "s2.png").write_bytes(data[: len(data) // 2])
    return "s2.png", "corrupt"


def _size_mismatch(root):
    _generic(root, 1, size=(64, 64), mask_size=(64, 60))
    return "s0.png", "mask is 60x64"


def _unknown_colour(root):
    idx = np.zeros((32, 32), int)
    label = colour_label(idx)
    label[:, 5, 7] = (255, 0, 255)
    _grsim(root, label)
    return "t.tif", "unknown label colour (255, 0, 255)"


def _band_count(root):
    _grsim(root, colour_label(np.zeros((32, 32), int)), bands=3)
    return "t.tif", "has 3 bands, expected 4"


def _empty(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return "src", "no images found"


def _tile_too_big(root):
    _generic(root, 1, size=(40, 50))
    return "s0.png", "smaller than the tile size 64"


def _duplicate(root):
    _generic(root, 1)
    write_tif(root / "images" / "s0.tif", np.zeros((3, 64, 64), np.uint8))
    return "s0", "duplicate scene name"


def _bad_mask_value(root):
    _generic(root, 1)
    write_png(root / "masks" / "s0.png", np.full((64, 64), 7, np.uint8))
    return "s0.png", "mask value 7 is not a class"


@pytest.mark.parametrize("make", [_corrupt, _truncated, _size_mismatch, _unknown_colour, _band_count, _empty,
                                  _tile_too_big, _duplicate, _bad_mask_value], ids=lambda f: f.__name__[1:])
def test_bad_input(cli, tmp_path, make):
    src = tmp_path / "src"
    fname, problem = make(src)
    fmt = "potsdam" if (src / "train_lbl").exists() else "generic"
    extra = ["--classes", "a,b,c"] if make is _bad_mask_value else []
    p = cli("prepare", fmt, "--src", src, "--out", tmp_path / "out", "--tile-size", "64" if fmt == "generic" else "32",
            *extra, check=False)
    err = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2, p.stderr
    assert err.startswith("error: ") and fname in err and problem in err, err
    assert "Traceback" not in p.stderr
    assert no_leftovers(tmp_path)


def test_existing_output_and_not_prepared(cli, tmp_path):
    src = _generic(tmp_path / "src", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    p = cli("prepare", "generic", "--src", src, "--out", tmp_path / "out", "--tile-size", "32", check=False)
    assert p.returncode == 2 and "not made by glcnet prepare" in p.stderr and (tmp_path / "out" / "notes.txt").exists()
    p = cli("info", tmp_path / "out", check=False)
    assert p.returncode == 2 and "not a prepared data set" in p.stderr
