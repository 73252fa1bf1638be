"""Configurations of the im2latex encoder and of the whole vision-encoder-decoder model."""

from transformers import (
    AutoConfig,
    GenerationConfig,
    PretrainedConfig,
    TrOCRConfig,
    VisionEncoderDecoderConfig,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# Tokens every output may have on top of its ink-width bound (see `make_config`'s `max_tokens_per_column`).
EXTRA_TOKENS = 16


class Im2LatexEncoderConfig(PretrainedConfig):
    r"""
    Configuration of [`Im2LatexEncoderModel`]: a timm ResNet (basic blocks, ResNet-18 by default) cut after its third
    stage, a 1x1 projection to `hidden_size` and a 2-D sinusoidal positional encoding.

    Args:
        num_channels (`int`, defaults to 1):
            Channels of `pixel_values`; the image processor emits one (ink intensity).
        stage_depths (`list[int]`, defaults to `[2, 2, 2]`):
            Residual blocks per stage. ResNet-18 has `[2, 2, 2, 2]`; the encoder keeps the first stages only.
        stage_widths (`list[int]`, defaults to `[64, 128, 256]`):
            Channels of each stage, one per entry of `stage_depths`.
        hidden_size (`int`, defaults to 256):
            Width of the encoder output, read by the decoder's cross-attention.
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic depth rate of the ResNet blocks.
    """

    model_type = "im2latex-encoder"

    def __init__(
        self,
        num_channels: int = 1,
        stage_depths: list[int] | tuple[int, ...] = (2, 2, 2),
        stage_widths: list[int] | tuple[int, ...] = (64, 128, 256),
        hidden_size: int = 256,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        if num_channels < 1:
            raise ValueError(f"num_channels must be at least 1, got {num_channels}")
        if not 1 <= len(stage_depths) <= 4 or any(depth < 1 for depth in stage_depths):
            raise ValueError(f"stage_depths must hold 1 to 4 positive block counts, got {list(stage_depths)}")
        if len(stage_widths) != len(stage_depths) or any(width < 1 for width in stage_widths):
            raise ValueError(
                f"stage_widths must hold one positive width per stage ({len(stage_depths)}), got {list(stage_widths)}"
            )
        if hidden_size < 2 or hidden_size % 4:
            raise ValueError(f"hidden_size must be a positive multiple of 4 (2-D sin/cos encoding), got {hidden_size}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.num_channels = num_channels
        self.stage_depths = list(stage_depths)
        self.stage_widths = list(stage_widths)
        self.hidden_size = hidden_size
        self.drop_path_rate = drop_path_rate
        super().__init__(**kwargs)

    @property
    def stride(self) -> int:
        """Downsampling factor from pixels to encoder positions: the stem (4) halved again by every later stage."""
        return 4 * 2 ** (len(self.stage_depths) - 1)


# The encoder type must be known to AutoConfig before a VisionEncoderDecoderConfig holding it can be built, also when
# this file runs as remote code in a process that never imported the `modeling` package. The first registration
# stays: a remote-code copy of this file, loaded later in the same process (`trust_remote_code=True`), must not swap
# the class that AutoConfig gives for the one the process already uses.
if Im2LatexEncoderConfig.model_type not in CONFIG_MAPPING:
    AutoConfig.register(Im2LatexEncoderConfig.model_type, Im2LatexEncoderConfig)


class Im2LatexConfig(VisionEncoderDecoderConfig):
    r"""
    A [`VisionEncoderDecoderConfig`] holding an [`Im2LatexEncoderConfig`] and a [`TrOCRConfig`] decoder. Saved
    folders keep `model_type="vision-encoder-decoder"`, so stock `VisionEncoderDecoderModel.from_pretrained` reads
    them; this class exists so that `auto_map` can point at code that registers the encoder first.
    """


def make_config(
    vocab_size: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    d_model: int = 256,
    decoder_layers: int = 3,
    decoder_attention_heads: int = 8,
    decoder_ffn_dim: int = 1024,
    max_length: int = 512,
    dropout: float = 0.1,
    encoder_kwargs: dict | None = None,
    max_tokens_per_column: float | None = 10.0,
    max_token_repeats: int | None = 16,
    spacing_token_ids: list[int] | None = None,
    max_spacing_run: int | None = 8,
) -> Im2LatexConfig:
    """Build the model configuration: encoder, TrOCR decoder and the special token ids, wired together.

    Args:
        vocab_size, bos_token_id, eos_token_id, pad_token_id: from the tokenizer.
        d_model, decoder_layers, decoder_attention_heads, decoder_ffn_dim, dropout: decoder shape.
        max_length: longest token sequence the decoder can hold (its position table).
        encoder_kwargs: extra [`Im2LatexEncoderConfig`] arguments; `hidden_size` defaults to `d_model`.
        max_tokens_per_column: generation length bound per encoder column of ink (None: no bound).
        max_token_repeats: the most times generation may emit one token in a row (None: no limit).
        spacing_token_ids: the ids of the hand spacing commands, from `modeling.spacing_token_ids(tokenizer)`.
        max_spacing_run: the most spacing commands of any kinds generation may emit in a row (None: no limit; no
            limit either without `spacing_token_ids`).

    Returns:
        The configuration of a model that `Im2LatexForConditionalGeneration(config)` builds.
    """
    encoder = Im2LatexEncoderConfig(**{"hidden_size": d_model, **(encoder_kwargs or {})})
    decoder = TrOCRConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        decoder_layers=decoder_layers,
        decoder_attention_heads=decoder_attention_heads,
        decoder_ffn_dim=decoder_ffn_dim,
        max_position_embeddings=max_length,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=0.0,
        # Learned, not sinusoidal: transformers 5.24 leaves TrOCR's sinusoidal table on the meta device after
        # `from_pretrained` (it is a plain attribute, neither saved nor re-initialised).
        use_learned_position_embeddings=True,
        layernorm_embedding=True,
        scale_embedding=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        decoder_start_token_id=bos_token_id,
        is_decoder=True,
        add_cross_attention=True,
    )
    config = Im2LatexConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = bos_token_id
    config.bos_token_id = bos_token_id
    config.eos_token_id = eos_token_id
    config.pad_token_id = pad_token_id
    config.vocab_size = vocab_size
    # Outputs are cut at this many tokens per encoder column (16 px) of ink, plus `extra_tokens`: rendered training
    # formulas have a median of 1.8 and a 99th percentile of 7 tokens per column; loops stop early.
    config.max_tokens_per_column = max_tokens_per_column
    config.extra_tokens = EXTRA_TOKENS
    # A decoder that loses its place mostly repeats one spacing token (`\,` or `~`) until the length bound. Runs of
    # more than 16 of one token are in 15 of the 149,554 training labels and in 1 of the 9,410 test references.
    config.max_token_repeats = max_token_repeats
    # A loop that the repeat limit cuts on one spacing command often goes on with another. Runs of more than 8 spacing
    # commands of any kinds are in 75 of 150,391 training labels and 22 of the 9,444 canonical test references.
    config.spacing_token_ids = spacing_token_ids
    config.max_spacing_run = max_spacing_run
    return config


def make_generation_config(config: VisionEncoderDecoderConfig, max_length: int | None = None, num_beams: int = 1):
    """The generation defaults saved with a model: special token ids, a length bound and the number of beams.

    Args:
        config: the model configuration (token ids, decoder positions).
        max_length: longest output in tokens, start token included; defaults to what the decoder can hold.
        num_beams: beams used when the caller does not say (1 = greedy).
    """
    limit = config.decoder.max_position_embeddings
    max_length = limit if max_length is None else max_length
    if not 2 <= max_length <= limit:
        raise ValueError(f"max_length must be in [2, {limit}] (the decoder's positions), got {max_length}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}")
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=max_length,
        num_beams=num_beams,
        early_stopping=True if num_beams > 1 else False,
    )
