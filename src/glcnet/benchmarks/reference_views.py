"""Re-implementation of the reference GLCNet view pipeline, per sample (benchmark baseline only).

Follows ``T-SS-GLCNet/utils/data_for_self_GLCNet.py`` of GeoX-Lab/G-RSIM
(``join_transform`` + ``Train_Dataset.__getitem__`` + ``get_index``): one tile at a time
in Python, with a per-pixel index map (``i * W + j``) carried through every geometric
transform and a set-based search of the index maps for the patch centres. OpenCV is
replaced by PIL/NumPy equivalents (OpenCV is not a dependency); the known crashes on
current NumPy/Python are fixed the minimal way (signed hue shift, ``random.sample`` on a
list). Not used for training: ``glcnet.transforms`` and ``glcnet.ssl.patches`` replace it.
"""

from __future__ import annotations

import random
import time

import numpy as np
from PIL import Image, ImageFilter


def _resize_band(band: np.ndarray, size: int, resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(band).resize((size, size), resample))


def random_resized_crop(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[np.ndarray, np.ndarray]:
    """The reference's 5-try crop (integer box, random w/h swap), bilinear image, nearest labels."""
    height, width = image.shape[:2]
    area = height * width
    for _ in range(5):
        target = rng.uniform(*scale) * area
        aspect = rng.uniform(*ratio)
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if w < width and h < height:
            i, j = rng.integers(0, height - h), rng.integers(0, width - w)
            break
    else:  # the reference's fallback
        w = min(w, height)
        i, j = (height - w) // 2, (width - w) // 2
    image, label = image[i:i + h, j:j + w], label[i:i + h, j:j + w]
    out = np.stack([_resize_band(image[:, :, c], size, Image.Resampling.BILINEAR) for c in range(image.shape[2])], 2)
    return out, _resize_band(label, size, Image.Resampling.NEAREST)


def hue_saturation_value(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``randomHueSaturationValue`` (hue +-30 of 180, sat +-5, val +-15) through PIL's HSV."""
    hsv = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("HSV")).astype(np.int16)
    hue = int(rng.integers(-30, 31)) * 256 // 180
    hsv[:, :, 0] = (hsv[:, :, 0] + hue) % 256
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] + rng.uniform(-5, 5), 0, 255)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + rng.uniform(-15, 15), 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))


def color_augment(band: np.ndarray, rng: np.random.Generator, brightness=0.1, contrast=0.1) -> np.ndarray:
    """``randomColorAugment``: blend with white/black, then scale."""
    f = rng.uniform(max(0, 1 - brightness), 1 + brightness)
    alpha = abs(f - 1)
    degenerate = 255.0 if f > 1 else 0.0
    band = np.clip(np.rint(degenerate * alpha + band * (1 - alpha)), 0, 255)
    return np.clip(band * rng.uniform(max(0, 1 - contrast), 1 + contrast), 0, 255).astype(np.uint8)


def pixel_noise(band: np.ndarray, rng: np.random.Generator, p=0.001) -> np.ndarray:
    """``randpixel_noise``: replace a fraction ``p`` of pixels with uniform noise."""
    prob = rng.random(band.shape)
    noise = rng.integers(0, 256, band.shape, dtype=np.uint8)
    noise[prob >= p] = 0
    out = band.copy()
    out[prob < p] = 0
    return out + noise


def color_aug(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``color_aug``: HSV on the first 3 bands; per-band brightness/contrast + noise if > 3 bands."""
    image[:, :, :3] = hue_saturation_value(image[:, :, :3], rng)
    if image.shape[2] > 3:
        for c in range(image.shape[2]):
            image[:, :, c] = pixel_noise(color_augment(image[:, :, c], rng), rng)
    return image


def join_transform(image: np.ndarray, index: np.ndarray, size: int, rng: np.random.Generator):
    """Two crops; flips, rotation, colour, gray, blur on the second; index maps follow."""
    img1, lbl1 = random_resized_crop(image, index, size, rng)
    img2, lbl2 = random_resized_crop(image, index, size, rng)
    f = [1, 0, -1, 2, 2][rng.integers(0, 5)]
    if f != 2:
        axes = (0, 1) if f == -1 else (f,)
        img2, lbl2 = np.flip(img2, axes), np.flip(lbl2, axes)
    if rng.random() < 0.8:
        k = int(rng.integers(0, 4))
        img2, lbl2 = np.rot90(img2, k, (1, 0)), np.rot90(lbl2, k, (1, 0))
    img2 = np.ascontiguousarray(img2)
    if rng.random() < 0.8:
        img2 = color_aug(img2, rng)
    if rng.random() < 0.1:  # random_image_to_gray: copy one band to all
        img2[:] = img2[:, :, int(rng.integers(img2.shape[2]))][:, :, None]
    if rng.random() < 0.5:  # random_GaussianBlur, kernel 3/5/7 -> OpenCV's sigma for it
        k = 2 * int(rng.integers(1, 4)) + 1
        blur = ImageFilter.GaussianBlur(0.3 * ((k - 1) * 0.5 - 1) + 0.8)
        img2 = np.stack([np.asarray(Image.fromarray(img2[:, :, c]).filter(blur))
                         for c in range(img2.shape[2])], 2)
    return img1, img2, lbl1, np.ascontiguousarray(lbl2)


def get_index(label1: np.ndarray, label2: np.ndarray, patch_size: int, patch_num: int,
              rnd: random.Random) -> np.ndarray:
    """The reference's patch search: centres (row1, col1, row2, col2) [P, 4] via the index maps."""
    half = patch_size // 2
    result = np.zeros((patch_num, 4))
    inner1 = label1[half:label1.shape[0] - half, half:label1.shape[1] - half].reshape(-1).tolist()
    inner2 = label2[half:label2.shape[0] - half, half:label2.shape[1] - half].reshape(-1).tolist()
    candidates = list(set(inner1).intersection(inner2))

    def locate(label: np.ndarray, value) -> np.ndarray:
        hits = np.argwhere(label == value)
        for r, c in hits:  # first hit whose patch lies inside the view
            if r - half >= 0 and r + half <= label.shape[0] and c - half >= 0 and c + half <= label.shape[1]:
                return np.array([r, c])
        return hits[0]

    for p in range(patch_num):
        a = rnd.sample(list(candidates), 1)
        r1, r2 = locate(label1, a), locate(label2, a)
        result[p] = [r1[0], r1[1], r2[0], r2[1]]
        taken = label1[r1[0] - half:r1[0] + half, r1[1] - half:r1[1] + half].reshape(-1).tolist()
        rest = set(candidates).difference(taken)
        if len(rest) > 1:
            candidates = list(rest)
    return result


def reference_sample(tile: np.ndarray, rng: np.random.Generator, rnd: random.Random, size: int = 224,
                     patch_size: int = 48, patch_num: int = 4,
                     times: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """``Train_Dataset.__getitem__`` for one ``[H, W, C]`` uint8 tile.

    ``times`` (optional) accumulates seconds spent in ``transform`` and ``patches``.
    """
    t0 = time.perf_counter()
    height, width = tile.shape[:2]
    index = np.arange(height * width, dtype=np.int32).reshape(height, width)
    img1, img2, lbl1, lbl2 = join_transform(tile, index, size, rng)
    img1 = img1.astype(np.float32).transpose(2, 0, 1).copy() / 255.0 * 3.2 - 1.6
    img2 = img2.astype(np.float32).transpose(2, 0, 1).copy() / 255.0 * 3.2 - 1.6
    t1 = time.perf_counter()
    idx = get_index(lbl1.astype(np.float32), lbl2.astype(np.float32), patch_size, patch_num, rnd)
    if times is not None:
        times["transform"] = times.get("transform", 0.0) + t1 - t0
        times["patches"] = times.get("patches", 0.0) + time.perf_counter() - t1
    return {"image": img1, "image1": img2, "index": idx.astype(np.int64)}
