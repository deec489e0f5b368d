"""Two augmented views of every tile of a batch, with their exact geometry (docs/design.md, "Two views").

:class:`ViewGenerator` checks the input, draws all random parameters on the CPU
(:func:`~glcnet.transforms.params.draw_params`), hands them to a renderer and returns
:class:`~glcnet.transforms.geometry.Views`. Renderers, same parameters and maths:

- :func:`~glcnet.transforms.render_torch.render_torch`: float tiles (and uint8 on a GPU),
  one batched ``grid_sample`` per view on the tiles' device;
- :func:`~glcnet.transforms.render_uint8.render_uint8`: uint8 tiles on the CPU, torch's
  uint8 SIMD resize per sample (several times faster there; values within the uint8 rounding).

:class:`ViewCollate` makes the views in DataLoader workers instead of on the training device.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from glcnet.config import ViewConfig
from glcnet.errors import GlcnetError
from glcnet.transforms.geometry import Views
from glcnet.transforms.params import Renderer, draw_params
from glcnet.transforms.presets import Strength, resolve
from glcnet.transforms.render_torch import render_torch
from glcnet.transforms.render_uint8 import render_uint8


def _check_config(cfg: ViewConfig, s: Strength) -> None:
    def bad(name: str, want: str) -> GlcnetError:
        return GlcnetError(f"views.{name}: expected {want}, got {getattr(s if hasattr(s, name) else cfg, name)!r}")

    if cfg.size < 1:
        raise bad("size", "a positive integer")
    if not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        raise bad("scale", "0 < min <= max <= 1")
    if not 0 < cfg.ratio[0] <= cfg.ratio[1]:
        raise bad("ratio", "0 < min <= max")
    for name in ("p_flip", "p_rot", "p_jitter", "p_gray", "p_blur"):
        if not 0 <= getattr(s, name) <= 1:
            raise bad(name, "a probability in [0, 1]")
    for name in ("brightness", "contrast", "saturation"):
        if getattr(s, name) < 0:
            raise bad(name, "a value >= 0")
    if not 0 <= s.hue <= 0.5:
        raise bad("hue", "a value in [0, 0.5]")
    if not 0 < s.blur_sigma[0] <= s.blur_sigma[1]:
        raise bad("blur_sigma", "0 < min <= max")
    if cfg.cpu_chunk < 0:
        raise bad("cpu_chunk", "0 (whole batch) or a positive sample count")
    if cfg.rgb_bands is not None and (len(set(cfg.rgb_bands)) != 3 or min(cfg.rgb_bands) < 0):
        raise bad("rgb_bands", "three distinct band indices or null")


class ViewGenerator:
    """Two augmented views of every tile of a batch, plus their geometry (:class:`Views`).

    View 1: RandomResizedCrop (``cfg.scale``, ``cfg.ratio``) resized to ``cfg.size``.
    View 2: an independent RandomResizedCrop, then hflip and vflip (each ``p_flip``), then
    ``torch.rot90`` by ``k ~ U{1,2,3}`` (with ``p_rot``, else 0), then colour jitter
    (``p_jitter``: brightness/contrast on every band, one factor per image or, with
    ``per_band``, per band; hue/saturation on ``rgb_bands``), grayscale of the RGB bands
    (``p_gray``) and Gaussian blur (``p_blur``, sigma ~ U(blur_sigma) in view pixels); values
    stay in [0, 1]. Strengths left null in ``cfg`` come from ``cfg.preset``
    (:mod:`glcnet.transforms.presets`; default: the authors' ``reference``).

    Input: float tiles scaled to [0, 1], or uint8 tiles meaning ``value / 255`` (8-bit data;
    a quarter of the bytes to load and transfer), any band count, on any device; the
    renderer is chosen by dtype and device (module doc). Stateless, picklable (usable in
    DataLoader workers, see :class:`ViewCollate`). On the CPU both renderers spend torch's
    thread count across samples, one intra-op thread each (:mod:`glcnet.utils.threads`: no
    collapse when other processes share the cores); float tiles there are rendered in
    sub-batches of ``cfg.cpu_chunk`` samples so intermediates stay in cache. Parameters are
    drawn for the whole batch first, so the result depends neither on the chunking nor on
    the threads.
    """

    def __init__(self, cfg: ViewConfig):
        self.strength = resolve(cfg)  # the preset's strengths where the config leaves them null
        _check_config(cfg, self.strength)
        self.cfg = cfg

    def renderer(self, images: Tensor) -> Renderer:
        """uint8 tiles on the CPU: the uint8 renderer; anything else: the batched torch one."""
        if images.dtype == torch.uint8 and images.device.type == "cpu":
            return render_uint8
        return functools.partial(render_torch, chunk=self.cfg.cpu_chunk)

    @torch.no_grad()
    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Views:
        """Views of ``images`` [B, C, H, W] with parameters drawn from the CPU ``generator``;
        float32 even inside a mixed-precision (autocast) step."""
        device = images.device.type if isinstance(images, Tensor) else "cpu"
        with torch.autocast(device, enabled=False):
            return self._views(images, generator)

    def _views(self, images: Tensor, generator: torch.Generator | None) -> Views:
        cfg, g = self.cfg, generator
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0 \
                or not (images.is_floating_point() or images.dtype == torch.uint8):
            what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise GlcnetError("views: expected a batch [B, C, H, W] of float tiles scaled to [0, 1] "
                              f"or uint8 tiles, got {what}")
        if g is not None and g.device.type != "cpu":
            raise GlcnetError("views: generator must be a CPU torch.Generator (parameters are drawn on the CPU)")
        b, c, height, width = images.shape
        if cfg.rgb_bands is not None and max(cfg.rgb_bands) >= c:
            raise GlcnetError(f"views.rgb_bands {tuple(cfg.rgb_bands)}: images have only {c} bands "
                              "(set views.rgb_bands=null for non-RGB data)")
        p = draw_params(cfg, self.strength, b, c, height, width, g)
        with torch.autocast(images.device.type, enabled=False):  # views in float32, also in a mixed-precision step
            view1, view2 = self.renderer(images)(images, p, cfg.size)
        dev = images.device
        return Views(view1, view2, p["box1"].to(dev), p["box2"].to(dev), p["hflip"].to(dev),
                     p["vflip"].to(dev), p["rot"].to(dev), cfg.size)


class ViewCollate:
    """``collate_fn`` for a DataLoader of ``{"image": [C, H, W]}`` samples: returns :class:`Views`.

    In DataLoader worker processes: torch's global generator, which the DataLoader seeds per
    worker (and Lightning per worker and rank), so ``torch.manual_seed`` in the main process
    fixes the views. In the main process (``num_workers=0``): ``generator`` (the training
    task's per-rank generator, see :class:`glcnet.ssl.base.SSLMethod`), or the global one.
    """

    def __init__(self, cfg: ViewConfig, generator: torch.Generator | None = None):
        self.views = ViewGenerator(cfg)
        self.generator = generator

    def __call__(self, samples: list[dict[str, Tensor]]) -> Views:
        """Stack the samples' images and make their views."""
        in_worker = torch.utils.data.get_worker_info() is not None  # a worker's copy would repeat the stream
        return self.views(torch.stack([x["image"] for x in samples]), None if in_worker else self.generator)
