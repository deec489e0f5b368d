"""How strongly view 2 is augmented: named presets, scaled to the view size.

``views.preset`` names one of :data:`PRESETS`; any strength field of :class:`~glcnet.config.ViewConfig`
set to a value (not null) overrides the preset's. :func:`resolve` returns the :class:`Strength`
that :class:`~glcnet.transforms.views.ViewGenerator` draws with. Blur is given
at a 224 px view and scaled by ``views.size / 224`` (a 2 px blur of a 224 px view is 0.57 px of a
64 px one); ``views.blur_sigma``, when set, is in view pixels as it stands.

``reference``: the authors' ``join_transform`` (``T-SS-GLCNet/utils/data_for_self_GLCNet.py``),
read from their code, for view 2 (view 1 is a crop only, in both):

- flips: one draw in {h, v, both, none, none}: view 2 is unflipped with p = 0.4. Here h and v are
  independent coins of ``p_flip = 1 - sqrt(0.4)`` each, so it is unflipped with p = 0.4 too;
- rotation by k x 90 degrees with p = 0.8, k in {0, 1, 2, 3}: k = 1, 2, 3 with p = 0.2 each, i.e.
  ``p_rot = 0.6`` here (k in {1, 2, 3}), exactly;
- colour with p = 0.8 x 0.5 (``randomHueSaturationValue``'s own coin) = ``p_jitter = 0.4``: an HSV
  shift in OpenCV units, hue +-30 of 180 (``hue = 1/6`` turn), saturation +-5 of 255 (+-0.1
  relative at a typical S of 50), value +-15 of 255 (one brightness factor for all bands, +-0.12
  at a typical V of 128); no contrast change;
- grayscale with p = 0.1; Gaussian blur with p = 0.5, kernels of 3/5/7 px at 224 px, i.e. sigma
  0.8-1.4 px (OpenCV's ``0.3 ((k - 1) / 2 - 1) + 0.8``).

Not reproduced (docs/design.md): the 4+-band rule (per-band brightness/contrast +-0.1 and sparse
pixel noise; here the one brightness factor acts on every band), grayscale as one random band
copied to all (here: luma of the RGB bands), and the uint8 wrap-around of negative hue shifts.

``mocov2``: MoCo v2's colour and blur (Chen et al. 2020: ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with
p = 0.8, grayscale p = 0.2, blur sigma 0.1-2 px at 224 px with p = 0.5), GLCNet's geometry.

``strong``: glcnet's defaults before presets existed (MoCo v2's jitter drawn per band, flips and
rotation each with p = 0.8, blur sigma 0.1-2 px whatever the view size), to reproduce earlier runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from glcnet.config import ViewConfig
from glcnet.errors import GlcnetError

BLUR_AT = 224  # view side at which the presets' blur sigmas are given

# the strength fields of ViewConfig a preset fills; "blur_sigma" is in px of a BLUR_AT view,
# except in "strong", whose "blur_px" is in view pixels (as glcnet's earlier default)
PRESETS: dict[str, dict[str, Any]] = {
    "reference": dict(p_flip=1 - math.sqrt(0.4), p_rot=0.6, p_jitter=0.4, brightness=0.12, contrast=0.0,
                      saturation=0.1, hue=1 / 6, per_band=False, p_gray=0.1, p_blur=0.5, blur_sigma=(0.8, 1.4)),
    "mocov2": dict(p_flip=1 - math.sqrt(0.4), p_rot=0.6, p_jitter=0.8, brightness=0.4, contrast=0.4,
                   saturation=0.4, hue=0.1, per_band=False, p_gray=0.2, p_blur=0.5, blur_sigma=(0.1, 2.0)),
    "strong": dict(p_flip=0.8, p_rot=0.8, p_jitter=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                   per_band=True, p_gray=0.1, p_blur=0.5, blur_px=(0.1, 2.0)),
}


@dataclass(frozen=True)
class Strength:
    """View 2's augmentation strengths, every one set (the meaning of each: :class:`~glcnet.config.ViewConfig`)."""

    p_flip: float
    p_rot: float
    p_jitter: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    per_band: bool
    p_gray: float
    p_blur: float
    blur_sigma: tuple[float, float]  # in view pixels


def resolve(cfg: ViewConfig) -> Strength:
    """The strengths of ``cfg``: its own value where given, else its preset's (module doc)."""
    if cfg.preset not in PRESETS:
        raise GlcnetError(f"views.preset: expected one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    preset = dict(PRESETS[cfg.preset])
    if "blur_px" in preset:
        preset["blur_sigma"] = preset.pop("blur_px")
    else:
        lo, hi = preset["blur_sigma"]
        preset["blur_sigma"] = (lo * cfg.size / BLUR_AT, hi * cfg.size / BLUR_AT)
    given = {f.name: getattr(cfg, f.name) for f in fields(Strength) if getattr(cfg, f.name) is not None}
    return Strength(**{**preset, **given})
