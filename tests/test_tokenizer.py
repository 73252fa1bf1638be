"""The BPE LaTeX tokenizer: round trip on real formulas, special tokens, save/load."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from data.spacing import SPACING_WEIGHTS
from modeling import group_token_ids, spacing_token_ids, train_tokenizer
from modeling.modeling_im2latex import BalancedGroups
from modeling.tokenization_im2latex import SPACING_COMMANDS


def read_lines(path):
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tokenizer(formulas_dir):
    """A tokenizer trained on the im2latex-100k training sample."""
    return train_tokenizer(read_lines(formulas_dir / "im2latex-100k/train_sample.txt"), vocab_size=500)


def test_round_trip_on_every_validation_formula(tokenizer, formulas_dir):
    validation = read_lines(formulas_dir / "im2latex-100k/validation.txt")
    assert len(validation) > 8000
    encoded = tokenizer(validation).input_ids
    decoded = tokenizer.batch_decode(encoded, skip_special_tokens=True)
    mismatches = [(x, y) for x, y in zip(validation, decoded, strict=True) if y != " ".join(x.split())]
    assert not mismatches, mismatches[:3]
    assert all(ids[-1] == tokenizer.eos_token_id for ids in encoded)
    assert tokenizer.unk_token_id not in {i for ids in encoded for i in ids}
    # A piece per LaTeX token or better: common commands are single pieces.
    pieces = sum(map(len, encoded)) - len(encoded)
    assert pieces <= 1.05 * sum(len(x.split()) for x in validation)
    assert len(tokenizer.tokenize(r"\frac")) == 1


def test_whitespace_rule_and_special_tokens(fixture_formulas, tmp_path):
    tokenizer = train_tokenizer(fixture_formulas, vocab_size=150)
    assert tokenizer.decode(tokenizer("  x ^ {  2 }\t+ y ").input_ids, skip_special_tokens=True) == "x ^ { 2 } + y"
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 4
    # Rare characters still round-trip: the whole printable ASCII alphabet is in the vocabulary.
    odd = "@ ` | ~ ? ;"
    assert tokenizer.decode(tokenizer(odd).input_ids, skip_special_tokens=True) == odd
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(fixture_formulas).input_ids == tokenizer(fixture_formulas).input_ids


def test_command_line_trains_and_saves(fixture_formulas, tmp_path):
    from modeling.tokenization_im2latex import main

    formulas = tmp_path / "formulas.txt"
    formulas.write_text("\n".join(fixture_formulas))
    main([str(formulas), "--output", str(tmp_path / "tok"), "--vocab-size", "140", "--min-frequency", "1"])
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(loaded) == 140
    assert loaded.decode(loaded(fixture_formulas[0]).input_ids, skip_special_tokens=True) == fixture_formulas[0]


def drop_last_closing_brace(words: list[str]) -> str:
    last = len(words) - 1 - words[::-1].index("}")
    return " ".join(words[:last] + words[last + 1 :])


def test_generation_could_write_every_validation_formula_with_groups_kept_balanced(tokenizer, formulas_dir):
    """Every validation formula, piece by piece, is allowed by `BalancedGroups` with the tokenizer's group pieces;
    the same formulas with their last closing brace dropped may not end."""
    groups = group_token_ids(tokenizer)
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in groups["pairs"][0]] == [["▁{"], ["▁}"]]
    assert {"▁\\left(", "▁\\left\\{"} <= set(tokenizer.convert_ids_to_tokens(groups["pairs"][1][0]))
    assert "▁\\leftarrow" not in tokenizer.convert_ids_to_tokens(groups["pairs"][1][0])
    processor = BalancedGroups(groups, len(tokenizer), tokenizer.eos_token_id)
    formulas = read_lines(formulas_dir / "im2latex-100k/validation.txt")[:1000]
    unclosed = [drop_last_closing_brace(f.split()) for f in formulas if "}" in f.split()]
    for texts, ends in ((formulas, True), (unclosed, False)):
        encoded = tokenizer(texts).input_ids  # each ends with the end token
        width = max(map(len, encoded))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[tokenizer.bos_token_id] + row + [pad] * (width - len(row)) for row in encoded])
        lengths = torch.tensor([len(row) for row in encoded])
        for step in range(1, width + 1):
            scores = processor(ids[:, :step], torch.zeros(len(ids), len(tokenizer)))
            banned = torch.isinf(scores.gather(1, ids[:, step : step + 1]).squeeze(1))  # the next piece's
            inner, at_end = lengths > step, lengths == step
            assert not banned[inner].any(), [texts[i] for i in (banned & inner).nonzero().flatten()][:3]
            assert (banned[at_end] != ends).all()


def test_spacing_token_ids_are_the_whole_spacing_commands():
    formulas = ["a \\, b ~ c \\quad d \\qquad e \\! f", "x \\; y \\, z \\quadrature"] * 20
    tokenizer = train_tokenizer(formulas, vocab_size=160)
    ids = spacing_token_ids(tokenizer)
    # `\:` never appears, so it has no piece of its own; `\quadrature` does not count as `\quad`.
    assert sorted(tokenizer.convert_ids_to_tokens(ids)) == sorted(
        ["▁~", "▁\\,", "▁\\;", "▁\\!", "▁\\quad", "▁\\qquad"]
    )
    assert set(SPACING_COMMANDS) == set(SPACING_WEIGHTS)  # the same commands as the data's hand spacing


def test_shipped_model_caps_runs_of_its_tokenizers_spacing_commands():
    shipped = Path(__file__).resolve().parents[1] / "models/im2latex-base"
    config = json.loads((shipped / "config.json").read_text())
    ids = spacing_token_ids(AutoTokenizer.from_pretrained(shipped))
    assert len(ids) == len(SPACING_COMMANDS)  # every command is one piece of the shipped vocabulary
    assert config["spacing_token_ids"] == ids and config["max_spacing_run"] == 8
