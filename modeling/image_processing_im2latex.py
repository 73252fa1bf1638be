"""Image processor for im2latex: any image a user may send -> a bounded, padded batch of ink intensities."""

import io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

ImageLike = Image.Image | str | os.PathLike | bytes | np.ndarray
# Reading (not training) pads each image up to these (height, width) steps: see `Im2LatexImageProcessor.padded_shape`.
READING_BUCKET = (96, 512)
# An image whose background noise (`Im2LatexImageProcessor.background_noise`) is above this counts as noisy: `prepare`
# filters it (noise measured at the image's own resolution), and `enlarged` leaves it alone (noise measured on the
# prepared image). Chosen on the first 300 validation images, prepared: scaled to 0.4-0.7 (JPEG and levels as in
# training), a background noise of 0.005 (median) and 0.019 (95th percentile); scaled to 0.4-1.0 with blur (sigma
# 0.5-1.5) and noise (sigma 8-20) added, 0.034 (median) and 0.020 (5th percentile); as rendered, 0.0001 at the 99th
# percentile. The filter's checks at the images' own resolution are in the model card (Decoding: noisy images).
NOISY_BACKGROUND = 0.02


class InvalidImageError(ValueError):
    """An input that is not an image this processor can read; the message names the input."""


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"'{image}'"
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def _to_grayscale(image: Image.Image) -> Image.Image:
    """Flatten any PIL mode to 8-bit grayscale. Transparent pixels become a background that contrasts with the
    opaque ones, so dark glyphs on a transparent page and light glyphs on one both stay readable."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        luminance = np.asarray(rgba.convert("L"), dtype=np.float32)
        opaque = alpha.sum()
        light_ink = opaque > 0 and (luminance * alpha).sum() / opaque > 127
        background = 0.0 if light_ink else 255.0
        flat = luminance * alpha + background * (1.0 - alpha)
        return Image.fromarray(np.round(flat).astype(np.uint8), mode="L")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if image.mode.startswith("I;16") else (values.min(), values.max())
        scaled = (values - low) * (255.0 / max(high - low, 1e-12))
        return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "L":
        return image
    if image.mode in ("1", "P"):
        return image.convert("L")
    return image.convert("RGB").convert("L")


def _open(source: Path | io.BytesIO, name: str) -> Image.Image:
    try:
        return Image.open(source)
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidImageError(f"{name} is not an image file that can be read: {error}") from error
    except Image.DecompressionBombError as error:
        raise InvalidImageError(f"image {name} is too large to decode safely: {error}") from error


def load_image(image: ImageLike, max_pixels: int = 40_000_000) -> Image.Image:
    """Read an image from a path, bytes, a numpy array or a PIL image, as 8-bit grayscale ('L').

    Multi-frame images give their first frame. Anything that is not a readable image, or that has more than
    `max_pixels` pixels (a decompression bomb, or simply too big to be a formula), raises `InvalidImageError`
    naming the input; a missing path raises `FileNotFoundError`.
    """
    name = _describe(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] in (1, 3, 4):
            array = array[..., 0] if array.shape[2] == 1 else array
        if array.ndim not in (2, 3) or array.size == 0:
            raise InvalidImageError(f"image {name} has shape {image.shape}; expected (H, W) or (H, W, 1|3|4)")
        if array.dtype != np.uint8:
            array = array.astype(np.float64)
            scale = 255.0 if array.max() <= 1.0 else 255.0 / max(array.max(), 1e-12)
            array = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {name} does not exist or is not a file")
        image = _open(path, name)
    elif isinstance(image, (bytes, bytearray)):
        image = _open(io.BytesIO(image), name)
    elif not isinstance(image, Image.Image):
        raise InvalidImageError(f"cannot read an image from {name}: give a path, bytes, a numpy array or a PIL image")
    # Opening only reads the header, so the size check comes before any pixel is decoded.
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"image {name} is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image {name} is {width}x{height} pixels, more than the limit of {max_pixels:,}; downscale it first"
        )
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidImageError(f"image {name} could not be decoded: {error}") from error
    return _to_grayscale(image)


class Im2LatexImageProcessor(BaseImageProcessor):
    r"""
    Turns formula images into `pixel_values` of shape (batch, 1, height, width) holding ink intensity in [0, 1]
    (background 0), so padding with zeros is padding with background.

    Steps per image: read safely (any mode, transparency, 16 bit, first frame, size limit), invert if the background
    is dark, crop to the ink, scale into [`min_height`, `max_height`] x [1, `max_width`] keeping the aspect ratio,
    stretch contrast so the darkest ink is 1, add a `border` of background. The batch is then padded to its largest
    image, rounded up to `pad_to_multiple_of` (the encoder's stride).

    Args:
        min_height (`int`, defaults to 32): images whose ink is lower are scaled up (width bound permitting).
        max_height (`int`, defaults to 192): images are scaled down to at most this height, border included.
        max_width (`int`, defaults to 1024): images are scaled down to at most this width, border included.
        border (`int`, defaults to 4): background pixels added around the cropped ink.
        pad_to_multiple_of (`int`, defaults to 16): output sides are multiples of this.
        ink_threshold (`int`, defaults to 40): a pixel this much darker than the background counts as ink.
        do_crop (`bool`, defaults to `True`): crop to the ink; without it the whole image is kept.
        max_input_pixels (`int`, defaults to 40,000,000): larger inputs are refused before decoding.
        min_glyph_height (`int`, defaults to 12): reading also tries a prepared image enlarged so that its median
            glyph is this high, when its glyphs are smaller (`enlarged`), and keeps the more confident reading;
            0 turns that off.
        denoise_strength (`float`, defaults to 1.0): an image with a noisy background (`background_noise` above
            `NOISY_BACKGROUND`) is filtered with OpenCV's non-local means and prepared again, the filter's strength
            being this times its background noise (in 0-255 intensity steps); 0 turns that off.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        min_height: int = 32,
        max_height: int = 192,
        max_width: int = 1024,
        border: int = 4,
        pad_to_multiple_of: int = 16,
        ink_threshold: int = 40,
        do_crop: bool = True,
        max_input_pixels: int = 40_000_000,
        min_glyph_height: int = 12,
        denoise_strength: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 <= border or not 2 * border < min_height <= max_height or 2 * border >= max_width:
            raise ValueError(
                f"need 0 <= 2*border < min_height <= max_height and 2*border < max_width, got border={border}, "
                f"min_height={min_height}, max_height={max_height}, max_width={max_width}"
            )
        if (
            pad_to_multiple_of < 1
            or not 0 < ink_threshold < 255
            or max_input_pixels < 1
            or min_glyph_height < 0
            or denoise_strength < 0
        ):
            raise ValueError(
                f"invalid pad_to_multiple_of={pad_to_multiple_of}, ink_threshold={ink_threshold}, "
                f"max_input_pixels={max_input_pixels}, min_glyph_height={min_glyph_height} or "
                f"denoise_strength={denoise_strength}"
            )
        self.min_height = min_height
        self.max_height = max_height
        self.max_width = max_width
        self.border = border
        self.pad_to_multiple_of = pad_to_multiple_of
        self.ink_threshold = ink_threshold
        self.do_crop = do_crop
        self.max_input_pixels = max_input_pixels
        self.min_glyph_height = min_glyph_height
        self.denoise_strength = denoise_strength

    def prepare(self, image: ImageLike, denoise: bool = True) -> np.ndarray:
        """One image -> float32 (height, width) ink intensities, cropped and scaled but not yet padded.

        A noisy image (see `denoise_strength`) is filtered and prepared again, unless `denoise` is False: noise is not
        ink, so it is not kept as such, and it no longer widens the crop.
        """
        gray = np.asarray(load_image(image, max_pixels=self.max_input_pixels))
        ink = self._cropped_ink(gray)
        # Noise is measured at the image's own resolution, where the filter works: scaling down would average it out.
        peak = max(int(ink.max()), 1)
        noise = self.background_noise(ink.astype(np.float32) / peak) if denoise and self.denoise_strength else 0.0
        if noise > NOISY_BACKGROUND:
            # Filter strength h in 8-bit steps; 7x7 patches, each compared with those in a 21x21 window (OpenCV's
            # defaults). A strength that follows the noise spares the strokes of mildly noisy images, such as JPEGs.
            ink = self._cropped_ink(cv2.fastNlMeansDenoising(gray, None, h=self.denoise_strength * 255 * noise))
        return self._scaled(ink)

    def _cropped_ink(self, gray: np.ndarray) -> np.ndarray:
        """An 8-bit grayscale array -> uint8 ink intensities (background 0), cropped to the ink unless `do_crop` is
        off; a blank page stays whole."""
        gray = gray.astype(np.int16)
        edges = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        background = int(np.median(edges))
        if background < 128:  # light glyphs on a dark page
            gray, background = 255 - gray, 255 - background
        ink = np.clip(background - gray, 0, 255).astype(np.uint8)  # (H, W), background 0
        mask = ink > self.ink_threshold
        if not mask.any():  # a blank page: keep it as is, all background
            return np.zeros_like(ink)
        if self.do_crop:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return ink

    def _scaled(self, ink: np.ndarray) -> np.ndarray:
        """Cropped uint8 ink -> float32 intensities scaled into the size bounds, the darkest ink 1, with the border."""
        height, width = ink.shape
        scale = self._within_bounds(max(1.0, (self.min_height - 2 * self.border) / height), height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):
            ink = np.asarray(Image.fromarray(ink, mode="L").resize(size, Image.Resampling.BILINEAR))

        peak = float(ink.max())
        values = ink.astype(np.float32) / peak if peak > 0 else ink.astype(np.float32)
        return np.pad(values, self.border)

    def _within_bounds(self, scale: float, height: int, width: int) -> float:
        """`scale`, lowered where needed so that an image of `height` x `width` ink pixels, scaled, fits the size
        bounds with its border."""
        inner_max_h, inner_max_w = self.max_height - 2 * self.border, self.max_width - 2 * self.border
        return min(scale, inner_max_h / height, inner_max_w / width)

    @staticmethod
    def glyph_height(prepared: np.ndarray, glyphs: np.ndarray | None = None) -> float:
        """The median height in pixels of the glyphs (connected blobs of 3 pixels or more above 0.5) of a prepared
        image; 0 when it has none. `glyphs`: that uint8 mask, when the caller has it already."""
        glyphs = (prepared > 0.5).astype(np.uint8) if glyphs is None else glyphs
        _, _, stats, _ = cv2.connectedComponentsWithStats(glyphs, connectivity=8)
        heights = stats[1:, cv2.CC_STAT_HEIGHT][stats[1:, cv2.CC_STAT_AREA] >= 3]
        return float(np.median(heights)) if heights.size else 0.0

    @staticmethod
    def background_noise(prepared: np.ndarray, glyphs: np.ndarray | None = None) -> float:
        """The mean ink intensity of an image's background: pixels more than 3 away from any glyph pixel (above 0.5).
        0 on a clean rendering; speckle noise raises it. `prepared`: a prepared image, or any ink image with
        background 0 and its darkest ink 1 (`prepare` measures the cropped ink so). `glyphs`: as for `glyph_height`."""
        glyphs = (prepared > 0.5).astype(np.uint8) if glyphs is None else glyphs
        near_ink = cv2.dilate(glyphs, np.ones((7, 7), np.uint8)) > 0
        background = prepared[~near_ink]
        return float(background.mean()) if background.size else 0.0

    def enlarged(self, prepared: np.ndarray, max_factor: float = 3.0) -> np.ndarray | None:
        """A prepared image scaled up (bicubic) until its median glyph is `min_glyph_height` high, by at most
        `max_factor` and within the size bounds; None when its glyphs are that high already, when it cannot grow,
        or when its background is still noisy after `prepare` (`background_noise` above `NOISY_BACKGROUND`).

        Reading both and keeping the more confident reading (`read_formulas`) helps with small, screen-resolution
        glyphs, which the model reads worse than the same glyphs enlarged. Enlarged noise, though, is read
        confidently and wrongly, often in loops, hence the noise bound. Measured in the model card.
        """
        if not self.min_glyph_height:
            return None
        glyphs = (prepared > 0.5).astype(np.uint8)
        height = self.glyph_height(prepared, glyphs)
        if not 0 < height < self.min_glyph_height or self.background_noise(prepared, glyphs) > NOISY_BACKGROUND:
            return None
        b = self.border
        inner = prepared[b : prepared.shape[0] - b, b : prepared.shape[1] - b]
        factor = self._within_bounds(min(max_factor, self.min_glyph_height / height), *inner.shape)
        if factor < 1.05:
            return None
        size = (round(inner.shape[1] * factor), round(inner.shape[0] * factor))
        scaled = cv2.resize(inner, size, interpolation=cv2.INTER_CUBIC)
        return np.pad(np.clip(scaled, 0.0, 1.0), b)

    def padded_shape(self, shapes: list[tuple[int, ...]], bucket: tuple[int, int] | None = None) -> tuple[int, int]:
        """The (height, width) that `pad` gives a batch of prepared images of these shapes.

        Each side is the largest image's, at least `min_height` high, rounded up to `pad_to_multiple_of`. With
        `bucket` (reading uses `READING_BUCKET`), each image first counts as padded up to the next multiple of
        `bucket`, but not beyond (`max_height`, `max_width`) unless it already is. The encoder has no padding mask,
        so padding changes what it sees: bucketed, an image reads the same in any batch of images of its bucket,
        and models trained on padded batches read it better than tightly cropped (BLEU 0.223 against 0.177 on 100
        test formulas with the v0 model).
        """
        if not shapes:
            raise ValueError("cannot pad an empty list of images")
        if bucket is not None:
            limits = (self.max_height, self.max_width)
            shapes = [
                [
                    max(size, min(-(-size // step) * step, most))
                    for size, step, most in zip(shape, bucket, limits, strict=True)
                ]
                for shape in shapes
            ]
        multiple = self.pad_to_multiple_of
        height = max(self.min_height, max(shape[0] for shape in shapes))
        width = max(multiple, max(shape[1] for shape in shapes))
        return -(-height // multiple) * multiple, -(-width // multiple) * multiple

    def pad(self, images: list[np.ndarray], bucket: tuple[int, int] | None = None) -> torch.Tensor:
        """Pad prepared images (bottom and right, with background) into one (batch, 1, H, W) tensor, H and W from
        `padded_shape` (with `bucket`: each image as if padded up to its bucket first)."""
        height, width = self.padded_shape([image.shape for image in images], bucket)
        batch = torch.zeros(len(images), 1, height, width)
        for index, image in enumerate(images):
            batch[index, 0, : image.shape[0], : image.shape[1]] = torch.from_numpy(image)
        return batch

    def preprocess(
        self,
        images: ImageLike | list[ImageLike],
        return_tensors: str | None = "pt",
        bucket: tuple[int, int] | None = READING_BUCKET,
        **kwargs,
    ) -> BatchFeature:
        """Prepare and pad one image or a list of them, for reading: each image up to its `bucket` (`padded_shape`).

        Returns:
            `BatchFeature` with `pixel_values` of shape (batch, 1, H, W), a tensor (`return_tensors="pt"`) or a numpy
            array (`"np"`).
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values = self.pad([self.prepare(image) for image in images], bucket=bucket)
        if return_tensors == "np":
            pixel_values = pixel_values.numpy()
        elif return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        return BatchFeature(data={"pixel_values": pixel_values})

    def __call__(self, images: ImageLike | list[ImageLike], **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


Im2LatexImageProcessor.register_for_auto_class("AutoImageProcessor")
