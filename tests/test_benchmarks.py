"""Benchmark plumbing (never its timings): ``benchmark pretrain``'s floor and ``benchmark gpu``'s
CPU-safe parts (fail fast without CUDA, the ``--tiny`` smoke path, the time caps)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import call_cli
from glcnet.benchmarks import gpu
from glcnet.config import ExperimentConfig, load_config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # toy tensors on a shared 2-core machine


def test_pretrain_benchmark_floor_is_the_same_network_on_the_same_batch(cli, tmp_path):
    out = tmp_path / "pretrain.json"
    p = cli("benchmark", "pretrain", "--batch", "8", "--tile", "64", "--size", "48", "--steps", "1", "--warmup", "0",
            "--workers", "0", "--methods", "glcnet,simclr,mocov2,jigsaw", "--json", out, env=ONE_THREAD)
    res = json.loads(out.read_text())["methods"]
    # what each method fed its DeepLab in one step: both views at once, view 1 only, or 9 jigsaw tiles per image
    assert res["glcnet"]["net_inputs"] == [[16, 4, 48, 48]] and res["simclr"]["net_inputs"] == [[16, 4, 48, 48]]
    # symmetric MoCo v2: each view's query (batch 8 = 4 shuffle-BN sub-batches of 2); the key network is a copy
    assert res["mocov2"]["net_inputs"] == [[8, 4, 48, 48], [8, 4, 48, 48]]
    assert res["jigsaw"]["net_inputs"] == [[72, 4, 16, 16]]
    # the floor backpropagates through what the method uses: the decoder only for glcnet's local term
    assert res["glcnet"]["floor_outputs"] == ["aspp", "decoder"] and res["simclr"]["floor_outputs"] == ["aspp"]
    for r in res.values():
        assert r["ratio"] == pytest.approx(r["step_s"] / r["floor_s"]) and r["floor_s"] > 0
    assert "ratio" in p.stdout and "glcnet step / simclr step" in p.stdout
    bad = call_cli("benchmark", "pretrain", "--methods", "byol", check=False)
    assert bad.returncode == 2 and "unknown method 'byol'" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_benchmark_fails_fast_without_cuda(tmp_path):
    p = call_cli("benchmark", "gpu", "--json", tmp_path / "g.json", check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: benchmark gpu: no CUDA GPU")
    assert "--device cpu --tiny" in p.stderr and not (tmp_path / "g.json").exists()
    p = call_cli("benchmark", "gpu", "--device", "cpu", check=False)
    assert p.returncode == 2 and "add --tiny" in p.stderr


def test_gpu_benchmark_records_what_does_not_fit_its_time_cap():
    clock = gpu.Clock(1e-6)  # already over
    saved = []
    gpu.section_pretrain(gpu.TINY, torch.device("cpu"), clock, lambda res: saved.append(json.dumps(res)))
    rows = json.loads(saved[-1])["rows"]
    assert len(rows) == len(gpu.COMBOS) * len(gpu.TINY["batches"]) * 2
    assert all(r["skipped"].startswith("time cap") and "ratio" not in r for r in rows)


def test_gpu_benchmark_experiment_overrides_are_valid():
    cmd = gpu.experiment_command(gpu.Path("x"), torch.device("cuda", 0), tiny=False)
    overrides = cmd[cmd.index("demo") + 3:]
    from glcnet.experiment.demo import CONFIG

    cfg = load_config(ExperimentConfig, CONFIG, overrides)
    assert cfg.methods == ["none", "glcnet"] and cfg.pretrain.trainer.accelerator == "gpu"
    assert cfg.pretrain.trainer.max_steps == 300 and cfg.finetune.trainer.devices == "1"


@pytest.mark.slow
def test_gpu_benchmark_tiny_smoke_on_cpu(cli, tmp_path):
    """Every section of the GPU check runs end to end at toy sizes (the experiment: demo --quick). The
    caps are set out of reach: the verdict must not depend on how busy the machine is (the capped
    path has its own test below)."""
    out = tmp_path / "gpu.json"
    p = cli("benchmark", "gpu", "--device", "cpu", "--tiny", "--json", out, "--budget", "36000",
            *(f"--cap={s}=9000" for s in gpu.SECTIONS), env=ONE_THREAD)
    res = json.loads(out.read_text())
    s = res["sections"]
    assert res["tiny"] and set(s) == {"views", "pretrain", "experiment"}
    assert not any("error" in v for v in s.values()), s
    assert all(s["views"]["device"][str(b)]["samples_per_s"] > 0 for b in gpu.TINY["view_batches"])
    assert s["views"]["cpu_loader"]["samples_per_s"] > 0 and s["views"]["device_over_cpu_in_process"] > 0
    rows = s["pretrain"]["rows"]
    assert {(r["precision"], r["channels_last"]) for r in rows} == set(gpu.COMBOS)
    assert all(r["ratio"] > 0 and r["method"] in ("simclr", "glcnet") for r in rows)
    exp = s["experiment"]
    assert exp["status"] == "done" and [r["method"] for r in exp["results"]] == ["none", "glcnet"]
    assert all(r["n_done"] == "1" for r in exp["results"]) and exp["pretrain_steps"] == 2
    assert "done in" in p.stdout and res["elapsed_s"] < res["budget_s"]


def test_gpu_benchmark_section_stopped_at_its_cap(tmp_path):
    """A section that runs past its cap is stopped and says so; the JSON is complete."""
    from conftest import call_cli

    out = tmp_path / "gpu.json"
    p = call_cli("benchmark", "gpu", "--device", "cpu", "--tiny", "--json", out, "--sections", "experiment",
                 "--cap", "experiment=3")
    res = json.loads(out.read_text())
    assert res["caps_s"]["experiment"] == 3.0
    assert res["sections"]["experiment"]["status"] == "stopped at the section's time cap (3 s)", res
    assert "[experiment] stopped at the section's time cap" in p.stdout
    bad = call_cli("benchmark", "gpu", "--device", "cpu", "--tiny", "--cap", "nope=3", check=False)
    assert bad.returncode == 2
