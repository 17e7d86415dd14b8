"""The paper's Table 1 augmentations (training) and the no-op evaluation transform.

Every row of Table 1 is one transform applied with probability 0.5; the random crop is
always applied in training. Nothing is applied at validation or inference. Images are
float32 in [0, 1] throughout — never 8-bit — so the 16-bit precision of the prepared
PNGs survives augmentation; masks are uint8 {0, 1} and follow every geometric transform
with nearest-neighbour interpolation, so they stay binary.

How each row maps to an albumentations 2.0 transform, and how the paper's unit-less
numbers are read, is tabulated in ``docs/augmentations.md`` and returned by
:func:`describe_train_transform`. In short: a single number in Table 1 is a fixed
value, a range is sampled uniformly; pixel amounts (translation) scale with
``image_size / 512``; "brightness/contrast 30–100" is an intensity factor of 30–100 %;
"Gaussian noise 0.5" is a standard deviation of 0.5 % of full scale.

Host/device split: with ``device_rows=True`` the pipeline runs every row up to the Gaussian
blur and clips, while the last two rows (median blur, cutout) only *draw* their decisions —
with the very same draws as the all-on-host pipeline — into an int64 record returned under
``"device_params"`` (layout: `mammoseg.training.device_augment.PARAM_FIELDS`);
`mammoseg.training.device_augment.apply_device_rows` applies them to the batch on the training device.
Both rows commute with the clip, so host + device equals the all-on-host result bit for bit.

Reproducibility: the returned ``A.Compose`` draws from its own random state. A copy of it
lives in every DataLoader worker, so `mammoseg.training.dataset` reseeds it per sample with
``mammoseg.seeding.seed_transform`` from a seed that depends only on (seed, epoch, index):
the augmentation of a sample is then independent of the number of workers and of resuming.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
import numpy as np
from scipy import ndimage

from mammoseg.seeding import seed_transform
from mammoseg.training.device_augment import (
    CUTOUT,
    CUTOUT_BOTTOM,
    CUTOUT_LEFT,
    CUTOUT_RIGHT,
    CUTOUT_TOP,
    DEVICE_PARAMS_KEY,
    MEDIAN,
    MEDIAN_KERNEL,
    no_device_rows,
)

__all__ = [
    "DEVICE_PARAMS_KEY",
    "DeferredCutout",
    "DeferredMedianBlur",
    "FloatMedianBlur",
    "build_eval_transform",
    "build_train_transform",
    "describe_train_transform",
]

#: Probability of every Table 1 row (the random crop is always applied).
P = 0.5
#: The paper's prepared size; pixel amounts in Table 1 refer to it.
PAPER_SIZE = 512
ROTATE_DEG = 3.0
SCALE_RANGE = (0.7, 1.3)
TRANSLATE_PX_AT_512 = 50
GAMMA_RANGE = (0.5, 1.8)
#: "30–100": intensity factor from 30 % to 100 % (see docs/augmentations.md).
INTENSITY_FACTOR_RANGE = (0.30, 1.00)
SALT_PEPPER_AMOUNT = 0.1
#: "0.5": noise SD of 0.5 % of full scale on the [0, 1] image (see docs/augmentations.md).
NOISE_STD = 0.005
BLUR_KERNELS = (3, 7, 11)
GAUSS_SIGMA_RANGE = (1.0, 5.0)
#: Cutout: one square hole covering 20 % of the crop's area (side sqrt(0.2) ≈ 0.447).
CUTOUT_AREA = 0.2


class FloatMedianBlur(A.ImageOnlyTransform):
    """Median blur with a fixed odd kernel that keeps float32 precision.

    albumentations' ``MedianBlur`` converts float images to 8-bit and back (its kernel is
    ``@uint8_io``), which would throw away the 16-bit precision. OpenCV's ``medianBlur``
    takes float32 only for kernels 3 and 5, so larger kernels use
    ``scipy.ndimage.median_filter`` with the same replicated border (identical results).
    """

    def __init__(self, ksize: int = 3, p: float = 0.5):
        super().__init__(p=p)
        if ksize < 3 or ksize % 2 == 0:
            raise ValueError(f"FloatMedianBlur: kernel size must be odd and >= 3, got {ksize}")
        self.ksize = int(ksize)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        img = np.ascontiguousarray(img, dtype=np.float32)
        if self.ksize <= 5:
            return cv2.medianBlur(img, self.ksize)
        size = (self.ksize, self.ksize) + (1,) * (img.ndim - 2)
        return ndimage.median_filter(img, size=size, mode="nearest")

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ksize",)


class _Finalise(A.DualTransform):
    """Last step: image float32 clipped to [0, 1]; mask uint8 {0, 1}.

    With `emit_device_params` (split pipeline) the output always holds a device-row record,
    all zeros when no device row fired.
    """

    def __init__(self, emit_device_params: bool = False) -> None:
        super().__init__(p=1.0)
        self.emit_device_params = emit_device_params

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return (mask > 0).astype(np.uint8)

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().apply_with_params(params, *args, **kwargs)
        if self.emit_device_params and DEVICE_PARAMS_KEY not in out:
            out[DEVICE_PARAMS_KEY] = no_device_rows()
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("emit_device_params",)


def _with_record(data: dict[str, Any], fields: dict[int, int]) -> dict[str, Any]:
    """`data` with its device-row record (a fresh one if none yet) updated by `fields`."""
    record = np.array(data.get(DEVICE_PARAMS_KEY, no_device_rows()), dtype=np.int64, copy=True)
    for index, value in fields.items():
        record[index] = value
    return {**data, DEVICE_PARAMS_KEY: record}


class DeferredMedianBlur(FloatMedianBlur):
    """Draws exactly as `FloatMedianBlur` but leaves the image: records its kernel for the device."""

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _with_record(kwargs, {MEDIAN: 1, MEDIAN_KERNEL: self.ksize})


class DeferredCutout(A.CoarseDropout):
    """Draws exactly as `CoarseDropout` (one hole) but leaves the image: records the hole."""

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        holes = np.asarray(params["holes"]).reshape(-1, 4)
        if len(holes) != 1:
            raise ValueError(f"DeferredCutout: expected one hole, got {len(holes)}")
        x0, y0, x1, y1 = (int(v) for v in holes[0])
        return _with_record(kwargs, {CUTOUT: 1, CUTOUT_TOP: y0, CUTOUT_LEFT: x0, CUTOUT_BOTTOM: y1, CUTOUT_RIGHT: x1})


def translate_px(image_size: int) -> int:
    """Table 1's 50 px translation, scaled from the paper's 512 px to `image_size`."""
    return max(0, round(TRANSLATE_PX_AT_512 * image_size / PAPER_SIZE))


def _geometric(crop_size: int, image_size: int) -> list[A.BasicTransform]:
    t = translate_px(image_size)
    affine = dict(
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0.0,
        fill_mask=0,
        p=P,
    )
    return [
        A.Affine(rotate=(-ROTATE_DEG, ROTATE_DEG), **affine),
        A.Affine(scale=SCALE_RANGE, keep_ratio=True, **affine),
        A.Affine(translate_px={"x": (-t, t), "y": (-t, t)}, **affine),
        A.RandomCrop(height=crop_size, width=crop_size, pad_if_needed=True,
                     border_mode=cv2.BORDER_CONSTANT, fill=0.0, fill_mask=0, p=1.0),
        A.HorizontalFlip(p=P),
    ]


def _photometric(device_rows: bool) -> list[A.BasicTransform]:
    lo, hi = INTENSITY_FACTOR_RANGE
    side = math.sqrt(CUTOUT_AREA)
    median = DeferredMedianBlur if device_rows else FloatMedianBlur
    cutout = DeferredCutout if device_rows else A.CoarseDropout
    return [
        A.RandomGamma(gamma_limit=(GAMMA_RANGE[0] * 100, GAMMA_RANGE[1] * 100), p=P),
        # albumentations 2: out = alpha * x + beta; alpha = 1 + contrast draw, beta = 0 here.
        A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0), contrast_limit=(lo - 1.0, hi - 1.0), p=P),
        A.SaltAndPepper(amount=(SALT_PEPPER_AMOUNT, SALT_PEPPER_AMOUNT), p=P),
        A.GaussNoise(std_range=(NOISE_STD, NOISE_STD), mean_range=(0.0, 0.0), p=P),
        A.OneOf([A.GaussianBlur(blur_limit=(k, k), sigma_limit=GAUSS_SIGMA_RANGE, p=1.0) for k in BLUR_KERNELS], p=P),
        A.OneOf([median(ksize=k, p=1.0) for k in BLUR_KERNELS], p=P),
        # Mask left unchanged (fill_mask=None): classic Cutout occludes the image, not the label.
        cutout(num_holes_range=(1, 1), hole_height_range=(side, side),
                        hole_width_range=(side, side), fill=0.0, fill_mask=None, p=P),
    ]


def build_train_transform(
    crop_size: int = 448,
    image_size: int = 512,
    *,
    geometric_only: bool = False,
    device_rows: bool = False,
    seed: int | None = None,
) -> A.Compose:
    """Table 1 training augmentation for `image_size` images, cropped to `crop_size`.

    Called as ``t(image=float32 H×W in [0,1], mask=uint8 H×W {0,1})``; returns a dict with
    ``image`` (float32 crop_size×crop_size in [0,1]) and ``mask`` (uint8 {0,1}).
    ``geometric_only`` keeps only the geometric rows (used by tests to check alignment).
    ``device_rows`` builds the host part of the split pipeline: median blur and cutout are
    drawn but not applied, and the dict also holds ``"device_params"`` (int64, shape
    (len(PARAM_FIELDS),)) for `mammoseg.training.device_augment.apply_device_rows`. Without it every
    row runs here (the reference pipeline).
    """
    if crop_size < 1 or image_size < 1:
        raise ValueError(f"crop_size and image_size must be positive, got {crop_size}, {image_size}")
    transforms = _geometric(crop_size, image_size)
    if not geometric_only:
        transforms += _photometric(device_rows)
    transforms.append(_Finalise(emit_device_params=device_rows))
    compose = A.Compose(transforms)
    if seed is not None:
        seed_transform(compose, seed)
    return compose


def build_eval_transform() -> A.Compose:
    """No augmentation at validation or inference: an identity transform."""
    return A.Compose([A.NoOp(p=1.0)])


def describe_train_transform(crop_size: int = 448, image_size: int = 512) -> list[dict[str, Any]]:
    """One row per Table 1 entry: the paper's wording, the transform used, its parameters, p,
    and where the split pipeline applies it (``split``: "host" or "device")."""
    t = translate_px(image_size)
    side = math.sqrt(CUTOUT_AREA)
    lo, hi = INTENSITY_FACTOR_RANGE
    rows = [
        {"table1": "rotation ±3°", "transform": "Affine", "params": f"rotate=(-{ROTATE_DEG:g}, {ROTATE_DEG:g}) degrees", "p": P},
        {"table1": "scale 0.7–1.3", "transform": "Affine", "params": f"scale={SCALE_RANGE}, keep_ratio=True", "p": P},
        {"table1": "translation 50 px", "transform": "Affine",
         "params": f"translate_px=±{t} in x and y independently (50 × {image_size}/512)", "p": P},
        {"table1": "random crop 448×448", "transform": "RandomCrop",
         "params": f"{crop_size}×{crop_size}, pad_if_needed=True", "p": 1.0},
        {"table1": "horizontal flip", "transform": "HorizontalFlip", "params": "", "p": P},
        {"table1": "gamma 0.5–1.8", "transform": "RandomGamma",
         "params": f"gamma_limit=({GAMMA_RANGE[0] * 100:g}, {GAMMA_RANGE[1] * 100:g}) per cent", "p": P},
        {"table1": "brightness/contrast 30–100", "transform": "RandomBrightnessContrast",
         "params": f"intensity factor {lo:g}–{hi:g} (contrast_limit=({lo - 1:g}, {hi - 1:g}), brightness_limit=0)", "p": P},
        {"table1": "salt-and-pepper 0.1", "transform": "SaltAndPepper",
         "params": f"amount={SALT_PEPPER_AMOUNT:g} of the pixels", "p": P},
        {"table1": "Gaussian noise 0.5", "transform": "GaussNoise",
         "params": f"std={NOISE_STD:g} on the [0,1] scale (0.5 % of full scale)", "p": P},
        {"table1": "Gaussian blur (kernel 3/7/11, σ 1–5)", "transform": "OneOf[GaussianBlur]",
         "params": f"kernel one of {BLUR_KERNELS}, sigma {GAUSS_SIGMA_RANGE}", "p": P},
        {"table1": "median blur (kernel 3/7/11)", "transform": "OneOf[FloatMedianBlur]",
         "params": f"kernel one of {BLUR_KERNELS}, float32", "p": P},
        {"table1": "cutout 20%", "transform": "CoarseDropout",
         "params": f"one square hole, side {side:.3f} of the crop (20 % of its area), fill 0, mask unchanged", "p": P},
    ]
    return [{**row, "split": "device" if i >= len(rows) - 2 else "host"} for i, row in enumerate(rows)]
