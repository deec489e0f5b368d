"""Experiment grid (with fake pipeline stages), results table, and the real ``glcnet demo --quick``."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from glcnet.config import ExperimentConfig, load_config
from glcnet.errors import GlcnetError
from glcnet.experiment import grid
from glcnet.experiment.table import CellResult, markdown, summarise

BASE = {"none": 0.40, "simclr": 0.50, "glcnet": 0.60}  # fake kappa per method
REPO = Path(__file__).resolve().parents[1]


class FakeStages:
    """Stand-ins for pretrain.run / train.run / evaluate.run that record their calls."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: set[tuple] = set()  # ("pretrain", method) or ("evaluate", method, fraction)

    def pretrain(self, cfg, resume=False):
        self.calls.append(("pretrain", cfg.method.name, cfg.seed, resume))
        if ("pretrain", cfg.method.name) in self.fail:
            raise RuntimeError("boom in pretraining")
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pretrained.pt").write_text(json.dumps({"method": cfg.method.name, "seed": cfg.seed}))
        return out / "pretrained.pt"

    def finetune(self, cfg, resume=False):
        self.calls.append(("finetune", cfg.init, cfg.fraction, cfg.seed, resume))
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        method = "none" if cfg.init == "none" else json.loads(Path(cfg.init).read_text())["method"]
        (out / "model.pt").write_text(json.dumps({"method": method, "fraction": cfg.fraction, "seed": cfg.seed}))
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / "last.ckpt").write_text("resume state")
        val_kappa = BASE[method] - 0.05  # two validation passes; the second (higher val_miou) is selected
        (out / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
            {"step": 1, "val_miou": 0.2, "val_kappa": 0.0}, {"step": 2, "train_loss": 0.3},
            {"step": 3, "val_miou": 0.4, "val_kappa": val_kappa, "val_oa": 0.9}]) + "\n")
        return out / "model.pt"

    def evaluate(self, ckpt, data, split="test", cfg=None, out=None, progress=True):
        m = json.loads(Path(ckpt).read_text())
        self.calls.append(("evaluate", m["method"], m["fraction"], m["seed"], split))
        if ("evaluate", m["method"], m["fraction"]) in self.fail:
            raise ValueError("boom in evaluation")
        k = BASE[m["method"]] + 0.1 * m["fraction"] + 0.01 * m["seed"]
        per_class = {"road": {"iou": k - 0.05}, "roof": {"iou": k - 0.15}}
        return {"kappa": k, "miou": k - 0.1, "oa": k + 0.2, "mean_f1": k + 0.05, "per_class": per_class}

    def probe(self, init, data, cfg, model_cfg, seed):
        method = "none" if init == "none" else json.loads(Path(init).read_text())["method"]
        pre = None if init == "none" else json.loads(Path(init).read_text())["seed"]
        self.calls.append(("probe", method, cfg.fraction, seed, pre))
        return {"decoder": {"miou": BASE[method] / 2, "kappa": 0.1, "oa": 0.5}, "seconds": 0.1, "init": init}

    def stages(self):
        from glcnet.finetune.train import selected_val_metrics

        return {"methods": ["none", "simclr", "mocov2", "glcnet"], "pretrain": self.pretrain,
                "finetune": self.finetune, "evaluate": self.evaluate, "val_metrics": selected_val_metrics,
                "probe": self.probe}

    def count(self, kind):
        return sum(c[0] == kind for c in self.calls)


@pytest.fixture
def fake(monkeypatch):
    f = FakeStages()
    monkeypatch.setattr(grid, "_stages", f.stages)
    return f


@pytest.fixture
def cfg(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"name": "fake", "classes": ["a", "b"]}))
    (data / "splits.json").write_text(json.dumps({"seed": 0, "labelled": {"0.01": [1], "0.1": [1, 2], "1.0": [1, 2, 3]}}))
    return load_config(ExperimentConfig, None, [
        f"data={data}", f"out={tmp_path / 'exp'}", "methods=[glcnet,none,simclr]",
        "fractions=[0.01,0.1]", "seeds=[0,1,2]"])


def test_grid_runs_every_cell_and_pretrains_once(fake, cfg):
    paths = grid.run(cfg, log=lambda s: None)
    assert sorted(c[1:3] for c in fake.calls if c[0] == "pretrain") == [
        ("glcnet", 0), ("glcnet", 1), ("glcnet", 2), ("simclr", 0), ("simclr", 1), ("simclr", 2)]
    assert fake.count("finetune") == fake.count("evaluate") == 18
    assert all(c[4] == "test" for c in fake.calls if c[0] == "evaluate")
    out = Path(cfg.out)
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 18 and all((c / "result.json").is_file() for c in cells)
    assert all((c / "finetune" / "model.pt").is_file() and not (c / "finetune" / "checkpoints").exists() for c in cells)
    assert len(list((out / "pretrain").iterdir())) == 6
    assert paths["png"].stat().st_size > 1000
    # CSV: mean and sample std over seeds 0, 1, 2 of kappa = base + 0.1 f + 0.01 s
    rows = {(r["method"], float(r["fraction"])): r for r in csv.DictReader(paths["csv"].open())}
    r = rows[("glcnet", 0.01)]
    assert float(r["kappa_mean"]) == pytest.approx(0.60 + 0.001 + 0.01)
    assert float(r["kappa_std"]) == pytest.approx(0.01)  # std of (0, .01, .02) with n - 1
    assert (r["n_done"], r["n_failed"]) == ("3", "0")
    assert len(r["cells"].split(";")) == 3
    # markdown: paper order (none, simclr, glcnet) whatever the config order, GLCNet best and bold
    md = paths["md"].read_text()
    rows_md = [ln for ln in md.splitlines() if ln.startswith("| ") and "@" not in ln and "folder" not in ln]
    assert [ln.split(" | ")[0] for ln in rows_md[:3]] == ["| Random init", "| SimCLR", "| GLCNet"]
    glc = next(ln for ln in rows_md if ln.startswith("| GLCNet"))
    assert f"**{100 * (0.611):.2f} ± 1.00**" in glc
    assert "**" not in next(ln for ln in rows_md if ln.startswith("| SimCLR"))
    assert "(cells/glcnet-f0.01-s0-" in md
    # val-scene metrics of the selected epoch, next to the test metrics
    res = json.loads(next((out / "cells").glob("glcnet-f0.01-s0-*/result.json")).read_text())
    assert res["val"] == {"miou": 0.4, "kappa": pytest.approx(0.55), "oa": 0.9}
    assert float(r["val_kappa_mean"]) == pytest.approx(0.55) and r["val_mean_f1_mean"] == ""
    assert "| GLCNet | 1% | 0 | done | 60.10 | 55.00 |" in md
    # frozen probe of every cell's initial network, on the cell's labelled subset
    assert sorted(c[1:] for c in fake.calls if c[0] == "probe" and c[3] == 0) == [
        ("glcnet", 0.01, 0, 0), ("glcnet", 0.1, 0, 0), ("none", 0.01, 0, None), ("none", 0.1, 0, None),
        ("simclr", 0.01, 0, 0), ("simclr", 0.1, 0, 0)]
    assert float(r["probe_decoder_miou_mean"]) == pytest.approx(0.30) and r["probe_aspp_miou_mean"] == ""
    # paired differences: glcnet - none = 0.20 and glcnet - simclr = 0.10 for every seed (zero spread)
    assert (r["dkappa_vs_none_n"], float(r["dkappa_vs_none_mean"])) == ("3", pytest.approx(0.20))
    assert float(r["dkappa_vs_none_low"]) == pytest.approx(0.20) == float(r["dkappa_vs_none_high"])
    assert float(r["dkappa_vs_simclr_mean"]) == pytest.approx(0.10)
    paired = md.split("## Paired differences")[1].split("## Cells")[0]
    glc = next(ln for ln in paired.splitlines() if ln.startswith("| GLCNet"))
    assert glc.startswith("| GLCNet | +20.00 [+20.00, +20.00] | +10.00 [+10.00, +10.00] |  | 55.00 | 30.00 | – |")
    simclr = next(ln for ln in paired.splitlines() if ln.startswith("| SimCLR"))  # and to GLCNet, for its variants
    assert simclr.startswith("| SimCLR | +10.00 [+10.00, +10.00] |  | -10.00 [-10.00, -10.00] | 45.00 |")


def test_method_entries_with_overrides_are_their_own_rows(fake, cfg):
    cfg.methods = ["glcnet", "glcnet[method.lam=0.25,views.scale=[0.2,1.0]]", "none"]
    cfg.seeds, cfg.fractions = [0], [0.01]
    assert grid.parse_method(cfg.methods[1]) == ("glcnet", ["method.lam=0.25", "views.scale=[0.2,1.0]"])
    pc = grid.pretrain_config(cfg, cfg.methods[1], 3)
    assert (pc.method.name, pc.method.lam, pc.views.scale, pc.seed) == ("glcnet", 0.25, (0.2, 1.0), 3)
    assert grid.pretrain_config(cfg, "glcnet", 0).method.lam == 0.5
    paths = grid.run(cfg, log=lambda s: None)
    assert fake.count("pretrain") == 2 and fake.count("finetune") == 3
    assert sorted(p.name.split("-s0-")[0] for p in (Path(cfg.out) / "pretrain").iterdir()) == [
        "glcnet", "glcnet+method.lam=0.25+views.scale=_0.2_1.0_"]
    md = paths["md"].read_text()
    rows = [ln.split(" | ")[0] for ln in md.split("## Paired")[0].splitlines() if ln.startswith("| ") and "@" not in ln]
    assert rows == ["| Random init", "| GLCNet", "| GLCNet [method.lam=0.25,views.scale=[0.2,1.0]]"]
    for bad, msg in [(["glcnet[method.nope=1]"], "unknown key 'nope'"), (["none[method.lam=1]"], "nothing to pretrain"),
                     (["glcnet[lam]"], "'lam' is not key=value"), (["glcnet", "glcnet"], "listed twice"),
                     (["glc net"], "expected NAME or NAME\\[key=value")]:
        cfg.methods = bad
        with pytest.raises(GlcnetError, match=msg):
            grid.run(cfg)


def test_selected_val_metrics(tmp_path):
    from glcnet.finetune.train import selected_val_metrics

    assert selected_val_metrics(tmp_path) == {}
    (tmp_path / "metrics.jsonl").write_text(
        '{"val_miou": 0.5, "val_kappa": 0.1}\n{"val_miou": 0.7, "val_kappa": 0.2}\n'
        '{"val_miou": 0.7, "val_kappa": 0.3}\n{"train_loss": 1}\n{"val_miou": 0.9, "val_k')  # cut by a kill
    assert selected_val_metrics(tmp_path) == {"miou": 0.7, "kappa": 0.2}  # first of the ties


def test_rerun_skips_and_config_change_reruns(fake, cfg):
    grid.run(cfg, log=lambda s: None)
    fake.calls.clear()
    grid.run(cfg, log=lambda s: None)
    assert fake.calls == []  # unchanged config: every cell skipped
    cfg.finetune.optim.lr = 5e-4  # changes every cell, no pretraining
    cfg.pretrain.trainer.progress = False  # no effect on results: not in the hash
    grid.run(cfg, log=lambda s: None)
    assert fake.count("pretrain") == 0 and fake.count("finetune") == 18
    fake.calls.clear()
    cfg.pretrain.optim.epochs = 3  # new pretrainings, and new cells for the pretrained methods only
    grid.run(cfg, log=lambda s: None)
    assert fake.count("pretrain") == 6 and fake.count("finetune") == 12
    assert {c[1] for c in fake.calls if c[0] == "evaluate"} == {"simclr", "glcnet"}


def test_failed_cell_is_isolated_and_retried(fake, cfg):
    fake.fail = {("evaluate", "simclr", 0.1), ("pretrain", "glcnet")}
    paths = grid.run(cfg, log=lambda s: None)
    out = Path(cfg.out)
    assert fake.count("pretrain") == 3 + 3  # glcnet's failed pretraining is not retried per fraction
    failed = sorted(p.name.rsplit("-", 1)[0] for p in (out / "cells").glob("*/error.txt") for p in [p.parent])
    assert failed == [f"glcnet-f{f}-s{s}" for f in ("0.01", "0.1") for s in range(3)] + [
        f"simclr-f0.1-s{s}" for s in range(3)]
    assert "boom in evaluation" in next((out / "cells").glob("simclr-f0.1-s0-*/error.txt")).read_text()
    md = paths["md"].read_text()
    assert "failed: " in md and "boom in pretraining" in md
    rows = {(r["method"], float(r["fraction"])): r for r in csv.DictReader(paths["csv"].open())}
    assert rows[("simclr", 0.1)]["n_failed"] == "3" and rows[("simclr", 0.1)]["kappa_mean"] == ""
    assert rows[("simclr", 0.01)]["n_done"] == "3"
    # fixed: the rerun redoes only the failed cells
    fake.fail.clear()
    fake.calls.clear()
    paths = grid.run(cfg, log=lambda s: None)
    assert fake.count("pretrain") == 3 and fake.count("finetune") == 6  # simclr's models were kept
    assert fake.count("evaluate") == 6 + 3
    assert not list((out / "cells").glob("*/error.txt"))
    assert "failed" not in paths["md"].read_text()


def test_killed_runs_resume_and_stale_folders_are_cleared(fake, cfg):
    from glcnet import outputs
    from glcnet.utils.atomic import write_json

    g = grid.Grid(cfg, log=lambda s: None)
    write_json(g.out / outputs.MARKER, outputs.marker("experiment"))  # the folder of a killed experiment
    killed = g.pretrain_dir("simclr", 0)
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "last.ckpt").write_text("state")
    (killed / "pretrained.pt").write_text("written every epoch: not a sign of completion")
    stale = g.pretrain_dir("glcnet", 0)  # killed before its first checkpoint
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    ft_killed = g.cell_dir("none", 0.1, 1) / "finetune"
    (ft_killed / "checkpoints").mkdir(parents=True)
    (ft_killed / "checkpoints" / "last.ckpt").write_text("state")
    grid.run(cfg, log=lambda s: None)
    pre = {(c[1], c[2]): c[3] for c in fake.calls if c[0] == "pretrain"}
    assert pre[("simclr", 0)] is True and pre[("glcnet", 0)] is False and pre[("simclr", 1)] is False
    assert not (stale / "junk").exists()
    ft = {(c[1], c[2], c[3]): c[4] for c in fake.calls if c[0] == "finetune"}
    assert ft[("none", 0.1, 1)] is True and ft[("none", 0.01, 1)] is False


def test_hash_keys_only_non_default_settings():
    from glcnet.config import FinetuneConfig

    assert grid._hashable(FinetuneConfig()) == {}  # a field added later with its default changes no hash
    c = FinetuneConfig(out="elsewhere", data="other/path", seed=2)
    c.optim.lr, c.trainer.progress = 0.01, False
    assert grid._hashable(c) == {"seed": 2, "optim.lr": 0.01}  # not out, data (by content) or progress
    assert grid.short_hash({"a": 1, "b": [1, 2]}) == grid.short_hash({"b": [1, 2], "a": 1})


def test_only_table_runs_nothing_and_refuses_a_table_of_nothing(fake, cfg, tmp_path):
    # a mistyped --out: refused, and no folder is made
    with pytest.raises(GlcnetError, match="no experiment there"):
        grid.run(cfg, only_table=True, log=lambda s: None)
    assert not Path(cfg.out).exists() and fake.calls == []
    cfg.seeds = [0]
    grid.run(cfg, log=lambda s: None)  # 6 finished cells
    fake.calls.clear()
    cfg.seeds = [0, 1, 2]
    paths = grid.run(cfg, only_table=True, log=lambda s: None)
    assert fake.calls == []
    md = paths["md"].read_text()
    assert md.count("| pending |") == 12 and md.count("| done |") == 6
    # settings with none of its cells finished (another seed): refused, the good tables stay
    before = {p.name: p.read_bytes() for p in Path(cfg.out).iterdir() if p.is_file()}
    cfg.seeds = [5]
    with pytest.raises(GlcnetError, match="none of the 6 cells of these settings has finished"):
        grid.run(cfg, only_table=True, log=lambda s: None)
    # settings that would drop finished cells from the tables there: refused too
    cfg.seeds, cfg.methods = [0], ["glcnet"]
    with pytest.raises(GlcnetError, match="its tables hold 6 finished cells, these settings only 2"):
        grid.run(cfg, only_table=True, log=lambda s: None)
    assert {p.name: p.read_bytes() for p in Path(cfg.out).iterdir() if p.is_file()} == before


def test_a_damaged_cell_result_is_said_and_run_again(fake, cfg, caplog):
    cfg.seeds, cfg.methods, cfg.fractions = [0], ["none", "glcnet"], [0.01]
    grid.run(cfg, log=lambda s: None)
    cells = sorted((Path(cfg.out) / "cells").iterdir())
    cells[0].joinpath("result.json").write_text("")  # a kill or a full disk
    cells[1].joinpath("result.json").write_text("{}")  # every cell damaged: the table says so, not refused
    fake.calls.clear()
    with caplog.at_level("WARNING", logger="glcnet"):
        paths = grid.run(cfg, only_table=True, log=lambda s: None)
    assert fake.calls == [] and paths["md"].read_text().count("| pending |") == 2
    assert sum("is damaged" in r.message and "runs again" in r.message for r in caplog.records) == 2
    grid.run(cfg, log=lambda s: None)  # reruns both: evaluation only (the fine-tunings had finished)
    assert fake.count("evaluate") == 2 and fake.count("finetune") == 0
    assert all(json.loads((c / "result.json").read_text())["metrics"] for c in cells)


def test_config_errors_are_one_line(fake, cfg, tmp_path):
    cfg.methods = ["none", "byol"]
    with pytest.raises(GlcnetError, match="unknown method 'byol' \\(valid: none, simclr, mocov2, glcnet\\)"):
        grid.run(cfg)
    cfg.methods = ["none"]
    cfg.fractions = [0.05]
    with pytest.raises(GlcnetError, match="splits.json: no labelled subset for fraction 0.05 \\(has: 0.01, 0.1, 1;"):
        grid.run(cfg)
    cfg.data = str(tmp_path)
    with pytest.raises(GlcnetError, match="not a prepared data set"):
        grid.run(cfg)
    cfg.data = str(Path(cfg.out).parent / "prepared")
    cfg.fractions = [0.01]
    cfg.finetune.model.encoder = "resnet50"
    with pytest.raises(GlcnetError, match="pretrain.model and finetune.model differ"):
        grid.run(cfg)
    assert not Path(cfg.out).exists()  # nothing written before the checks pass


def test_summary_and_markdown_by_hand():
    cells = [CellResult("simclr", 0.01, s, f"c/s{s}", "done", {"kappa": k, "miou": 0.3, "oa": 0.8, "mean_f1": 0.4})
             for s, k in enumerate([0.50, 0.60, 0.70])]
    cells += [CellResult("none", 0.01, 0, "c/n0", "done", {"kappa": 0.65, "miou": 0.35, "oa": 0.7, "mean_f1": 0.5}),
              CellResult("none", 0.01, 1, "c/n1", "failed", error="oops")]
    s = summarise(cells)
    assert s[("simclr", 0.01)].mean["kappa"] == pytest.approx(0.6)
    assert s[("simclr", 0.01)].std["kappa"] == pytest.approx(0.1)
    assert math.isnan(s[("none", 0.01)].std["kappa"]) and s[("none", 0.01)].n_failed == 1
    md = markdown(cells)
    none_row = next(ln for ln in md.splitlines() if ln.startswith("| Random init |"))
    simclr_row = next(ln for ln in md.splitlines() if ln.startswith("| SimCLR |"))
    # Kappa: none 65.00 (1 of 2 seeds) beats simclr 60.00; OA: simclr best
    assert none_row.split(" | ")[1] == "**65.00 (n=1/2)**"
    assert simclr_row.split(" | ")[1] == "60.00 ± 10.00"
    assert simclr_row.split(" | ")[3] == "**80.00 ± 0.00**"
    assert "failed: oops" in md


def test_cli_errors_in_one_line(tmp_path):
    from conftest import call_cli

    p = call_cli("experiment", "--config", tmp_path / "missing.yaml", check=False)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {tmp_path / 'missing.yaml'}: config file not found")
    assert len(p.stderr.strip().splitlines()) == 1
    p = call_cli("experiment", "--data", tmp_path, "--out", tmp_path / "grid", check=False)  # flags as in pretrain
    assert p.returncode == 2 and "not a prepared data set" in p.stderr and "Traceback" not in p.stderr
    assert str(tmp_path) in p.stderr and not (tmp_path / "grid").exists()


def test_experiment_configs_load():
    for name in ("experiment_cpu", "experiment_potsdam_paper"):
        c = load_config(ExperimentConfig, name)  # packaged configs resolve by name
        assert c.pretrain.model == c.finetune.model and len(c.seeds) >= 3
    paper = load_config(ExperimentConfig, "experiment_potsdam_paper")
    assert paper.pretrain.model.encoder == "resnet50" and paper.pretrain.optim.epochs == 400
    assert paper.fractions == [0.01, 0.05, 0.1, 0.2, 1.0]


STAGES = ["glcnet.data.prepare", "glcnet.ssl.pretrain", "glcnet.finetune.train", "glcnet.finetune.evaluate"]


def test_report_page_shows_every_result_column(fake, cfg, chromium, tmp_path):
    """report.html shows results.csv as it is, one table per column group (test, val, probe, paired
    differences, and a group added later without a change here), probe_curves.png when there, the
    per-class IoU side by side; it renders in a browser with every image, no error, no request."""
    from browser import check_page, render
    from glcnet.experiment.report import write_page

    cfg.seeds = [0, 1]
    paths = grid.run(cfg, log=lambda s: None)
    assert paths["html"].is_file() and paths["png"].name == "kappa_vs_fraction.png"
    text = paths["html"].read_text()
    for heading in ("Test scenes", "Val scenes, selected epoch", "Frozen-feature linear probe, val scenes",
                    "Paired test Kappa differences"):
        assert f"<h3>{heading}</h3>" in text, heading
    assert "decoder mIoU %" in text and "ASPP mIoU" not in text  # probe columns without values are left out
    assert "vs Random init %" in text and "+20.00 <span class='sd'>[+20.00, +20.00]</span>" in text
    assert "+0.00 <span class='sd'>" not in text  # no row of a baseline against itself
    out = Path(cfg.out)
    with paths["csv"].open() as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames), list(reader)
    for r in rows:  # a column group a later version may add
        r["future_score_mean"], r["future_score_std"] = ("0.4321" if r["method"] == "glcnet" else "0.3"), "0.01"
    with paths["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fields[:-1] + ["future_score_mean", "future_score_std", "cells"])
        w.writeheader()
        w.writerows(rows)
    (out / "probe_curves.png").write_bytes(paths["png"].read_bytes())
    page = write_page(out, grid.Grid(cfg).results(), cfg.data, "fake grid", "**SYNTHETIC** note", plot=paths["png"])
    text = page.read_text()
    assert "<h3>future</h3>" in text and '<td class="best" style="">43.21 <span' in text  # best in bold
    assert 'alt="probe_curves.png"' in text
    assert "<strong>SYNTHETIC</strong> note" in text and "<title>fake grid</title>" in text
    # per-class IoU side by side: fake IoU of road = kappa - 0.05, mean over seeds 0 and 1 (+0.005)
    assert text.count("<td class=\"left\">road</td>") == 2  # one table per fraction
    assert "55.60" in text and "45.60" in text  # glcnet road / roof at 1%: 0.6 + 0.001 + 0.005 - 0.05 / - 0.15
    assert "http://" not in text and "https://" not in text
    found = render(page, tmp_path / "experiment_page.png", chromium)
    check_page(found, min_images=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``glcnet demo --quick`` run twice through the real CLI (the second run skips every cell)."""
    if not all(importlib.util.find_spec(m) for m in STAGES):
        pytest.skip("pipeline stages not all present yet")
    from conftest import run_cli

    out = tmp_path_factory.mktemp("demo") / "demo"
    first = run_cli("demo", "--quick", "--out", out)
    again = run_cli("demo", "--quick", "--out", out)
    return {"out": out, "first": first, "again": again}


@pytest.mark.slow
def test_demo_quick_end_to_end(demo):
    p, exp = demo["first"], demo["out"] / "experiment"
    assert "SYNTHETIC" in p.stdout and f"report: {exp / 'report.html'}" in p.stdout
    md = (exp / "results.md").read_text()
    assert "SYNTHETIC" in md
    for row in ("| Random init |", "| SimCLR |", "| GLCNet |"):
        line = next(ln for ln in md.splitlines() if ln.startswith(row))
        kappa = line.split(" | ")[1].strip("*").split()[0]
        assert -100 <= float(kappa) <= 100  # a number, not "failed"
    rows = list(csv.DictReader((exp / "results.csv").open()))
    assert {r["method"] for r in rows} == {"none", "simclr", "glcnet"}
    assert all(r["n_done"] == "1" and r["kappa_mean"] for r in rows)
    assert (exp / "kappa_by_method.png").stat().st_size > 1000 and not (exp / "kappa_vs_fraction.png").exists()
    assert (demo["out"] / "synthetic_raw" / "README.txt").is_file()
    # progress on stderr, one line per finished stage (not a terminal: no bars)
    err = p.stderr
    assert "\r" not in err and "cell 1/3: none 5% seed 0 (elapsed " in err and "cell 3/3: glcnet" in err
    for line in ("pretrain simclr: done", "pretrain glcnet: done", "finetune: done", "evaluate test: 1 scene,",
                 "[3/3] glcnet 5% seed 0: done kappa=", "prepare: 6 scenes"):
        assert line in err, line
    assert err.count("finetune: done") == 3 and "ETA" in err
    # every evaluation keeps its class maps for the page
    assert len(list(exp.glob("cells/*/eval/pred/*.png"))) == 3
    # finished cells keep their weights, not their resume state
    assert len(list(exp.glob("cells/*/finetune/model.pt"))) == 3 and not list(exp.glob("cells/*/finetune/checkpoints"))
    # rerun: every cell is skipped (results keyed by config hash)
    again = demo["again"].stderr
    assert "pretrain " not in again and "cell " not in again and again.count(": done") == 3


@pytest.mark.slow
def test_demo_report_in_a_browser(demo, chromium):
    from browser import check_page, render

    page = demo["out"] / "experiment" / "report.html"
    text = page.read_text()
    assert "SYNTHETIC" in text and "Per-class IoU" in text and "Random init" in text
    found = render(page, demo["out"] / "report.png", chromium)
    # plot + 1 test scene x (image, truth, 3 methods)
    check_page(found, min_images=6)
    shot = demo["out"] / "report.png"
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1400 and im.size[1] > 1000
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 1000  # a rendered page, not a blank one


def test_subsets_per_seed_reach_finetuning_and_probe(fake, cfg, monkeypatch):
    seen = []
    ft, pr = fake.finetune, fake.probe
    monkeypatch.setattr(fake, "finetune", lambda c, resume=False: (seen.append(("ft", c.seed, c.subset_seed)), ft(c, resume))[1])
    monkeypatch.setattr(fake, "probe", lambda i, d, c, m, s: (seen.append(("probe", s, c.subset_seed)), pr(i, d, c, m, s))[1])
    cfg.subsets, cfg.seeds, cfg.fractions = "seed", [1, 2], [0.01]
    grid.run(cfg, log=lambda s: None)
    assert all(subset == seed for _, seed, subset in seen) and len(seen) == 2 * 3 * 2
    cfg.subsets = "bogus"
    with pytest.raises(GlcnetError, match="subsets: expected one of prepared, seed"):
        grid.run(cfg)


def test_finetune_overrides_share_the_pretraining_and_pretrain_seed(fake, cfg):
    cfg.methods = ["none", "glcnet", "glcnet[finetune.load=all]"]
    cfg.fractions, cfg.seeds, cfg.pretrain_seed = [0.01], [0, 1, 2], 0
    paths = grid.run(cfg, log=lambda s: None)
    assert [c[1:3] for c in fake.calls if c[0] == "pretrain"] == [("glcnet", 0)]  # one, shared by 6 cells
    probes = [c for c in fake.calls if c[0] == "probe"]
    assert sorted(c[4] for c in probes if c[1] != "none") == [0] * 6  # pretrained cells: seed 0's pretraining
    assert sorted(c[3] for c in probes if c[1] == "none") == [0, 1, 2]  # random init: each cell's own network
    cells = [d.name.split("-f")[0] for d in (Path(cfg.out) / "cells").iterdir()]
    assert len(cells) == 9 and set(cells) == {"none", "glcnet", "glcnet+finetune.load=all"}
    assert grid.finetune_config(cfg, 0.01, 1, "glcnet[finetune.load=all]").load == "all"
    assert grid.finetune_config(cfg, 0.01, 1, "glcnet").load == "encoder+aspp"
    assert "GLCNet [finetune.load=all]" in paths["md"].read_text()
    cfg.methods = ["none[method.lam=1]"]
    with pytest.raises(GlcnetError, match="nothing to pretrain"):
        grid.run(cfg)
    cfg.methods = ["glcnet[finetune.nope=1]"]
    with pytest.raises(GlcnetError, match="unknown key 'nope'"):
        grid.run(cfg)


def test_long_cpu_protocol_config(fake, cfg, monkeypatch):
    """experiment_cpu_long: experiment_cpu's fine-tuning and test with ~10x the pretraining, ten paired
    seeds with their own subsets, two pretrainings per method; every (entry, seed, pretraining) runs,
    random init once per seed, and the tables pair every pretraining with random init's cell."""
    from glcnet.ssl import METHOD_NAMES

    long, short = (load_config(ExperimentConfig, n) for n in ("experiment_cpu_long", "experiment_cpu"))
    assert long.finetune == short.finetune and long.fractions == short.fractions == [0.01]
    assert long.pretrain.model == long.finetune.model == short.pretrain.model
    assert len(long.pretrain_seeds) >= 2 and long.subsets == "seed" and len(long.seeds) >= 10
    assert {"none", "simclr", "glcnet"} <= set(long.methods)
    steps = long.pretrain.optim.epochs * (2730 // long.pretrain.trainer.batch_size)  # roads: 2,730 pool tiles
    short_steps = short.pretrain.optim.epochs * short.pretrain.trainer.limit_batches
    assert steps >= 9 * short_steps and long.pretrain.trainer.limit_batches == 1.0
    # the grid on fake stages: one pretraining per (method, pretraining seed)
    names = sorted({grid.parse_method(m)[0] for m in long.methods})
    monkeypatch.setattr(grid, "_stages", lambda: {**fake.stages(), "methods": list(METHOD_NAMES)})
    for n in names:
        monkeypatch.setitem(BASE, n, BASE.get(n, 0.55))
    cfg.methods, cfg.seeds, cfg.fractions = long.methods, long.seeds, long.fractions
    cfg.pretrain_seeds, cfg.subsets = long.pretrain_seeds, long.subsets
    paths = grid.run(cfg, log=lambda s: None)
    p = len(long.pretrain_seeds)
    assert sorted((c[1], c[2]) for c in fake.calls if c[0] == "pretrain") == sorted(
        (n, s) for n in names if n != "none" for s in long.pretrain_seeds)
    assert fake.count("evaluate") == len(long.seeds) * (1 + p * (len(long.methods) - 1))
    rows = {r["method"]: r for r in csv.DictReader(paths["csv"].open())}
    # kappa = base + 0.1 f + 0.01 seed: glcnet - none = 0.20 on every cell, both pretrainings alike
    assert int(rows["glcnet"]["dkappa_vs_none_n"]) == p * len(long.seeds)
    assert float(rows["glcnet"]["dkappa_vs_none_mean"]) == pytest.approx(0.20)
    # and the other way round: random init against every GLCNet pretraining (it was paired with the first only)
    assert int(rows["none"]["dkappa_vs_glcnet_n"]) == p * len(long.seeds)
    assert float(rows["none"]["dkappa_vs_glcnet_mean"]) == pytest.approx(-0.20)
    assert "-p1-" in "".join(d.name for d in (Path(cfg.out) / "cells").iterdir())
