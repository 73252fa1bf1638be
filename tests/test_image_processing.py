"""The image processor on the inputs users send: odd modes, sizes, files that are not images."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modeling import Im2LatexImageProcessor, InvalidImageError, load_image
from modeling.image_processing_im2latex import NOISY_BACKGROUND


def drawing(mode: str = "L", size=(240, 60), ink=0, paper=255) -> Image.Image:
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).rectangle((40, 20, 200, 40), fill=ink)
    return image


def to_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def processor():
    return Im2LatexImageProcessor()


def test_crop_scale_and_pad(processor):
    values = processor(drawing()).pixel_values
    assert values.shape[:2] == (1, 1) and values.shape[2] % 16 == 0 and values.shape[3] % 16 == 0
    assert values.min() == 0 and values.max() == 1
    ink = values[0, 0].nonzero()
    # Cropped to the ink plus the border: the rectangle starts `border` pixels in, whatever the page margins.
    assert ink[:, 0].min() == processor.border and ink[:, 1].min() == processor.border


def test_same_result_for_every_way_of_giving_the_image(processor, tmp_path):
    image = drawing()
    path = tmp_path / "formula.png"
    image.save(path)
    expected = processor(image).pixel_values
    for given in (path, str(path), to_bytes(image), np.asarray(image), image.convert("RGB")):
        torch.testing.assert_close(processor(given).pixel_values, expected)


def test_margins_tint_and_dark_mode_do_not_matter(processor):
    expected = processor(drawing()).pixel_values
    wide_margins = Image.new("L", (900, 300), 255)
    wide_margins.paste(drawing(), (300, 100))
    torch.testing.assert_close(processor(wide_margins).pixel_values, expected)
    tinted = drawing("RGB", ink=(20, 30, 60), paper=(250, 240, 200))
    dark_mode = drawing(ink=230, paper=30)
    for variant in (tinted, dark_mode):
        assert torch.allclose(processor(variant).pixel_values, expected, atol=0.02)


def test_batches_of_mixed_sizes_pad_together(processor):
    small, large = drawing(size=(100, 40)), drawing(size=(600, 160))
    values = processor([small, large]).pixel_values
    single = processor(small).pixel_values
    assert values.shape[0] == 2 and values.shape[2:] == processor(large).pixel_values.shape[2:]
    h, w = single.shape[2:]
    torch.testing.assert_close(values[0, :, :h, :w], single[0])
    assert values[0, :, h:, :].abs().sum() == 0 and values[0, :, :, w:].abs().sum() == 0


def test_size_bounds(processor):
    huge = Image.new("L", (6000, 3000), 255)
    ImageDraw.Draw(huge).rectangle((100, 100, 5900, 2900), fill=0)
    values = processor(huge).pixel_values
    assert values.shape[2] <= processor.max_height and values.shape[3] <= processor.max_width
    tiny = processor(drawing(size=(30, 8))).pixel_values
    assert tiny.shape[2] >= processor.min_height
    sliver = processor(Image.new("L", (20000, 2), 0)).pixel_values
    assert sliver.shape[2] >= processor.min_height and sliver.shape[3] <= processor.max_width


def test_one_pixel_and_blank_images_are_handled(processor):
    for image in (
        Image.new("L", (1, 1), 0),
        Image.new("L", (1, 1), 255),
        Image.new("RGB", (300, 100), "white"),
    ):
        values = processor(image).pixel_values
        assert values.shape[2] >= processor.min_height and torch.isfinite(values).all()


def test_transparency_16_bit_cmyk_and_gif(processor):
    expected = processor(drawing()).pixel_values
    transparent = Image.new("RGBA", (240, 60), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).rectangle((40, 20, 200, 40), fill=(0, 0, 0, 255))
    white_on_transparent = Image.new("RGBA", (240, 60), (255, 255, 255, 0))
    ImageDraw.Draw(white_on_transparent).rectangle((40, 20, 200, 40), fill=(255, 255, 255, 255))
    sixteen_bit = Image.fromarray((np.asarray(drawing(), dtype=np.uint16) * 257).astype(np.uint16))
    assert sixteen_bit.mode.startswith("I;16")
    cmyk = drawing("RGB", ink=(0, 0, 0), paper=(255, 255, 255)).convert("CMYK")
    frames = [drawing(), Image.new("L", (240, 60), 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    for variant in (
        transparent,
        white_on_transparent,
        sixteen_bit,
        cmyk,
        to_bytes(cmyk, "JPEG"),
        gif.getvalue(),
    ):
        values = processor(variant).pixel_values
        assert values.shape == expected.shape and (values - expected).abs().mean() < 0.02, type(variant)
    assert load_image(to_bytes(transparent)).mode == "L"


def test_bad_inputs_raise_clear_errors(processor, tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("this is not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(to_bytes(drawing())[:60])
    for path in (not_image, empty, truncated):
        with pytest.raises(InvalidImageError, match=path.name):
            processor(path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        processor(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="not an image"):
        processor(b"\x00\x01garbage")
    with pytest.raises(InvalidImageError, match="cannot read an image from <dict>"):
        processor({"image": 1})


def test_huge_images_are_refused_before_decoding(processor, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000), 1).save(bomb)
    with pytest.raises(InvalidImageError, match=r"bomb.png.* too large to decode safely"):
        processor(bomb)
    big = tmp_path / "big.png"
    Image.new("1", (8000, 6000), 1).save(big)
    with pytest.raises(InvalidImageError, match=r"big.png.* 8000x6000 pixels, more than the limit"):
        processor(big)


def test_bucket_stops_at_the_largest_image_size():
    assert Im2LatexImageProcessor().padded_shape([(70, 300)], (96, 512)) == (96, 512)
    small = Im2LatexImageProcessor(max_height=80, max_width=400)
    assert small.padded_shape([(70, 300)], (96, 512)) == (80, 400)
    assert small.padded_shape([(100, 500)], (96, 512)) == (112, 512)  # already past the limit: to the stride only


def test_bucketed_padding_reads_the_same_in_any_batch_of_its_bucket():
    processor = Im2LatexImageProcessor()
    a, b = np.ones((40, 200), dtype=np.float32), np.ones((90, 480), dtype=np.float32)
    alone = processor.pad([a], bucket=(96, 512))
    together = processor.pad([a, b], bucket=(96, 512))
    assert alone.shape == (1, 1, 96, 512) and together.shape == (2, 1, 96, 512)
    assert torch.equal(alone[0], together[0])
    assert processor.pad([a]).shape == (1, 1, 48, 208)  # without a bucket: to the stride only


def glyphs(height: int, count: int = 6, width: int = 300) -> np.ndarray:
    """A prepared-looking image (ink 1 on 0, with the default border) of `count` bars `height` pixels high."""
    image = np.zeros((height + 20, width), dtype=np.float32)
    for index in range(count):
        image[10 : 10 + height, 10 + 40 * index : 10 + 40 * index + 6] = 1.0
    return np.pad(image, 4)


def test_glyph_height_is_the_median_blob_height(processor):
    assert processor.glyph_height(glyphs(9)) == 9
    mixed = glyphs(5, count=7)
    mixed[6:26, 280:286] = mixed[6:26, 294:300] = 1.0  # two tall bars among seven short ones
    assert processor.glyph_height(mixed) == 5
    assert processor.glyph_height(np.zeros((40, 40), np.float32)) == 0.0


def test_small_glyphs_are_enlarged_to_the_minimum_glyph_height(processor):
    small = glyphs(6, width=200)
    enlarged = processor.enlarged(small)
    assert enlarged is not None and enlarged.dtype == np.float32
    assert enlarged.min() >= 0 and enlarged.max() <= 1
    assert processor.glyph_height(enlarged) == pytest.approx(processor.min_glyph_height, abs=1)
    border = processor.border
    assert not enlarged[:border].any() and not enlarged[:, :border].any()  # the border stays background
    # Glyphs as high as the minimum, or no minimum, give no enlarged image.
    assert processor.enlarged(glyphs(processor.min_glyph_height)) is None
    assert Im2LatexImageProcessor(min_glyph_height=0).enlarged(small) is None
    # At most 3x, and within the size bounds.
    assert processor.glyph_height(processor.enlarged(glyphs(2, width=100))) == pytest.approx(6, abs=1)
    bounded = Im2LatexImageProcessor(max_width=400).enlarged(glyphs(6, width=300))
    assert bounded.shape[1] <= 400 and processor.glyph_height(bounded) < processor.min_glyph_height
    with pytest.raises(ValueError, match="min_glyph_height=-1"):
        Im2LatexImageProcessor(min_glyph_height=-1)


def test_noisy_backgrounds_are_not_enlarged(processor):
    clean = glyphs(6, width=200)
    assert processor.background_noise(clean) == 0.0
    speckled = clean.copy()
    speckled[::2, ::3] = np.maximum(speckled[::2, ::3], 0.3)  # faint dots everywhere: 1 pixel in 6 at 0.3
    assert processor.background_noise(speckled) == pytest.approx(0.05, abs=0.01)
    assert processor.enlarged(clean) is not None and processor.enlarged(speckled) is None


def test_noisy_images_are_denoised_before_they_are_prepared():
    page = np.full((80, 400), 255, dtype=np.uint8)  # six dark bars inside wide white margins
    for index in range(6):
        page[30:50, 80 + 40 * index : 86 + 40 * index] = 0
    noisy = np.clip(page + np.random.default_rng(0).normal(0.0, 14.0, page.shape), 0, 255).astype(np.uint8)
    kept = Im2LatexImageProcessor(denoise_strength=0)
    clean = kept.prepare(page)
    assert kept.prepare(noisy).shape[1] > clean.shape[1] + 100  # noise counts as ink: the crop takes the margins
    assert kept.background_noise(kept.prepare(noisy)) > NOISY_BACKGROUND
    denoised = Im2LatexImageProcessor().prepare(noisy)
    assert denoised.shape[1] == pytest.approx(clean.shape[1], rel=0.15)  # the crop is the bars' again, nearly
    assert kept.background_noise(denoised) < NOISY_BACKGROUND / 3
    assert np.array_equal(Im2LatexImageProcessor().prepare(page), clean)  # a clean image is not filtered
    with pytest.raises(ValueError, match="denoise_strength=-1"):
        Im2LatexImageProcessor(denoise_strength=-1)
