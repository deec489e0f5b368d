"""Every weight we pretrain and load is trained: gradients at the sizes each packaged config uses.

A 3x3 branch of dilation r on an n x n map only ever reads padding with its 8 off-centre taps
when r >= n: those taps get exactly zero gradient and switch on, untrained, at larger inputs.
smp's default ASPP rates (12, 24, 36) did that to every dilated branch at our CPU protocols'
64 px views (4x4 maps) and 96 px crops (6x6), and no test saw it. Here, for each packaged
config, every method's pretraining step and the fine-tuning step give every parameter of the
part fine-tuning loads (encoder + ASPP; for fine-tuning, the whole network) a non-zero gradient
*on every tap of every kernel*, except exactly the taps that the config check warns about
(:func:`glcnet.models.deeplab.check_atrous_rates`); a method a config runs has none of those.

And a weight without gradient keeps its value through an optimizer step (AdamW); the
reference's coupled L2 in Adam moved it by about the learning rate.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glcnet.config import ExperimentConfig, FinetuneConfig, PretrainConfig, load_config, replace
from glcnet.engine import configure_optim
from glcnet.models import build_model
from glcnet.models.deeplab import PARTS, aspp_branch_rates, untrained_convs
from glcnet.ssl import METHOD_NAMES, build_method


def _configs() -> dict[str, tuple[PretrainConfig, FinetuneConfig, list[str]]]:
    """(pretraining, fine-tuning, methods the config runs) of every packaged protocol."""
    out = {}
    for name in ("experiment_cpu", "experiment_cpu_long", "experiment_demo", "experiment_potsdam_paper"):
        e = load_config(ExperimentConfig, name)
        out[name] = (e.pretrain, e.finetune, [m.split("[")[0] for m in e.methods if m != "none"])
    out["pretrain_cpu+finetune_cpu"] = (load_config(PretrainConfig, "pretrain_cpu"),
                                         load_config(FinetuneConfig, "finetune_cpu"), ["glcnet"])
    out["pretrain_paper+finetune_paper"] = (load_config(PretrainConfig, "pretrain_paper"),
                                             load_config(FinetuneConfig, "finetune_paper"), ["glcnet"])
    from glcnet.experiment.demo import QUICK

    e = load_config(ExperimentConfig, "experiment_demo", QUICK)
    out["demo --quick"] = (e.pretrain, e.finetune, [m for m in e.methods if m != "none"])
    return out


CONFIGS = _configs()


def _small(model):
    """The configured network with the paper's ResNet-50 as ResNet-18: which taps can be reached depends
    on the rates and the sizes (the map sides), not on the encoder's depth."""
    return replace(model, encoder="resnet18")


def _dead_taps(module: torch.nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    """``name`` of each parameter under ``prefixes`` with no gradient, and ``name[i,j]`` of each kernel
    tap (of a kernel wider than 1) whose gradient is exactly zero over all channels."""
    dead = set()
    for name, p in module.named_parameters():
        if not name.startswith(prefixes):
            continue
        if p.grad is None or not bool(p.grad.ne(0).any()):
            dead.add(name)
        elif p.ndim == 4 and p.shape[-1] > 1:
            taps = p.grad.abs().sum(dim=(0, 1))  # [kh, kw]
            dead |= {f"{name}[{i},{j}]" for i, j in (taps == 0).nonzero().tolist()}
    return dead


def _expected_dead(model_cfg, side: int) -> set[str]:
    """What the config check predicts: the taps :func:`untrained_convs` lists (worked out from the
    convolutions' geometry, not from gradients)."""
    return {f"{name}.weight[{i},{j}]" for name, dead in untrained_convs(model_cfg, side).items()
            for i, j in dead.taps}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_loaded_weight_gets_a_gradient_in_pretraining(name, one_thread):
    pre, _, listed = CONFIGS[name]
    methods = [m for m in METHOD_NAMES if m != "none"] if "paper" not in name else sorted(set(listed))
    size = pre.views.size
    for method in methods:
        cfg = replace(pre, model=_small(pre.model), method=replace(pre.method, name=method),
                      trainer=replace(pre.trainer, batch_size=4))
        cfg.method.bn_splits = 2
        torch.manual_seed(0)
        m = build_method(cfg, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)
        side, _ = m.network_input()
        expected = _expected_dead(cfg.model, side)
        if method in listed and "paper" not in name:
            assert not expected, f"{name}: {method} has untrained weights at its own settings"
        tiles = torch.randint(0, 256, (4, 3, size + 16, size + 16), dtype=torch.uint8)
        m.train()
        m(tiles, generator=torch.Generator().manual_seed(0))["loss"].backward()
        dead = _dead_taps(m.net, PARTS["encoder+aspp"])
        assert dead == expected, f"{name}, {method}: untrained weights {sorted(dead ^ expected)[:6]}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_weight_gets_a_gradient_in_finetuning(name, one_thread):
    _, ft, _ = CONFIGS[name]
    net = build_model(_small(ft.model), in_channels=3, num_classes=3)
    x = torch.rand(2, 3, ft.crop, ft.crop)
    y = torch.randint(0, 3, (2, ft.crop, ft.crop))
    F.cross_entropy(net.predict_logits(x), y).backward()
    assert _dead_taps(net, ("",)) == _expected_dead(_small(ft.model), ft.crop), name


def test_the_cpu_protocols_leave_no_branch_untrained():
    """The CPU protocols' rates fit both their view and their crop (no warning); the paper's do not at
    224 px (the rate-18 branch, as in the authors' code), which is warned about."""
    for name, (pre, ft, _) in CONFIGS.items():
        bad = [aspp_branch_rates(pre.model, untrained_convs(pre.model, pre.views.size)),
               aspp_branch_rates(ft.model, untrained_convs(ft.model, ft.crop))]
        assert bad == ([[18], [18]] if "paper" in name else [[], []]), name


def _degenerate_step(optimizer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A rate-6 ASPP branch at 64 px views (4x4 map): its off-centre taps before and after a step."""
    cfg = PretrainConfig(model=replace(PretrainConfig().model, atrous_rates=(1, 2, 6)),
                         views=replace(PretrainConfig().views, size=64),
                         method=replace(PretrainConfig().method, name="simclr"))
    cfg.optim.optimizer = optimizer
    torch.manual_seed(0)
    m = build_method(cfg, in_channels=3)
    conv = m.net.decoder.aspp[0].convs[3][0][0]  # the rate-6 branch's depthwise 3x3
    assert conv.dilation == (6, 6)
    before = conv.weight.detach().clone()
    opt = configure_optim(m.parameters(), cfg.optim)["optimizer"]
    for _ in range(3):
        opt.zero_grad()
        m(torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8))["loss"].backward()
        assert conv.weight.grad[..., 0, 0].abs().sum() == 0  # an off-centre tap: exactly no gradient
        opt.step()
    return before, conv.weight.detach()


def test_a_weight_without_gradient_keeps_its_value_through_adamw_steps(one_thread):
    before, after = _degenerate_step("adamw")
    off = torch.ones(3, 3, dtype=torch.bool)
    off[1, 1] = False
    torch.testing.assert_close(after[..., off], before[..., off], rtol=1e-6, atol=0)
    assert not torch.equal(after[..., 1, 1], before[..., 1, 1])  # the centre tap trains


def test_adams_coupled_l2_moves_a_weight_without_gradient_by_about_the_rate(one_thread):
    """The defect AdamW removes (kept as optim.optimizer=adam, the reference's choice): 3 steps at lr 1e-3."""
    before, after = _degenerate_step("adam")
    moved = (after[..., 0, 0] - before[..., 0, 0]).abs()  # |step| = lr |wd w| / (|wd w| + eps) <= lr
    assert 2.5e-3 < float(moved.median()) and float(moved.max()) < 3.01e-3
