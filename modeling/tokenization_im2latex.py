"""The LaTeX tokenizer: byte-pair encoding over space-separated LaTeX tokens, trained with `tokenizers`.

Whitespace rule: runs of whitespace count as one space and leading/trailing whitespace is dropped, so
`decode(encode(x)) == " ".join(x.split())` for every formula made of printable ASCII (the canonical token form is
ASCII). Characters outside printable ASCII that were not seen in training become `<unk>`.
"""

import re
import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
# Every printable ASCII character is in the vocabulary, so any ASCII formula encodes without <unk>.
ALPHABET = sorted(set(string.printable) - set(string.whitespace))


def train_tokenizer(
    formulas: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2, show_progress: bool = False
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on formulas in the canonical token form.

    Pieces never cross a space: each LaTeX token (`\\frac`, `{`, `x`) is one word, and frequent words become single
    pieces, so a formula costs about one piece per LaTeX token.

    Args:
        formulas: formulas, one string each.
        vocab_size: vocabulary size, special tokens and the alphabet included.
        min_frequency: a merge must occur at least this often.
        show_progress: show the `tokenizers` progress bar.

    Returns:
        A `PreTrainedTokenizerFast` that appends `</s>` to every encoded formula (the labels' end of sequence).
    """
    if vocab_size < len(SPECIAL_TOKENS) + len(ALPHABET) + 1:
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS) + len(ALPHABET)}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(r"\s+"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=ALPHABET + ["▁"],
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator((formula for formula in formulas if formula.strip()), trainer=trainer)
    if tokenizer.get_vocab_size() == len(SPECIAL_TOKENS) + len(ALPHABET) + 1 and vocab_size > 200:
        raise ValueError("no merges were learned: are the formulas empty?")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


# Pieces that open or close a group, by kind, when they start a LaTeX token (`▁`). The bare `▁\left` and
# `▁\right` also start `\leftrightharpoons` and `\rightsquigarrow`: they count only when a delimiter piece
# follows them (`\right>` is `▁\right` then `>`).
GROUP_PATTERNS = (
    (r"▁\{", r"▁\}"),
    (r"▁\\left[^a-zA-Z].*", r"▁\\right[^a-zA-Z].*"),
    (r"▁\\begin(?![a-zA-Z]).*", r"▁\\end(?![a-zA-Z]).*"),
)
DELIMITER_KIND = 1  # the pair of GROUP_PATTERNS that the bare `▁\left` and `▁\right` open and close
# Hand spacing commands, each one piece when it is a LaTeX token of its own. Control space is not among them: the
# canonical form writes it as `~` (data.normalize).
SPACING_COMMANDS = ("~", "\\,", "\\;", "\\:", "\\!", "\\quad", "\\qquad")


def group_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, list]:
    """The ids of the pieces that open and close LaTeX groups, for `make_config`'s `group_token_ids`: braces
    `{` `}`, `\\left(` `\\right)` (any delimiter) and `\\begin{...}` `\\end{...}`.

    Returns:
        `pairs`: one `[opening_ids, closing_ids]` per kind of group; `bare`: the ids of `▁\\left` and `▁\\right`
        (None where the vocabulary lacks one), which open and close groups of kind `bare_kind` when one of the
        one-symbol pieces `delimiters` follows them.
    """
    vocab = tokenizer.get_vocab()
    return {
        "pairs": [
            [sorted(i for piece, i in vocab.items() if re.fullmatch(pattern, piece)) for pattern in pair]
            for pair in GROUP_PATTERNS
        ],
        "bare": [vocab.get("▁\\left"), vocab.get("▁\\right")],
        "bare_kind": DELIMITER_KIND,
        "delimiters": sorted(i for piece, i in vocab.items() if len(piece) == 1 and piece in string.punctuation),
    }


def spacing_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The ids of the pieces that are a whole hand spacing command (`SPACING_COMMANDS`), for `make_config`'s
    `spacing_token_ids`; commands missing from the vocabulary are left out."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[f"▁{command}"] for command in SPACING_COMMANDS if f"▁{command}" in vocab)


def main(argv: list[str] | None = None) -> None:
    """`python -m modeling.tokenization_im2latex FORMULAS.txt [...] --output DIR [--vocab-size N]`"""
    import argparse
    import logging
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Train the BPE LaTeX tokenizer on formula lists, one per line.")
    parser.add_argument("formulas", nargs="+", type=Path, help="text files, one formula (canonical form) per line")
    parser.add_argument("--output", type=Path, required=True, help="folder to save the tokenizer in")
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--min-frequency", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    missing = [str(path) for path in args.formulas if not path.is_file()]
    if missing:
        parser.error(f"formula files not found: {', '.join(missing)}")
    formulas = [line for path in args.formulas for line in path.read_text(encoding="utf-8").splitlines()]
    tokenizer = train_tokenizer(formulas, args.vocab_size, args.min_frequency, show_progress=True)
    tokenizer.save_pretrained(args.output)
    pieces = sum(len(ids) - 1 for ids in tokenizer(formulas).input_ids)
    words = sum(len(formula.split()) for formula in formulas)
    logging.info(
        "trained on %d formulas: %d pieces for %d LaTeX tokens (%.2f per token); saved to %s",
        len(formulas),
        pieces,
        words,
        pieces / max(words, 1),
        args.output,
    )


if __name__ == "__main__":
    main()
