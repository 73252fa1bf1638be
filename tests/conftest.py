"""Shared fixtures: tiny random-init models and tokenizers built in a second, offline, on CPU."""

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
# The shared formula lists live outside the repository; point IM2LATEX_FORMULAS elsewhere if they do.
FORMULAS = Path(
    os.environ.get("IM2LATEX_FORMULAS", Path(__file__).resolve().parents[1] / ".." / "shared/data/formulas")
)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def formulas_dir() -> Path:
    if not (FORMULAS / "im2latex-100k").is_dir():
        pytest.skip(f"formula lists not found at {FORMULAS} (set IM2LATEX_FORMULAS)")
    return FORMULAS


@pytest.fixture(scope="session")
def fixture_formulas() -> list[str]:
    return (FIXTURES / "formulas.txt").read_text().splitlines()


@pytest.fixture(scope="session")
def tiny_processor(fixture_formulas):
    from modeling import Im2LatexImageProcessor, Im2LatexProcessor, train_tokenizer

    tokenizer = train_tokenizer(fixture_formulas * 3, vocab_size=160)
    return Im2LatexProcessor(Im2LatexImageProcessor(max_height=64, max_width=256), tokenizer)


def build_tiny_model(tokenizer):
    """A random-init model with hidden size 32 and one decoder layer, built in well under a second."""
    import torch

    from modeling import Im2LatexForConditionalGeneration, make_config, make_generation_config

    torch.manual_seed(0)
    config = make_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        d_model=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_length=64,
        encoder_kwargs={"stage_depths": [1, 1, 1], "stage_widths": [8, 16, 32]},
    )
    model = Im2LatexForConditionalGeneration(config).eval()
    model.generation_config = make_generation_config(config, max_length=24)
    return model


@pytest.fixture()
def tiny_model(tiny_processor):
    return build_tiny_model(tiny_processor.tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_processor) -> Path:
    """`build_tiny_model` saved with its processor, as a user's model folder. The generation config's max_length
    is kept short; min_new_tokens and suppressed special tokens make the random model say something visible."""
    from modeling import make_generation_config

    tokenizer = tiny_processor.tokenizer
    model = build_tiny_model(tokenizer)
    model.generation_config = make_generation_config(model.config, max_length=12)
    model.generation_config.min_new_tokens = 2
    model.generation_config.suppress_tokens = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


def formula_png(size: tuple[int, int] = (160, 48), text: str = "x^2 + y") -> bytes:
    """A PNG of typed text and a slanted stroke: enough ink for the processor and a tiny model."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.text((6, size[1] // 3), text, fill=0)
    draw.line((4, size[1] - 6, size[0] - 4, size[1] - 12), fill=0, width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
