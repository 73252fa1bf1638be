"""The model: shapes, loss and gradients, save/load round trip, Auto loading, generation."""

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    EncoderDecoderCache,
    LogitsProcessor,
    LogitsProcessorList,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
)

import modeling.inference
from modeling import (
    Im2LatexEncoderConfig,
    Im2LatexEncoderModel,
    Im2LatexForConditionalGeneration,
    PositionalEncoding2D,
    group_token_ids,
    make_config,
)
from modeling.inference import Reading, read_formulas
from modeling.modeling_im2latex import BalancedGroups, ink_columns


def formula_image(text: str = "x^2 + y", size: tuple[int, int] = (200, 40)) -> Image.Image:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text((8, size[1] // 3), text, fill=0)
    return image


def batch(processor, formulas):
    pixel_values = processor(images=[formula_image(f[:20]) for f in formulas]).pixel_values
    labels = [processor.tokenizer(f).input_ids for f in formulas]
    width = max(map(len, labels))
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    return pixel_values, labels


def test_encoder_output_shape_any_size():
    config = Im2LatexEncoderConfig(stage_depths=[1, 1, 1], stage_widths=[8, 16, 32], hidden_size=24)
    encoder = Im2LatexEncoderModel(config).eval()
    for height, width in [(32, 64), (64, 384), (48, 112)]:
        out = encoder(torch.rand(2, 1, height, width)).last_hidden_state
        assert out.shape == (2, (height // 16) * (width // 16), 24)
        assert torch.isfinite(out).all()


def test_encoder_rejects_bad_shapes():
    encoder = Im2LatexEncoderModel(Im2LatexEncoderConfig(stage_depths=[1, 1], stage_widths=[8, 16], hidden_size=16))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        encoder(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 8x8"):
        encoder(torch.rand(1, 1, 4, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stage_depths": [2, 2], "stage_widths": [8]}, "one positive width per stage"),
        ({"hidden_size": 30}, "multiple of 4"),
        ({"stage_depths": [2, 2, 2, 2, 2], "stage_widths": [1, 1, 1, 1, 1]}, "1 to 4"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ],
)
def test_encoder_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Im2LatexEncoderConfig(**kwargs)


def test_positional_encoding_distinguishes_positions():
    encoding = PositionalEncoding2D(16)(torch.zeros(1, 16, 3, 5))[0]  # (C, H, W)
    flat = encoding.flatten(1).T  # (H*W, C)
    assert torch.cdist(flat, flat).add(torch.eye(15)).min() > 1e-3  # every position has its own code


def test_reference_shapes_parameter_count():
    config = make_config(vocab_size=600, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = Im2LatexForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert 5.5e6 < total < 7e6 and 2.7e6 < encoder < 3.0e6


def test_forward_backward(tiny_model, tiny_processor, fixture_formulas):
    tiny_model.train()
    pixel_values, labels = batch(tiny_processor, fixture_formulas[:3])
    out = tiny_model(pixel_values=pixel_values, labels=labels)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    grads = [p.grad for p in tiny_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert tiny_model.encoder.backbone.conv1.weight.grad.abs().sum() > 0


def test_save_load_round_trip_keeps_outputs(tiny_model, tiny_processor, fixture_formulas, tmp_path):
    # Train steps move BatchNorm statistics away from their init, so a loader that re-initialises them is caught.
    tiny_model.train()
    pixel_values, labels = batch(tiny_processor, fixture_formulas[:4])
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    for _ in range(3):
        tiny_model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tiny_model.eval()
    bn = tiny_model.encoder.backbone.bn1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))

    tiny_model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = tiny_model(pixel_values=pixel_values, labels=labels).logits
        for loader in (
            Im2LatexForConditionalGeneration,
            VisionEncoderDecoderModel,
            AutoModelForImageTextToText,
        ):
            loaded = loader.from_pretrained(tmp_path).eval()
            torch.testing.assert_close(loaded.encoder.backbone.bn1.running_mean, bn.running_mean)
            torch.testing.assert_close(loaded(pixel_values=pixel_values, labels=labels).logits, expected)
            assert loaded.generation_config.max_length == 24


def test_auto_classes_know_the_encoder(tiny_model, tmp_path):
    tiny_model.encoder.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), Im2LatexEncoderConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), Im2LatexEncoderModel)
    tiny_model.save_pretrained(tmp_path / "full")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "full"), VisionEncoderDecoderConfig)


def test_greedy_and_beam_generate(tiny_model, tiny_processor):
    pixel_values = tiny_processor(images=[formula_image(), formula_image("a/b", (120, 60))]).pixel_values
    greedy = tiny_model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=8, min_new_tokens=2)
    beam = tiny_model.generate(pixel_values=pixel_values, num_beams=3, max_new_tokens=8, min_new_tokens=2)
    for sequences in (greedy, beam):
        assert sequences.shape[0] == 2 and 3 <= sequences.shape[1] <= 9
        assert (sequences[:, 0] == tiny_model.config.decoder_start_token_id).all()
    # Greedy decoding is deterministic: the same image gives the same tokens.
    again = tiny_model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=8, min_new_tokens=2)
    assert torch.equal(greedy, again)
    # Generation stops at the configured bound.
    assert tiny_model.generate(pixel_values=pixel_values, min_new_tokens=23).shape[1] == 24


def test_output_length_is_bounded_by_ink_width(tiny_model, tiny_processor):
    tiny_model.config.max_tokens_per_column = 2
    tiny_model.config.extra_tokens = 3
    narrow = Image.new("L", (200, 40), 255)
    ImageDraw.Draw(narrow).rectangle((10, 10, 24, 30), fill=0)  # ink 15 px wide: one encoder column
    wide = Image.new("L", (200, 40), 255)
    ImageDraw.Draw(wide).rectangle((10, 10, 150, 30), fill=0)
    pixel_values = tiny_processor(images=[narrow, wide]).pixel_values
    for beams in (1, 2):
        # min_new_tokens keeps the random model from ending on its own: only the bound can stop it.
        sequences = tiny_model.generate(pixel_values=pixel_values, num_beams=beams, min_new_tokens=22)
        eos = tiny_model.config.eos_token_id
        lengths = [(row == eos).nonzero()[0].item() if (row == eos).any() else len(row) for row in sequences]
        columns = ink_columns(pixel_values, stride=16)
        assert columns[0] == 2 and columns[1] > 5  # the narrow ink, scaled up and bordered, spans 2 columns
        assert lengths[0] == 1 + 2 * 2 + 3  # start token, then the bound's tokens; the end token follows
        assert lengths[1] > lengths[0]
    tiny_model.config.max_tokens_per_column = None
    assert tiny_model.generate(pixel_values=pixel_values, min_new_tokens=22).shape[1] == 24


class PreferToken(LogitsProcessor):
    """Makes one token win every step, as in a decoder stuck in a loop."""

    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        scores[:, self.token_id] += 1e4
        return scores


def longest_run(row: list[int], token_ids: set[int]) -> int:
    """The longest run of tokens from `token_ids` in `row`."""
    longest = run = 0
    for token in row:
        run = run + 1 if token in token_ids else 0
        longest = max(longest, run)
    return longest


def test_no_token_is_repeated_more_than_max_token_repeats(tiny_model, tiny_processor):
    token_id = tiny_processor.tokenizer.convert_tokens_to_ids("▁x")
    assert token_id != tiny_processor.tokenizer.unk_token_id
    pixel_values = tiny_processor(images=[formula_image(), formula_image("a/b", (120, 60))]).pixel_values
    looping = LogitsProcessorList([PreferToken(token_id)])
    kwargs = {"pixel_values": pixel_values, "min_new_tokens": 20, "max_new_tokens": 20, "logits_processor": looping}
    tiny_model.config.max_token_repeats = None
    assert (tiny_model.generate(num_beams=1, **kwargs)[:, 1:] == token_id).all()
    tiny_model.config.max_token_repeats = 3
    for beams in (1, 2):
        sequences = tiny_model.generate(num_beams=beams, **kwargs)
        assert sequences.shape[1] == 21
        # The token still wins whenever it may: runs of exactly 3, each followed by one other token.
        assert [longest_run(row, {token_id}) for row in sequences[:, 1:].tolist()] == [3, 3]
        assert ((sequences[:, 1:] == token_id).sum(dim=1) == 15).all()
    tiny_model.config.max_token_repeats = 0
    with pytest.raises(ValueError, match="max_repeats must be at least 1, got 0"):
        tiny_model.generate(num_beams=1, **kwargs)


class PreferEither(LogitsProcessor):
    """Makes `first` win every step and `second` come next, as in a decoder looping on spacing commands."""

    def __init__(self, first: int, second: int):
        self.first, self.second = first, second

    def __call__(self, input_ids, scores):
        scores[:, self.first] += 2e4
        scores[:, self.second] += 1e4
        return scores


def test_no_more_than_max_spacing_run_spacing_commands_in_a_row(tiny_model, tiny_processor):
    first, second = tiny_processor.tokenizer.convert_tokens_to_ids(["▁x", "▁y"])  # stand-ins for `\,` and `~`
    pixel_values = tiny_processor(images=[formula_image(), formula_image("a/b", (120, 60))]).pixel_values
    looping = LogitsProcessorList([PreferEither(first, second)])
    kwargs = {"pixel_values": pixel_values, "min_new_tokens": 20, "max_new_tokens": 20, "logits_processor": looping}
    tiny_model.config.max_token_repeats = 2  # alone, it turns the loop into `x x y x x y ...`
    tiny_model.config.spacing_token_ids = [first, second]
    tiny_model.config.max_spacing_run = None
    assert [longest_run(row, {first, second}) for row in tiny_model.generate(**kwargs)[:, 1:].tolist()] == [20, 20]
    tiny_model.config.max_spacing_run = 4
    for beams in (1, 2):
        rows = tiny_model.generate(num_beams=beams, **kwargs)[:, 1:].tolist()
        # The pair still wins whenever it may: runs of exactly 4, each followed by one other token.
        assert [longest_run(row, {first, second}) for row in rows] == [4, 4]
        assert [sum(token in (first, second) for token in row) for row in rows] == [16, 16]
        assert [longest_run(row, {first}) for row in rows] == [2, 2]  # the repeat limit still holds
    tiny_model.config.spacing_token_ids = None  # no spacing commands known: no limit
    assert [longest_run(row, {first, second}) for row in tiny_model.generate(**kwargs)[:, 1:].tolist()] == [20, 20]
    tiny_model.config.spacing_token_ids = [first, second]
    tiny_model.config.max_spacing_run = 0
    with pytest.raises(ValueError, match="max_run must be at least 1, got 0"):
        tiny_model.generate(**kwargs)


def test_read_formulas_takes_a_list_of_end_token_ids(tiny_model, tiny_processor):
    # transformers 5.17 saves `eos_token_id` as a list; the reading must not depend on which form it is.
    prepare = tiny_processor.image_processor.prepare
    images = [prepare(formula_image()), prepare(formula_image("a/b", (120, 60)))]
    tiny_model.generation_config.max_length = 10
    as_int = read_formulas(tiny_model, tiny_processor, images, num_beams=1)
    tiny_model.generation_config.eos_token_id = [tiny_model.config.eos_token_id]
    as_list = read_formulas(tiny_model, tiny_processor, images, num_beams=1)
    assert [(r.latex, r.truncated) for r in as_list] == [(r.latex, r.truncated) for r in as_int]
    assert [r.score for r in as_list] == pytest.approx([r.score for r in as_int])


def test_beam_search_reorders_only_the_self_attention_cache(tiny_model, tiny_processor, monkeypatch):
    """Skipping the cross-attention cache (the same for every beam of an image) changes no output."""
    images = [formula_image(), formula_image("a/b", (120, 60)), formula_image("x+1", (200, 50))]
    pixel_values = tiny_processor(images=images).pixel_values
    kwargs = {"num_beams": 3, "max_new_tokens": 10, "min_new_tokens": 4, "output_scores": True}
    fast = tiny_model.generate(pixel_values=pixel_values, return_dict_in_generate=True, **kwargs)
    reordered = []
    original = EncoderDecoderCache.reorder_cache
    monkeypatch.setattr(EncoderDecoderCache, "reorder_cache", lambda c, i: reordered.append(1) or original(c, i))
    monkeypatch.delattr(Im2LatexForConditionalGeneration, "_reorder_cache")
    full = tiny_model.generate(pixel_values=pixel_values, return_dict_in_generate=True, **kwargs)
    assert reordered  # the second run took the library's path, which reorders both caches
    assert torch.equal(fast.sequences, full.sequences)
    torch.testing.assert_close(fast.sequences_scores, full.sequences_scores)


# A vocabulary of 13 pieces for BalancedGroups: 2 is the end token.
GROUPS = {"pairs": [[[3], [4]], [[5], [6]], [[11], [12]]], "bare": [7, 8], "bare_kind": 1, "delimiters": [9]}
OPEN, CLOSE, LEFT, RIGHT, BARE_LEFT, BARE_RIGHT, SLASH, X, BEGIN, END = 3, 4, 5, 6, 7, 8, 9, 10, 11, 12


@pytest.mark.parametrize(
    "generated, banned",
    [
        ([], {CLOSE, RIGHT, END}),  # nothing open: no closer
        ([OPEN], {RIGHT, END, 2}),  # a brace open: no end token yet
        ([OPEN, CLOSE, LEFT, X, RIGHT], {CLOSE, RIGHT, END}),
        ([LEFT, BEGIN, OPEN], {2}),
        ([BARE_LEFT, SLASH], {CLOSE, END, 2}),  # `\left/` opens a delimiter group
        ([BARE_LEFT, X], {CLOSE, RIGHT, END}),  # `\left` then a letter: a command such as `\leftrightharpoons`
        ([BARE_LEFT], {CLOSE, RIGHT, END}),  # not counted until the next piece says what it is
        ([LEFT, BARE_RIGHT, SLASH], {CLOSE, RIGHT, END}),  # `\right/` closes it
        ([OPEN, OPEN, CLOSE], {RIGHT, END, 2}),
    ],
)
def test_balanced_groups_bans_closers_and_the_end_token(generated, banned):
    for eos in (2, [2]):
        processor = BalancedGroups(GROUPS, vocab_size=13, eos_token_id=eos)
        input_ids = torch.tensor([[1] + generated, [1] + [X] * len(generated)])  # a second row with nothing open
        scores = processor(input_ids, torch.zeros(2, 13))
        assert set(torch.isinf(scores[0]).nonzero().flatten().tolist()) == banned
        assert set(torch.isinf(scores[1]).nonzero().flatten().tolist()) == {CLOSE, RIGHT, END}


def test_balanced_groups_gives_the_end_tokens_score_to_closing_what_is_open():
    processor = BalancedGroups(GROUPS, vocab_size=13, eos_token_id=2)
    scores = torch.zeros(3, 13)
    scores[:, [2, CLOSE, RIGHT, X]] = torch.tensor([5.0, 1.0, 2.0, 3.0])
    input_ids = torch.tensor([[1, OPEN, LEFT], [1, OPEN, X], [1, X, X]])
    out = processor(input_ids, scores.clone())
    assert out[0, [CLOSE, RIGHT, X]].tolist() == [4.0, 5.0, 3.0]  # both kinds raised by 3: the best reaches 5
    assert out[1, [CLOSE, X]].tolist() == [5.0, 3.0] and torch.isinf(out[1, RIGHT])
    assert out[2, [2, X]].tolist() == [5.0, 3.0]  # nothing open: the end token keeps its score
    assert torch.isinf(out[:2, 2]).all()
    scores[:, CLOSE] = 9.0  # a closing piece that already beats the end token is left as it is
    assert processor(input_ids, scores.clone())[1, CLOSE] == 9.0


class PreferTokens(LogitsProcessor):
    """Makes `first` win the first `steps` steps, then the tokens `then` (in order of preference)."""

    def __init__(self, first: int, steps: int, then: list[int]):
        self.first, self.steps, self.then = first, steps, then

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - 1 < self.steps:
            scores[:, self.first] += 1e4
        else:
            for rank, token_id in enumerate(self.then):
                scores[:, token_id] += 1e4 * (len(self.then) - rank)
        return scores


def test_generation_closes_the_groups_it_opens(tiny_model, tiny_processor):
    tokenizer = tiny_processor.tokenizer
    opening = tokenizer.convert_tokens_to_ids("▁{")
    pixel_values = tiny_processor(images=[formula_image(), formula_image("a/b", (120, 60))]).pixel_values
    # Three braces opened, then the end token preferred over everything else.
    prefer = LogitsProcessorList([PreferTokens(opening, 3, [tokenizer.eos_token_id])])
    kwargs = {"pixel_values": pixel_values, "max_new_tokens": 12, "logits_processor": prefer}
    tiny_model.config.group_token_ids = None
    texts = tokenizer.batch_decode(tiny_model.generate(num_beams=1, **kwargs), skip_special_tokens=True)
    assert texts == ["{ { {"] * 2
    tiny_model.config.group_token_ids = group_token_ids(tokenizer)
    for beams in (1, 2):
        texts = tokenizer.batch_decode(tiny_model.generate(num_beams=beams, **kwargs), skip_special_tokens=True)
        assert texts == ["{ { { } } }"] * 2


def test_read_formulas_keeps_the_more_confident_of_native_and_enlarged(tiny_model, tiny_processor, monkeypatch):
    image_processor = tiny_processor.image_processor
    # Lines of small glyphs, too high together to be scaled up by `prepare` (min_height), low enough to enlarge.
    texts = [("x+1\ny-2\nz=3", (200, 60)), ("a/b\nc", (120, 60)), ("x+1", (200, 50))]
    images = [image_processor.prepare(formula_image(text, size)) for text, size in texts]
    enlarged = [image_processor.enlarged(image) for image in images]
    assert [view is not None for view in enlarged] == [True, True, False]

    # The real model: the result is the more confident of the two readings, each as read alone.
    tiny_model.generation_config.max_length = 12
    monkeypatch.setattr(image_processor, "min_glyph_height", 0)
    native = read_formulas(tiny_model, tiny_processor, images, num_beams=1)
    larger = [read_formulas(tiny_model, tiny_processor, [view], num_beams=1)[0] for view in enlarged[:2]]
    monkeypatch.setattr(image_processor, "min_glyph_height", 12)
    both = read_formulas(tiny_model, tiny_processor, images, num_beams=1)
    expected = [max(pair, key=lambda reading: reading.score) for pair in zip(native, larger, strict=False)]
    assert [r.latex for r in both] == [r.latex for r in [*expected, native[2]]]
    assert [r.score for r in both] == pytest.approx([r.score for r in [*expected, native[2]]])

    # Which one wins, by a stand-in whose confidence is the image height (the enlarged view is higher) or its negative.
    calls = []

    def by_height(sign):
        def generate(model, processor, views, bucket, generate_kwargs):
            calls.append([view.shape for view in views])
            return [Reading(str(view.shape), sign * view.shape[0], False) for view in views]

        return generate

    monkeypatch.setattr(modeling.inference, "_generate", by_height(+1))
    readings = read_formulas(tiny_model, tiny_processor, images, num_beams=1, bucket=None)
    assert [(r.latex, r.enlarged) for r in readings] == [
        (str(enlarged[0].shape), True),
        (str(enlarged[1].shape), True),
        (str(images[2].shape), False),
    ]
    assert calls == [[image.shape for image in images], [view.shape for view in enlarged[:2]]]
    monkeypatch.setattr(modeling.inference, "_generate", by_height(-1))
    readings = read_formulas(tiny_model, tiny_processor, images, num_beams=1)
    assert [(r.latex, r.enlarged) for r in readings] == [(str(image.shape), False) for image in images]

    # A reading that hit the length limit loses to one that ended, whatever its confidence.
    def truncated_when(enlarged_view):  # the truncated view is also the more confident one
        def generate(model, processor, views, bucket, generate_kwargs):
            sign = 1 if enlarged_view else -1
            return [Reading(str(v.shape), sign * v.shape[0], (v.shape[0] > 60) == enlarged_view) for v in views]

        return generate

    monkeypatch.setattr(modeling.inference, "_generate", truncated_when(enlarged_view=True))
    readings = read_formulas(tiny_model, tiny_processor, images[:1], num_beams=1)
    assert enlarged[0].shape[0] > 60 >= images[0].shape[0] and not readings[0].enlarged
    monkeypatch.setattr(modeling.inference, "_generate", truncated_when(enlarged_view=False))
    assert read_formulas(tiny_model, tiny_processor, images[:1], num_beams=1)[0].enlarged
