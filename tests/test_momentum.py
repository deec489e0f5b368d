"""MoCo machinery: split BatchNorm, key queue (lightly's memory bank), batch shuffle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glcnet.errors import GlcnetError
from glcnet.models import DeepLab
from glcnet.ssl.momentum import KeyQueue, SplitBatchNorm, shuffle, split_batch_norm, unshuffle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_batch_norm_is_batch_norm_per_interleaved_sub_batch():
    torch.manual_seed(0)
    bn = SplitBatchNorm(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    bn.splits = 2
    x = torch.randn(6, 3, 4, 5)
    y = bn(x)
    for j in range(2):  # sub-batch j = samples j, j+2, j+4
        sub = x[j::2]
        ref = F.batch_norm(sub, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        torch.testing.assert_close(y[j::2], ref)
    # running statistics: default (0, 1) moved by momentum 0.1 towards the mean of the sub-batch statistics
    means = torch.stack([x[j::2].mean(dim=(0, 2, 3)) for j in range(2)]).mean(0)
    vars_ = torch.stack([x[j::2].var(dim=(0, 2, 3)) for j in range(2)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * means)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * vars_)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    torch.testing.assert_close(bn(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    bn.train()
    with pytest.raises(GlcnetError, match="bn_splits=2"):
        bn(torch.randn(3, 3, 2, 2))  # 3 samples do not split in 2


def test_split_batch_norm_conversion_keeps_state_and_output():
    torch.manual_seed(1)
    net = DeepLab("resnet18", in_channels=3)
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(5)  # same ASPP dropout
    ref = net.features(x)["decoder"]
    keys = set(net.state_dict())
    split_batch_norm(net)
    assert not any(type(m) is nn.BatchNorm2d for m in net.modules())
    assert sum(isinstance(m, SplitBatchNorm) for m in net.modules()) > 10
    assert set(net.state_dict()) == keys  # fine-tuning loads it into a plain DeepLab
    torch.manual_seed(5)
    torch.testing.assert_close(net.features(x)["decoder"], ref)  # training, splits = 1: plain BatchNorm


def test_key_queue_reads_before_push_wraps_and_is_in_state_dict():
    torch.manual_seed(2)
    q = KeyQueue(5, 3)
    start = q.bank.clone()
    torch.testing.assert_close(start.norm(dim=1), torch.ones(5))  # random unit vectors
    keys = torch.arange(9.0).reshape(3, 3)
    read = q.read_and_push(keys, push=True)
    torch.testing.assert_close(read, start)  # the loss sees the queue before this step's keys
    torch.testing.assert_close(q.bank[:3], keys)
    assert int(q.bank_ptr) == 3
    q.read_and_push(keys[:1] + 100, push=False)  # evaluation: nothing pushed
    assert int(q.bank_ptr) == 3
    q.read_and_push(keys + 10, push=True)  # 2 rows fit before the end: lightly stops there, pointer to 0
    torch.testing.assert_close(q.bank[3:], keys[:2] + 10)
    assert int(q.bank_ptr) == 0
    q.read_and_push(keys[:0], push=True)  # no valid keys this step
    assert int(q.bank_ptr) == 0
    state = q.state_dict()
    assert set(state) == {"bank", "bank_ptr"}  # in checkpoints (lightly's own are not)
    fresh = KeyQueue(5, 3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.bank, q.bank)


def test_shuffle_moves_extras_with_their_samples_and_unshuffle_restores():
    x = torch.arange(8.0)[:, None, None, None].expand(8, 2, 3, 3)  # sample i holds the value i
    boxes = torch.arange(8.0)[:, None, None].expand(8, 4, 4) * 10
    g = torch.Generator().manual_seed(0)
    xs, (bs,), idx = shuffle(x, boxes, generator=g)
    assert not torch.equal(xs, x)
    torch.testing.assert_close(bs[:, 0, 0], xs[:, 0, 0, 0] * 10)
    torch.testing.assert_close(unshuffle(xs.mean(dim=(1, 2, 3)), idx), torch.arange(8.0))
