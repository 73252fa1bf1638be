"""Training-time augmentation that makes clean pdflatex renderings look like real screenshots.

A model trained on one rigid rendering fails on images that differ in scale, margins, anti-aliasing,
compression, tint or stroke weight. `augment` draws each of those at random, keeping dark glyphs on a light
background and the result inside fixed size bounds. Images go in and come out as PIL ``'L'`` images; the
work is done on uint8 arrays with OpenCV primitives, which are several times faster than PIL's for
rotation, blur and rank filters.

Training only: attach `make_train_transform(config)` with ``ds.set_transform`` / ``ds.with_transform`` to
the train split, never to validation or test. `make_train_transform` limits OpenCV to one thread, in the process
that creates it, before DataLoader workers start (setting it inside a forked worker can deadlock).

Look at what it does::

    python -m data.augment --input samples/ --output grid.png --n 8 --seed 0 [--options '{"p_blur": 1.0}']
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from .spacing import has_hand_spacing

# Standard normal quantiles of the 256 byte values: uniform random bytes through this table give Gaussian
# noise at a fraction of the cost of `Generator.standard_normal`.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)
# Screenshots are upscaled smoothly or pixelated, depending on the viewer.
_UPSCALE_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)


@dataclass
class AugmentConfig:
    """Every augmentation parameter. Each ``p_*`` is the chance of one operation; ``strength`` multiplies all.

    Ranges are ``(low, high)`` tuples sampled uniformly (scale and gamma log-uniformly). Intensities are
    0-255. ``strength=0`` turns every operation off, leaving only the size clamp.
    """

    strength: float = 1.0
    p_scale: float = 0.8
    scale_range: tuple[float, float] = (0.5, 2.5)
    p_margin: float = 0.5
    # Each margin as a fraction of the scaled image height.
    margin_range: tuple[float, float] = (0.0, 0.6)
    p_rotate: float = 0.3
    max_rotation_deg: float = 2.0
    # Thicken (min filter) dark strokes by this many pixels at the rendered size, or thin them (max filter
    # averaged with the original, so that hairlines such as fraction bars fade but never vanish).
    p_stroke: float = 0.3
    stroke_px: int = 1
    p_binarize: float = 0.1
    # High thresholds, so that faint hairlines turn black rather than vanish.
    threshold_range: tuple[int, int] = (160, 230)
    p_blur: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.3, 1.0)
    # Levels: white becomes the paper level, black the ink level, with a gamma curve in between. This one
    # operation covers background tint, contrast and brightness.
    p_levels: float = 0.5
    paper_range: tuple[int, int] = (190, 255)
    ink_range: tuple[int, int] = (0, 90)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    min_contrast: int = 90
    p_noise: float = 0.3
    noise_sigma_range: tuple[float, float] = (2.0, 12.0)
    p_jpeg: float = 0.4
    jpeg_quality_range: tuple[int, int] = (20, 90)
    max_width: int = 1024
    max_height: int = 256
    min_height: int = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name} must be in [0, 1], got {value}")
            if f.name.endswith("_range") and not (len(value) == 2 and 0 <= value[0] <= value[1]):
                raise ValueError(f"AugmentConfig.{f.name} must be (low, high) with 0 <= low <= high, got {value}")
        if self.strength < 0:
            raise ValueError(f"AugmentConfig.strength must be >= 0, got {self.strength}")
        if self.scale_range[0] <= 0 or self.gamma_range[0] <= 0:
            raise ValueError("AugmentConfig.scale_range and gamma_range must be positive")
        if self.jpeg_quality_range[1] > 100 or self.paper_range[1] > 255 or self.threshold_range[1] > 255:
            raise ValueError("AugmentConfig: JPEG quality is at most 100 and intensities at most 255")
        if not 1 <= self.min_height <= self.max_height or self.max_width < 1:
            raise ValueError(
                f"AugmentConfig needs 1 <= min_height <= max_height and max_width >= 1, got min_height="
                f"{self.min_height}, max_height={self.max_height}, max_width={self.max_width}"
            )
        if self.stroke_px < 0 or self.max_rotation_deg < 0 or not 0 <= self.min_contrast <= 255:
            raise ValueError("AugmentConfig: stroke_px, max_rotation_deg and min_contrast must be >= 0")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | str | None) -> AugmentConfig:
        """The defaults with some fields replaced: `options` maps field names to values, or is that mapping as a JSON
        object (as ``train.py --augment_options`` passes it). Lists become tuples, so JSON can give the ranges.

        Raises:
            ValueError: for a string that is not a JSON object, a name that is no field, or a bad value.
        """
        return cls().with_options(options)

    def with_options(self, options: Mapping[str, Any] | str | None) -> AugmentConfig:
        """This config with some fields replaced, `options` as for `from_options` (None: unchanged)."""
        if options is None:
            return self
        if isinstance(options, str):
            try:
                options = json.loads(options)
            except json.JSONDecodeError as error:
                raise ValueError(f"augment options {options!r} are not JSON: {error}") from None
        if not isinstance(options, Mapping):
            raise ValueError(f"augment options must be a JSON object of AugmentConfig fields, got {options!r}")
        names = [f.name for f in fields(self)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"unknown augment options {unknown}; AugmentConfig's fields are {names}")
        return replace(
            self, **{name: tuple(value) if isinstance(value, list) else value for name, value in options.items()}
        )

    def chance(self, p: float) -> float:
        """Return the probability `p` of one operation after applying `strength`."""
        return min(1.0, p * self.strength)


@dataclass
class _Geometry:
    """Sizes in pixels: scaled image (sw, sh), rotated box (rw, rh), margins, final (width, height)."""

    sw: int
    sh: int
    rw: int
    rh: int
    top: int
    bottom: int
    left: int
    right: int

    @property
    def width(self) -> int:
        return self.rw + self.left + self.right

    @property
    def height(self) -> int:
        return self.rh + self.top + self.bottom


def _layout(h: int, w: int, scale: float, angle: float, margins: Sequence[float]) -> _Geometry:
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    rw, rh = (math.ceil(sw * c + sh * s - 1e-6), math.ceil(sh * c + sw * s - 1e-6)) if angle else (sw, sh)
    top, bottom, left, right = (round(m * sh) for m in margins)
    return _Geometry(sw, sh, rw, rh, top, bottom, left, right)


def _plan(h: int, w: int, scale: float, angle: float, margins: Sequence[float], cfg: AugmentConfig) -> _Geometry:
    """Fit the drawn scale into the size bounds, then pad vertically if the image is still too short."""
    geo = _layout(h, w, scale, angle, margins)
    for _ in range(4):  # rounding can miss by a pixel; another pass settles it
        if geo.height < cfg.min_height:
            fit = min(cfg.min_height / geo.height, cfg.max_width / geo.width)
            if fit <= 1.0:
                break
        else:
            fit = min(cfg.max_width / geo.width, cfg.max_height / geo.height)
            if fit >= 1.0:
                break
        scale *= fit
        geo = _layout(h, w, scale, angle, margins)
    if geo.height < cfg.min_height:  # too wide to scale up any further: add white above and below
        extra = cfg.min_height - geo.height
        geo.top += extra // 2
        geo.bottom += extra - extra // 2
    return geo


def _to_gray(image: Image.Image) -> np.ndarray:
    if not isinstance(image, Image.Image):
        raise TypeError(f"augment expects a PIL image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"cannot augment an empty image of size {image.size}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels would turn black; put the formula on white paper first.
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image if image.mode == "L" else image.convert("L"))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))


def _geometry(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Scale, rotate and pad with white, in that order, within the size bounds."""
    scale = _log_uniform(rng, cfg.scale_range) if rng.random() < cfg.chance(cfg.p_scale) else 1.0
    angle = 0.0
    if rng.random() < cfg.chance(cfg.p_rotate):
        angle = _uniform(rng, (-cfg.max_rotation_deg, cfg.max_rotation_deg))
    margins = [0.0] * 4
    if rng.random() < cfg.chance(cfg.p_margin):
        margins = [_uniform(rng, cfg.margin_range) for _ in range(4)]
    upscale_interpolation = _UPSCALE_INTERPOLATIONS[int(rng.integers(len(_UPSCALE_INTERPOLATIONS)))]

    h, w = img.shape
    geo = _plan(h, w, scale, angle, margins, cfg)
    if (geo.sw, geo.sh) != (w, h):
        shrinking = geo.sw * geo.sh < w * h
        img = cv2.resize(img, (geo.sw, geo.sh), interpolation=cv2.INTER_AREA if shrinking else upscale_interpolation)
    if angle:
        # Rotate about the centre of the expanded box and shift by the margins in the same warp.
        matrix = cv2.getRotationMatrix2D((geo.sw / 2, geo.sh / 2), angle, 1.0)
        matrix[0, 2] += (geo.rw - geo.sw) / 2 + geo.left
        matrix[1, 2] += (geo.rh - geo.sh) / 2 + geo.top
        return cv2.warpAffine(img, matrix, (geo.width, geo.height), flags=cv2.INTER_LINEAR, borderValue=255)
    if geo.top or geo.bottom or geo.left or geo.right:
        img = cv2.copyMakeBorder(img, geo.top, geo.bottom, geo.left, geo.right, cv2.BORDER_CONSTANT, value=255)
    return img


def _levels_table(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    paper = _uniform(rng, cfg.paper_range)
    ink = min(_uniform(rng, cfg.ink_range), max(0.0, paper - cfg.min_contrast))
    gamma = _log_uniform(rng, cfg.gamma_range)
    x = np.arange(256, dtype=np.float32) / 255.0
    return np.clip(np.rint(ink + (paper - ink) * x**gamma), 0, 255).astype(np.uint8)


def _fit_bounds(img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Guarantee the size bounds whatever the plan's rounding did."""
    h, w = img.shape
    if w <= cfg.max_width and cfg.min_height <= h <= cfg.max_height:
        return img
    fit = min(1.0, cfg.max_width / w, cfg.max_height / h)
    size = (max(1, min(cfg.max_width, int(w * fit))), max(1, min(cfg.max_height, int(h * fit))))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if img.shape[0] < cfg.min_height:
        extra = cfg.min_height - img.shape[0]
        img = cv2.copyMakeBorder(img, extra // 2, extra - extra // 2, 0, 0, cv2.BORDER_CONSTANT, value=255)
    return img


def augment(image: Image.Image, config: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    """Augment one formula image.

    Args:
        image: any PIL image; it is converted to grayscale (transparent areas become white).
        config: the augmentation parameters.
        rng: the only source of randomness: the same generator state gives the same output.

    Returns:
        A PIL ``'L'`` image, dark on light, at most ``max_width`` x ``max_height`` and at least
        ``min_height`` pixels high.

    Raises:
        TypeError: if `image` is not a PIL image.
        ValueError: if `image` has no pixels.
    """
    img = _to_gray(image)
    cfg = config
    # Stroke weight first, at the rendered size, so that "1 px" means the same for every output scale.
    if cfg.stroke_px and rng.random() < cfg.chance(cfg.p_stroke):
        kernel = np.ones((cfg.stroke_px + 1, cfg.stroke_px + 1), np.uint8)
        if rng.random() < 0.5:
            img = cv2.erode(img, kernel)
        else:
            img = cv2.addWeighted(img, 0.5, cv2.dilate(img, kernel), 0.5, 0.0)
    img = _geometry(img, cfg, rng)
    if rng.random() < cfg.chance(cfg.p_binarize):
        img = cv2.threshold(
            img, int(rng.integers(cfg.threshold_range[0], cfg.threshold_range[1] + 1)), 255, cv2.THRESH_BINARY
        )[1]
    if rng.random() < cfg.chance(cfg.p_blur):
        img = cv2.GaussianBlur(img, (0, 0), _uniform(rng, cfg.blur_sigma_range))
    if rng.random() < cfg.chance(cfg.p_levels):
        img = cv2.LUT(img, _levels_table(cfg, rng))
    if rng.random() < cfg.chance(cfg.p_noise):
        noise = _NORMAL_QUANTILES[rng.integers(0, 256, img.shape, dtype=np.uint8)]
        img = cv2.addWeighted(img, 1.0, noise, _uniform(rng, cfg.noise_sigma_range), 0.0, dtype=cv2.CV_8U)
    if rng.random() < cfg.chance(cfg.p_jpeg):
        quality = int(rng.integers(cfg.jpeg_quality_range[0], cfg.jpeg_quality_range[1] + 1))
        ok, buffer = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"OpenCV failed to JPEG-encode an image of shape {img.shape}")
        img = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise RuntimeError(f"OpenCV failed to decode its own JPEG at quality {quality}")
    return Image.fromarray(_fit_bounds(img, cfg))


class TrainTransform:
    """A `datasets` transform that augments the image column of a batch; see `make_train_transform`."""

    def __init__(
        self,
        config: AugmentConfig,
        seed: int | None,
        image_column: str,
        spaced_config: AugmentConfig | None = None,
        formula_column: str = "formula",
    ) -> None:
        self.config = config
        self.seed = seed
        self.image_column = image_column
        self.spaced_config = spaced_config
        self.formula_column = formula_column
        self._pid: int | None = None
        self._rng: np.random.Generator | None = None

    def _generator(self) -> np.random.Generator:
        # DataLoader workers inherit a copy of this object: each process needs its own generator, or every
        # worker would draw the same augmentations. torch gives each worker a seed that differs per worker and
        # per epoch and follows torch.manual_seed, so workers (re)started each epoch do not replay the last one.
        if self._rng is None or self._pid != os.getpid():
            worker_seed = _worker_seed()
            entropy = [s for s in (self.seed, worker_seed) if s is not None]
            self._rng = np.random.default_rng(entropy or None)
            self._pid = os.getpid()
        return self._rng

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.image_column not in batch:
            raise KeyError(f"batch has no column {self.image_column!r}; columns: {sorted(batch)}")
        rng = self._generator()
        if self.spaced_config is None:
            configs = [self.config] * len(batch[self.image_column])
        elif self.formula_column not in batch:
            raise KeyError(f"batch has no column {self.formula_column!r}; columns: {sorted(batch)}")
        else:
            configs = [self.spaced_config if has_hand_spacing(f) else self.config for f in batch[self.formula_column]]
        batch[self.image_column] = [
            augment(image, config, rng) for image, config in zip(batch[self.image_column], configs, strict=True)
        ]
        return batch


def _worker_seed() -> int | None:
    """The torch DataLoader worker's seed, or None outside a worker."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return None
    info = get_worker_info()
    return None if info is None else info.seed


def make_train_transform(
    config: AugmentConfig | None = None,
    seed: int | None = None,
    image_column: str = "image",
    spaced_config: AugmentConfig | None = None,
    formula_column: str = "formula",
) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
    """Build a batch transform for ``train_ds.set_transform(...)`` (training split only).

    Args:
        config: augmentation parameters; the defaults when None.
        seed: makes the augmentations reproducible in the main process. In a DataLoader worker it is
            combined with the worker's torch seed, which differs per worker and epoch and is reproducible
            under ``torch.manual_seed``. Fresh OS entropy when None outside workers.
        image_column: the column of PIL images to augment; other columns pass through unchanged.
        spaced_config: if given, the parameters for images whose formula (in `formula_column`) holds hand spacing
            commands (`data.spacing.has_hand_spacing`), e.g. without blur and noise, so that a gap is only ever
            labelled where it can be seen; `config` for the others.
        formula_column: the column of LaTeX formulas that `spaced_config` looks at.

    Returns:
        A callable taking a batch dict of lists and returning it with augmented PIL ``'L'`` images.
    """
    # Augmentation runs one image per DataLoader worker and core; OpenCV's own threads would only oversubscribe
    # the cores, and setting this inside a forked worker can deadlock, so it is set here, before workers start.
    cv2.setNumThreads(1)
    return TrainTransform(config or AugmentConfig(), seed, image_column, spaced_config, formula_column)


def _collect_pngs(inputs: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(path.glob("*.png")))
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    if not paths:
        raise FileNotFoundError(f"no PNG images found in {list(inputs)}")
    return paths


def make_grid(
    images: Sequence[Image.Image], config: AugmentConfig, n: int, seed: int, max_width: int = 2048
) -> Image.Image:
    """Lay out each image followed by `n` augmentations, at true pixel size, with light separators.

    Each source image starts a new block (wrapping at `max_width`); a pale blue frame marks every image's
    edges so margins and tints stay visible, and a grey band separates the blocks.
    """
    rng = np.random.default_rng(seed)
    gap, band = 6, 4
    blocks: list[list[tuple[int, int, Image.Image]]] = []  # per source image: (x, y, cell) in the block
    for image in images:
        cells = [image.convert("L")] + [augment(image, config, rng) for _ in range(n)]
        placed, x, y, line_h = [], gap, gap, 0
        for cell in cells:
            if x > gap and x + cell.width + gap > max_width:
                x, y, line_h = gap, y + line_h + gap, 0
            placed.append((x, y, cell))
            x += cell.width + gap
            line_h = max(line_h, cell.height)
        blocks.append(placed)
    widths = [max(x + c.width + gap for x, _, c in b) for b in blocks]
    heights = [max(y + c.height + gap for _, y, c in b) for b in blocks]
    grid = Image.new("RGB", (max(widths), sum(heights) + band * (len(blocks) - 1)), (235, 235, 235))
    draw = ImageDraw.Draw(grid)
    top = 0
    for placed, height in zip(blocks, heights, strict=True):
        for x, y, cell in placed:
            draw.rectangle((x - 1, top + y - 1, x + cell.width, top + y + cell.height), outline=(150, 190, 240))
            grid.paste(cell.convert("RGB"), (x, top + y))
        top += height
        if top < grid.height:
            draw.rectangle((0, top, grid.width, top + band - 1), fill=(170, 170, 170))
            top += band
    return grid


def main(argv: Sequence[str] | None = None) -> None:
    """Write a PNG grid of originals and their augmentations for a person to inspect."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, help="PNG files and/or folders of PNGs")
    parser.add_argument("--output", required=True, help="where to write the grid PNG")
    parser.add_argument("--n", type=int, default=8, help="augmented versions per image")
    parser.add_argument("--rows", type=int, default=8, help="at most this many source images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=1.0, help="multiplies every operation's chance")
    parser.add_argument(
        "--options", help="AugmentConfig fields as a JSON object, e.g. '{\"blur_sigma_range\": [0.3, 1.6]}'"
    )
    args = parser.parse_args(argv)
    try:
        config = replace(AugmentConfig.from_options(args.options), strength=args.strength)
    except ValueError as error:
        parser.error(str(error))
    images = []
    for path in _collect_pngs(args.input)[: args.rows]:
        with Image.open(path) as image:
            images.append(image.copy())
    grid = make_grid(images, config, args.n, args.seed)
    grid.save(args.output)
    print(f"wrote {args.output} ({grid.width}x{grid.height}, {len(images)} images x {args.n} augmentations)")


if __name__ == "__main__":
    main()
