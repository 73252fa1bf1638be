"""Tests for data.augment: output type, size bounds, determinism, effect, and the datasets transform."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.augment import AugmentConfig, augment, main, make_grid, make_train_transform

PROBABILITIES = [f.name for f in dataclasses.fields(AugmentConfig) if f.name.startswith("p_")]
EVERYTHING = AugmentConfig(**dict.fromkeys(PROBABILITIES, 1.0))
NOTHING = AugmentConfig(strength=0.0)


def formula(width: int = 400, height: int = 60) -> Image.Image:
    """A black-on-white, anti-aliased line of formula-like text with a fraction bar."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    draw.text((8, 14), "x^2 + y_k = (a - b)", font=ImageFont.load_default(size=28), fill=0)
    draw.line((300, 30, 380, 30), fill=0, width=1)
    return image


def within_bounds(image: Image.Image, cfg: AugmentConfig) -> bool:
    return image.width <= cfg.max_width and cfg.min_height <= image.height <= cfg.max_height


def test_output_is_grayscale_uint8_and_dark_on_light() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = augment(formula(), EVERYTHING, rng)
        pixels = np.asarray(out)
        assert out.mode == "L"
        assert pixels.dtype == np.uint8 and pixels.ndim == 2
        # Mostly background: the median pixel is paper, never inverted ink.
        assert np.median(pixels) >= 150


@pytest.mark.parametrize("size", [(1, 1), (200, 5), (5, 200), (4000, 300), (300, 4000), (3000, 1), (1, 3000)])
@pytest.mark.parametrize("cfg", [EVERYTHING, AugmentConfig(), NOTHING], ids=["all", "default", "none"])
def test_size_bounds_hold_for_tiny_and_huge_inputs(size: tuple[int, int], cfg: AugmentConfig) -> None:
    rng = np.random.default_rng(1)
    source = formula(*size)
    for _ in range(10):
        out = augment(source, cfg, rng)
        assert within_bounds(out, cfg), (size, out.size)


def test_custom_bounds_are_respected() -> None:
    cfg = dataclasses.replace(EVERYTHING, max_width=300, max_height=40, min_height=32)
    rng = np.random.default_rng(2)
    for size in [(400, 60), (10, 10), (2000, 20)]:
        for _ in range(10):
            assert within_bounds(augment(formula(*size), cfg, rng), cfg)


def test_same_seed_same_output_and_different_seed_different_output() -> None:
    def run(seed: int) -> list[bytes]:
        rng = np.random.default_rng(seed)
        return [augment(formula(), AugmentConfig(), rng).tobytes() for _ in range(10)]

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize("op", PROBABILITIES)
def test_each_operation_changes_the_image(op: str) -> None:
    cfg = AugmentConfig(**{p: 1.0 if p == op else 0.0 for p in PROBABILITIES})
    source = formula()
    out = augment(source, cfg, np.random.default_rng(3))
    assert out.size != source.size or not np.array_equal(np.asarray(out), np.asarray(source))


def test_strength_zero_leaves_an_in_bounds_image_unchanged() -> None:
    source = formula()
    out = augment(source, NOTHING, np.random.default_rng(4))
    assert np.array_equal(np.asarray(out), np.asarray(source))


def test_transparent_and_colour_inputs_become_white_backed_grayscale() -> None:
    rgba = Image.new("RGBA", (100, 30), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((10, 10, 20, 20), fill=(0, 0, 0, 255))
    out = np.asarray(augment(rgba, NOTHING, np.random.default_rng(0)))
    assert out[0, 0] == 255 and out[15, 15] == 0
    assert augment(formula().convert("RGB"), EVERYTHING, np.random.default_rng(0)).mode == "L"


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(TypeError, match="PIL image"):
        augment(np.zeros((10, 10), np.uint8), NOTHING, np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty image"):
        augment(Image.new("L", (0, 10)), NOTHING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="p_blur"):
        AugmentConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="min_height"):
        AugmentConfig(min_height=300, max_height=256)


def test_options_replace_the_defaults() -> None:
    assert AugmentConfig.from_options(None) == AugmentConfig()
    from_json = AugmentConfig.from_options('{"p_blur": 1.0, "blur_sigma_range": [0.5, 1.6]}')
    assert from_json == AugmentConfig(p_blur=1.0, blur_sigma_range=(0.5, 1.6))  # JSON lists become tuples
    assert AugmentConfig.from_options({"noise_sigma_range": [2, 20]}).noise_sigma_range == (2, 20)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"p_blurr": 0.5}', r"unknown augment options \['p_blurr'\]"),
        ("p_blur=0.5", "are not JSON"),
        ("[0.5]", "must be a JSON object"),
        ('{"p_blur": 1.5}', "p_blur must be in"),
        ({"blur_sigma_range": [1.6]}, "blur_sigma_range must be"),
    ],
)
def test_bad_options_are_clear_errors(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_options(options)


def _dataset(n: int = 4):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": [formula() for _ in range(n)], "text": [f"x^{i}" for i in range(n)]}, features=features
    )


def test_datasets_transform_augments_on_the_fly() -> None:
    ds = _dataset()
    ds.set_transform(make_train_transform(AugmentConfig(), seed=0))
    first, again = ds[0], ds[0]
    assert first["text"] == "x^0"
    assert isinstance(first["image"], Image.Image) and first["image"].mode == "L"
    assert within_bounds(first["image"], AugmentConfig())
    batch = ds[:3]
    assert len(batch["image"]) == 3 and batch["text"] == ["x^0", "x^1", "x^2"]
    # A fresh draw at each access: the same item differs between epochs.
    assert first["image"].tobytes() != again["image"].tobytes()

    replay = _dataset().with_transform(make_train_transform(AugmentConfig(), seed=0))
    assert replay[0]["image"].tobytes() == first["image"].tobytes()


def test_formulas_with_hand_spacing_take_the_spaced_config() -> None:
    image = formula()
    transform = make_train_transform(NOTHING, seed=0, spaced_config=EVERYTHING)
    batch = {"image": [image, image, image], "formula": ["a \\, b", "a b", "a ~ ~ b"]}
    spaced, plain, spaced_too = transform(batch)["image"]
    assert plain.tobytes() == image.tobytes()  # NOTHING: only the size clamp, which this image is within
    assert spaced.tobytes() != image.tobytes() and spaced_too.tobytes() != image.tobytes()
    # the reverse: only the plain formula is augmented
    transform = make_train_transform(EVERYTHING, seed=0, spaced_config=NOTHING)
    spaced, plain = transform({"image": [image, image], "formula": ["a \\; b", "a b"]})["image"]
    assert spaced.tobytes() == image.tobytes() and plain.tobytes() != image.tobytes()
    with pytest.raises(KeyError, match="no column 'latex'"):
        make_train_transform(spaced_config=NOTHING, formula_column="latex")({"image": [image], "formula": ["a"]})


def test_with_options_replaces_fields_of_a_config() -> None:
    base = AugmentConfig.from_options({"p_blur": 0.5, "blur_sigma_range": [0.3, 1.6]})
    spaced = base.with_options('{"p_blur": 0, "scale_range": [0.8, 2.5]}')
    assert (spaced.p_blur, spaced.blur_sigma_range, spaced.scale_range) == (0, (0.3, 1.6), (0.8, 2.5))
    assert base.with_options(None) is base and base.p_blur == 0.5
    with pytest.raises(ValueError, match="unknown augment options"):
        base.with_options({"p_blurr": 0})


def test_dataloader_workers_and_epochs_draw_different_augmentations() -> None:
    torch = pytest.importorskip("torch")
    ds = _dataset(2).with_transform(make_train_transform(EVERYTHING, seed=0))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda item: item)

    def epoch() -> list[bytes]:
        return [item["image"].tobytes() for item in loader]

    torch.manual_seed(0)
    first_epoch, second_epoch = epoch(), epoch()
    # Both items share the source image; identical streams in the two workers would give equal outputs.
    assert first_epoch[0] != first_epoch[1]
    # Workers restart each epoch; replaying the same stream would repeat the same augmentations.
    assert first_epoch != second_epoch
    torch.manual_seed(0)
    assert epoch() == first_epoch


def test_grid_command_takes_options(tmp_path, capsys) -> None:
    formula().save(tmp_path / "a.png")
    output = tmp_path / "grid.png"
    main(["--input", str(tmp_path / "a.png"), "--output", str(output), "--n", "2", "--options", '{"p_blur": 1.0}'])
    assert Image.open(output).width > 0 and "1 images x 2 augmentations" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", str(tmp_path / "a.png"), "--output", str(output), "--options", '{"blur": 1}'])
    assert exit_info.value.code == 2 and "unknown augment options ['blur']" in capsys.readouterr().err


def test_make_grid_lays_out_originals_and_augmentations() -> None:
    grid = make_grid([formula(), formula(200, 40)], AugmentConfig(), n=3, seed=0)
    assert grid.mode == "RGB" and grid.width >= 400 and grid.height >= 100
