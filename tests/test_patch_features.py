"""GLCNet's local matching pools the *network's* decoder features at the matched boxes: check that
the boxes land where smp's decoder features of that ground really are, not only on images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from glcnet.config import ModelConfig
from glcnet.losses import pool_patches
from glcnet.models import build_model
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import Views


def test_matched_boxes_are_where_the_decoder_features_match(shared_data, one_thread):
    """View 2 = view 1's ground translated by 32 px (a multiple of the output stride, so no
    resampling). For a random DeepLabv3+ (decoder map at 1/4, ASPP upsampled by smp with
    align_corners=True), the pooled decoder features of the matched boxes are closer (standardised
    squared distance) than those of the same boxes moved by 4 or 8 px either way, in x and in y."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = build_model(ModelConfig(aspp_channels=64), 3, 0).eval()
    size, t = 160, 32
    shifts = [-8, -4, 0, 4, 8]
    dist = {(axis, d): [] for axis in (0, 1) for d in shifts}
    for i in (1, 2, 3):
        img = np.asarray(Image.open(shared_data / "roads" / "training" / "images" / f"satImage_{i:03d}.png")
                         .convert("RGB"), dtype=np.float32) / 255
        x = torch.from_numpy(img).permute(2, 0, 1)[None]  # [1, 3, 400, 400]
        for _ in range(3):
            ox, oy = (16 * rng.integers(0, 8, 2)).tolist()
            v1 = x[:, :, oy:oy + size, ox:ox + size]
            v2 = x[:, :, oy + t:oy + t + size, ox + t:ox + t + size]
            no = torch.tensor([False])
            views = Views(v1, v2, torch.tensor([[ox, oy, ox + size, oy + size]], dtype=torch.float32),
                          torch.tensor([[ox + t, oy + t, ox + t + size, oy + t + size]], dtype=torch.float32),
                          no, no, torch.tensor([0]), size)
            with torch.no_grad():
                f1, f2 = net.features(v1)["decoder"], net.features(v2)["decoder"]  # [1, D, s/4, s/4]
            b1, b2, valid = sample_patches(views, 4, 16, torch.Generator().manual_seed(i))
            z1 = pool_patches(f1, b1, 0.25)[valid]  # [P, D]
            for axis in (0, 1):
                moved = []
                for d in shifts:
                    bb = b2.clone()
                    bb[..., axis::2] += d
                    moved.append(pool_patches(f2, bb, 0.25)[valid])
                sd = torch.cat([z1, *moved]).std(0).clamp(min=1e-6)
                for d, z2 in zip(shifts, moved):
                    dist[(axis, d)].append(float(((z1 - z2) / sd).pow(2).sum(-1).mean()))
    for axis in (0, 1):
        mean = {d: float(np.mean(dist[(axis, d)])) for d in shifts}
        assert min(mean, key=mean.get) == 0, (axis, mean)
        assert mean[0] < 0.95 * min(mean[-4], mean[4]), (axis, mean)
