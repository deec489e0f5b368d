"""``glcnet select``: strategies on known geometry, subset files by scene and window, the CLI, and
fine-tuning / experiments on a selected subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import call_cli
from glcnet.data.prepared import PreparedDataset, TileDataset
from glcnet.data.subsets import read_subset
from glcnet.errors import GlcnetError
from glcnet.select import budget_count
from glcnet.select.strategies import STRATEGIES, select

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(sizes=(40, 20, 10), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters on the unit sphere (8-d): points and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(sizes)] * 3
    x = np.concatenate([c + 0.05 * rng.standard_normal((n, 8)) for c, n in zip(centres, sizes)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_returns_distinct_indices_deterministically(strategy):
    x, _ = blobs()
    a, b = select(x, 7, strategy, seed=3), select(x, 7, strategy, seed=3)
    assert a == b and len(set(a)) == 7 and all(0 <= i < len(x) for i in a)


@pytest.mark.parametrize("strategy", ["kcenter", "typiclust", "probcover"])
def test_diverse_strategies_cover_every_cluster(strategy):
    """Three clusters, a budget of three: one tile of each (random misses one most of the time)."""
    x, labels = blobs()
    assert sorted(labels[select(x, 3, strategy)]) == [0, 1, 2]


def test_typiclust_takes_the_most_typical_point_of_the_largest_cluster_first():
    x, labels = blobs()
    first = select(x, 3, "typiclust")[0]
    assert labels[first] == 0  # the largest cluster
    members = np.flatnonzero(labels == 0)
    d = np.linalg.norm(x[members][:, None] - x[members][None], axis=2)
    typ = 1 / np.sort(d, axis=1)[:, 1:21].mean(1)
    assert first == members[np.argmax(typ)]


def test_kcenter_takes_the_farthest_point_next():
    x = np.array([[0, 0], [1, 0], [0.1, 0], [5, 5], [0.2, 0.1]], dtype=np.float32)
    order = select(x, 3, "kcenter")
    d0 = np.linalg.norm(x - x[order[0]], axis=1)
    assert order[1] == int(np.argmax(d0)) == 3


def test_budgets_and_errors():
    assert budget_count("1%", 1750) == 18 and budget_count("18", 1750) == 18  # prepare's 1% of 1,750 tiles
    for bad in ("0", "2000", "150%", "one"):
        with pytest.raises(GlcnetError, match="--budget"):
            budget_count(bad, 1750)
    with pytest.raises(GlcnetError, match="unknown strategy"):
        select(np.eye(3, dtype=np.float32), 1, "uncertainty")


# ----------------------------------------------------------------------------- files and the CLI
@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    from glcnet.data.prepare import prepare
    from glcnet.data.synthetic import BANDS, CLASSES, generate_scenes

    root = tmp_path_factory.mktemp("select")
    raw = generate_scenes(root / "raw", n_scenes=5, size=128, seed=1)
    return prepare("generic", raw, root / "prep", tile_size=64, classes=CLASSES, bands=BANDS,
                   split_ratios=(0.6, 0.2, 0.2), fractions=(0.25, 1.0))


def test_cli_writes_a_subset_by_scene_and_window_and_its_page(prep, tmp_path):
    out = tmp_path / "sub.json"
    p = call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "3", "--strategy", "kcenter", "--out", out,
                 "--seed", "1")
    assert str(out) in p.stdout
    obj = json.loads(out.read_text())
    ds = PreparedDataset(prep)
    train = {(t.scene, t.x, t.y, t.width, t.height) for t in ds.tiles("train")}
    assert obj["glcnet"] == "select" and obj["strategy"] == "kcenter" and obj["budget"] == 3
    assert [t["rank"] for t in obj["tiles"]] == [1, 2, 3]
    assert all((t["scene"], t["x"], t["y"], t["width"], t["height"]) in train for t in obj["tiles"])
    assert obj["data_id"] == ds.identity and obj["candidates"] == len(ds.labelled_pool())
    page = out.with_suffix(".html").read_text()
    assert page.count("<img") == 3 and "1. " in page and obj["tiles"][0]["scene"] in page
    # the tiles a fine-tuning trains on: exactly these
    ids = read_subset(out, ds)
    assert [t.tile_id for t in TileDataset(ds, subset=str(out)).items] == sorted(ids) and len(ids) == 3
    # an existing subset is replaced only with --overwrite; a file select did not write never
    assert call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "3", "--out", out, check=False).returncode == 2
    call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "2", "--out", out, "--overwrite")
    assert json.loads(out.read_text())["budget"] == 2
    (tmp_path / "mine.json").write_text("{}")
    assert call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "2", "--out", tmp_path / "mine.json",
                    "--overwrite", check=False).returncode == 2


def test_a_subset_file_survives_re_preparing_and_refuses_tiles_it_cannot_train_on(prep, tmp_path):
    from glcnet.data.prepare import prepare

    out = tmp_path / "sub.json"
    call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "2", "--strategy", "random", "--out", out)
    ds = PreparedDataset(prep)
    chosen = [(t["scene"], t["x"], t["y"]) for t in json.loads(out.read_text())["tiles"]]
    # another seed: other splits and row order; the same scenes and windows where they are still train tiles
    raw = Path(json.loads((prep / "dataset.json").read_text())["scenes"][0]["source_image"]).parent.parent
    other = prepare("generic", raw, tmp_path / "other", tile_size=64, classes=ds.classes, bands=ds.bands,
                    split_ratios=(0.6, 0.2, 0.2), fractions=(1.0,), seed=9)
    ods = PreparedDataset(other)
    moved = [c for c in chosen if ods.scene_info(c[0])["split"] != "train"]
    if moved:
        with pytest.raises(GlcnetError, match="not train"):
            read_subset(out, ods)
    else:
        rows = {t.tile_id: t for t in ods.tiles("train")}
        assert sorted((rows[i].scene, rows[i].x, rows[i].y) for i in read_subset(out, ods)) == sorted(chosen)
    bad = json.loads(out.read_text())
    bad["tiles"][0]["x"] += 1  # not a tile window
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(GlcnetError, match="bad.json: tile .* is not a tile of"):
        read_subset(tmp_path / "bad.json", ds)
    val = next(t for t in ds.tiles("val"))
    bad["tiles"][0].update(scene=val.scene, x=val.x, y=val.y)
    (tmp_path / "val.json").write_text(json.dumps(bad))
    with pytest.raises(GlcnetError, match="in the val split"):
        read_subset(tmp_path / "val.json", ds)


def test_experiment_cells_train_on_their_seeds_subset_file(prep, tmp_path, monkeypatch):
    from glcnet.config import ExperimentConfig, load_config
    from glcnet.experiment import grid

    cfg = load_config(ExperimentConfig, None, [f"data={prep}", f"out={tmp_path / 'e'}", "methods=[none]",
                                               "fractions=[0.25]", "seeds=[0,1]",
                                               f"subsets={tmp_path}/s{{seed}}.json"])
    with pytest.raises(GlcnetError, match="s0.json .* not found"):
        grid._check(cfg)
    for s in (0, 1):
        call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "2", "--seed", str(s), "--out",
                 tmp_path / f"s{s}.json")
    grid._check(cfg)
    assert grid.finetune_config(cfg, 0.25, 1).subset == f"{tmp_path}/s1.json"
    g = grid.Grid(cfg)
    assert g.cell_dir("none", 0.25, 0) != g.cell_dir("none", 0.25, 1)
    before = g.cell_dir("none", 0.25, 0)
    call_cli("select", "--ckpt", "none", "--data", prep, "--budget", "3", "--seed", "0", "--out",
             tmp_path / "s0.json", "--overwrite")
    assert g.cell_dir("none", 0.25, 0) != before  # another subset is another cell
