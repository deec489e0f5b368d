"""Raster readers, scaling and mask decoding on real and generated files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from glcnet.data.formats import decode_colors, decode_index, read_legend
from glcnet.data.raster import read_mask, read_raster, scale
from glcnet.errors import GlcnetError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def test_potsdam_rgbir_reads_four_bands(shared_data):
    path = shared_data / "isprs/potsdam_rgbir/train_RGBIR/top_potsdam_2_10_RGBIR__36.tif"
    arr, meta = read_raster(path)
    assert arr.shape == (4, 256, 256) and arr.dtype == np.uint8  # the "alpha" sample is NIR
    with Image.open(path) as im:  # uncompressed, one strip, samples interleaved
        (offset,), (nbytes,) = im.tag_v2[273], im.tag_v2[279]
        assert im.tag_v2[259] == 1 and im.tag_v2[338] == (1,)  # no compression; "associated alpha"
    pixels = np.frombuffer(path.read_bytes()[offset:offset + nbytes], np.uint8).reshape(256, 256, 4)
    assert np.array_equal(arr, np.moveaxis(pixels, -1, 0))  # raw values (Pillow would un-premultiply)
    assert meta["crs"] is None and meta["transform"] is None
    sel, _ = read_raster(path, bands=[3, 0])
    assert np.array_equal(sel, arr[[3, 0]])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_geotiff_dtype_and_georef(tmp_path, dtype):
    data = (np.arange(2 * 5 * 7).reshape(2, 5, 7) * 3).astype(dtype)
    path = tmp_path / "a.tif"
    tr = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
    with rasterio.open(path, "w", driver="GTiff", count=2, height=5, width=7, dtype=dtype,
                       crs="EPSG:32632", transform=tr) as dst:
        dst.write(data)
        dst.set_band_description(1, "red")
    arr, meta = read_raster(path)
    assert arr.dtype == np.dtype(dtype) and np.array_equal(arr, data)
    assert meta["transform"] == [0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0]
    assert "32632" in meta["crs"] and meta["descriptions"][0] == "red"


def test_png_jpeg_and_masks(tmp_path):
    yy, xx = np.mgrid[:20, :30]
    rgb = np.dstack([xx * 8, yy * 12, xx + yy + 100]).astype(np.uint8)  # smooth: JPEG-friendly
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    arr, _ = read_raster(tmp_path / "a.png")
    assert np.array_equal(arr, np.moveaxis(rgb, -1, 0))
    jpg, _ = read_raster(tmp_path / "a.jpg")
    pil = np.moveaxis(np.array(Image.open(tmp_path / "a.jpg")), -1, 0).astype(int)
    assert jpg.shape == (3, 20, 30) and np.abs(jpg - pil).mean() < 1.5  # decoders differ by a few levels
    Image.fromarray(rgb[..., 0]).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").shape == (20, 30)
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    assert np.array_equal(read_mask(tmp_path / "rgba.png"), np.moveaxis(rgb, -1, 0))  # alpha dropped


def test_corrupt_files_are_one_line_errors(tmp_path):
    (tmp_path / "text.tif").write_text("hello")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name, word in [("text.tif", "cannot read"), ("cut.png", "corrupt"), ("missing.png", "not found")]:
        with pytest.raises(GlcnetError, match=word) as e:
            read_raster(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GlcnetError, match="band index 5"):
        read_raster(tmp_path / "a.png", bands=[5])


def test_scale_formula():
    raw = np.array([[[0, 100, 200]], [[1000, 3000, 5000]]], np.uint16)  # [2, 1, 3]
    out = scale(raw, [[0, 200], [1000, 3000]])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[0, 0.5, 1]], [[0, 1, 1]]])  # clipped above hi
    with pytest.raises(GlcnetError, match="3 bands"):
        scale(np.zeros((3, 2, 2)), [[0, 1]] * 2)
    nodata = scale(np.array([[[np.nan, np.inf, -np.inf, 5.0]]], np.float32), [[0, 10]])  # NaN no-data
    np.testing.assert_array_equal(nodata, [[[0, 1, 0, 0.5]]])


def test_decode_colors_and_index(tmp_path):
    colors = [(255, 255, 255), (0, 0, 255)]
    rgb = np.zeros((3, 2, 3), np.uint8)
    rgb[:, 0, 0] = (255, 255, 255)
    rgb[:, 0, 1] = (0, 0, 255)  # rest black
    out = decode_colors(rgb, colors, tmp_path / "l.tif", ignore_colors=[(0, 0, 0)])
    assert out.tolist() == [[0, 1, 255], [255, 255, 255]]
    rgb[:, 1, 2] = (9, 9, 9)
    with pytest.raises(GlcnetError, match=r"l.tif: unknown label colour \(9, 9, 9\) \(1 pixels"):
        decode_colors(rgb, colors, tmp_path / "l.tif", ignore_colors=[(0, 0, 0)])

    m = np.array([[0, 1, 7, 255]], np.uint8)
    assert decode_index(m, tmp_path / "m", 7, reduce_zero_label=True).tolist() == [[255, 0, 6, 255]]
    assert decode_index(m, tmp_path / "m", None, threshold=7).tolist() == [[0, 0, 1, 1]]
    with pytest.raises(GlcnetError, match="mask value 7 is not a class"):
        decode_index(m, tmp_path / "m", 3)

    (tmp_path / "leg.yaml").write_text("- {name: water, color: [0, 0, 255]}\n- {name: x, color: [0, 0, 0], ignore: true}\n")
    assert read_legend(tmp_path / "leg.yaml") == (["water"], [(0, 0, 255)], [(0, 0, 0)])
    (tmp_path / "bad.csv").write_text("water,0,0\n")
    with pytest.raises(GlcnetError, match="bad.csv: not a valid legend"):
        read_legend(tmp_path / "bad.csv")
