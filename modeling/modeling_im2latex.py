"""The im2latex model: a timm ResNet encoder with a 2-D positional encoding, inside a VisionEncoderDecoderModel."""

import math

import timm
import torch
from timm.models.resnet import BasicBlock
from torch import nn
from transformers import (
    AutoModel,
    EncoderDecoderCache,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    VisionEncoderDecoderModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .configuration_im2latex import EXTRA_TOKENS, Im2LatexConfig, Im2LatexEncoderConfig
from .pipeline_im2latex import PIPELINE_TASK, ImageToLatexPipeline


class PositionalEncoding2D(nn.Module):
    """Fixed sinusoidal encoding of (row, column): the first half of the channels encodes the row, the second half
    the column, so any feature-map size works without a learned table."""

    def __init__(self, hidden_size: int, max_period: float = 10_000.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.max_period = max_period

    def _encode_1d(self, length: int, channels: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (L, 1)
        frequency = torch.exp(
            torch.arange(0, channels, 2, device=device, dtype=torch.float32) * (-math.log(self.max_period) / channels)
        )  # (channels/2,)
        angles = position * frequency  # (L, channels/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (L, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, _, height, width = features.shape
        half = self.hidden_size // 2
        rows = self._encode_1d(height, half, features.device)  # (H, C/2)
        cols = self._encode_1d(width, half, features.device)  # (W, C/2)
        encoding = torch.cat(
            [rows[:, None, :].expand(height, width, half), cols[None, :, :].expand(height, width, half)],
            dim=2,
        )  # (H, W, C)
        return encoding.permute(2, 0, 1).unsqueeze(0).to(features.dtype)  # (1, C, H, W)


class Im2LatexEncoderPreTrainedModel(PreTrainedModel):
    config_class = Im2LatexEncoderConfig
    base_model_prefix = "im2latex_encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # `transformers.initialization` skips tensors that `from_pretrained` loaded; writing BatchNorm statistics
        # directly would overwrite the loaded ones.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, BasicBlock):
            # Children are initialised first, so this zeroes the last BatchNorm of each residual branch (timm's
            # `zero_init_last`), which makes every block start as the identity.
            init.zeros_(module.bn2.weight)


class Im2LatexEncoderModel(Im2LatexEncoderPreTrainedModel):
    """ResNet stages -> 1x1 projection -> + 2-D positional encoding -> LayerNorm -> (batch, H*W, hidden)."""

    def __init__(self, config: Im2LatexEncoderConfig):
        super().__init__(config)
        self.backbone = timm.create_model(
            "resnet18",
            pretrained=False,
            in_chans=config.num_channels,
            layers=tuple(config.stage_depths),
            channels=tuple(config.stage_widths),
            drop_path_rate=config.drop_path_rate,
            features_only=True,
            out_indices=(len(config.stage_depths),),
        )
        self.projection = nn.Conv2d(config.stage_widths[-1], config.hidden_size, kernel_size=1)
        self.position_encoding = PositionalEncoding2D(config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.conv1

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        stride = self.config.stride
        if pixel_values.shape[2] < stride or pixel_values.shape[3] < stride:
            raise ValueError(f"images must be at least {stride}x{stride} pixels, got {tuple(pixel_values.shape[2:])}")
        features = self.backbone(pixel_values)[-1]  # (B, C_stage, H/stride, W/stride)
        hidden = self.projection(features)  # (B, hidden, h, w)
        hidden = hidden + self.position_encoding(hidden)  # (B, hidden, h, w)
        hidden = hidden.flatten(2).transpose(1, 2)  # (B, h*w, hidden)
        hidden = self.layernorm(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,) if output_hidden_states else None)


class InkWidthLengthBound(LogitsProcessor):
    """Forces the end token once an output is longer than its image's ink can hold.

    A formula's token count grows with its width, so `tokens_per_column` tokens per encoder column of ink (plus
    `extra_tokens`) bound any real reading; a decoder stuck in a loop stops there instead of at `max_length`.
    """

    def __init__(self, limits: torch.Tensor, eos_token_id: int):
        self.limits = limits  # (batch * beams,): the most tokens each row may generate
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - 1  # the start token is not generated
        over = generated >= self.limits.to(scores.device)  # (batch * beams,)
        if over.any():
            forced = torch.full_like(scores[over], -math.inf)
            forced[:, self.eos_token_id] = 0.0
            scores[over] = forced
        return scores


class TokenRepeatLimit(LogitsProcessor):
    """Bans the token an output has just emitted `max_repeats` times in a row, so that a decoder looping on one
    token (mostly a spacing command) has to go on with something else: the rest of the formula, or its end."""

    def __init__(self, max_repeats: int):
        if max_repeats < 1:
            raise ValueError(f"max_repeats must be at least 1, got {max_repeats}")
        self.max_repeats = max_repeats

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] - 1 < self.max_repeats:  # the start token is not generated
            return scores
        tail = input_ids[:, -self.max_repeats :]  # (batch * beams, max_repeats)
        stuck = (tail == tail[:, -1:]).all(dim=1, keepdim=True)  # (batch * beams, 1)
        banned = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, tail[:, -1:], stuck)
        return scores.masked_fill(banned, -math.inf)  # no host sync: runs on the device as it is


class SpacingRunLimit(LogitsProcessor):
    """Bans every spacing command once an output's last `max_run` tokens are all spacing commands (`token_ids`), of
    whatever kinds: a decoder looping on spacing that `TokenRepeatLimit` stops on one command goes on with another
    (`\\, \\, ... \\; \\; ...`); this makes it go on with the formula, or end."""

    def __init__(self, token_ids: list[int], max_run: int, device: torch.device | str = "cpu"):
        if max_run < 1:
            raise ValueError(f"max_run must be at least 1, got {max_run}")
        self.token_ids = torch.tensor(token_ids, dtype=torch.long, device=device)
        self.max_run = max_run

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] - 1 < self.max_run:  # the start token is not generated
            return scores
        tail = input_ids[:, -self.max_run :]  # (batch * beams, max_run)
        stuck = torch.isin(tail, self.token_ids).all(dim=1, keepdim=True)  # (batch * beams, 1)
        banned = torch.zeros_like(scores, dtype=torch.bool)
        banned[:, self.token_ids] = stuck
        return scores.masked_fill(banned, -math.inf)


class BalancedGroups(LogitsProcessor):
    """Keeps an output's LaTeX groups balanced, so that it can compile: a closing piece (`}`, `\\right)`,
    `\\end{...}`) only while a group of its kind is open, and the end token only once every group is closed.

    Where the end token is banned, its score goes to closing what is open: the closing pieces of the open kinds are
    raised together until the best of them scores as the end token did. A decoder that would have ended then closes
    its groups and ends, instead of writing on (mostly spacing commands) up to the length bound.

    Depths are counted per kind, not on one stack, so `{ \\left( } \\right)` passes; a bare `\\left` or `\\right`
    counts once a delimiter piece follows it and is never banned (see `group_token_ids`).
    """

    def __init__(
        self, group_token_ids: dict, vocab_size: int, eos_token_id: int | list[int], device: torch.device | str = "cpu"
    ):
        pairs = group_token_ids["pairs"]
        self.delta = torch.zeros(len(pairs), vocab_size, dtype=torch.long, device=device)  # +1 opens, -1 closes
        for kind, (opening, closing) in enumerate(pairs):
            self.delta[kind, opening] = 1
            self.delta[kind, closing] = -1
        self.closing = self.delta < 0
        self.bare = torch.zeros_like(self.delta)  # counts only where a delimiter piece follows
        for token_id, sign in zip(group_token_ids["bare"], (1, -1), strict=True):
            if token_id is not None:
                self.bare[group_token_ids["bare_kind"], token_id] = sign
        self.delimiter = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.delimiter[group_token_ids["delimiters"]] = True
        self.eos_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        followed = torch.zeros_like(input_ids, dtype=torch.bool)  # (rows, length)
        followed[:, :-1] = self.delimiter[input_ids[:, 1:]]
        depth = (self.delta[:, input_ids] + self.bare[:, input_ids] * followed).sum(dim=-1)  # (kinds, rows)
        open_closing = ((depth > 0).unsqueeze(-1) & self.closing.unsqueeze(1)).any(dim=0)  # (rows, vocab)
        best_closing = scores.masked_fill(~open_closing, -math.inf).amax(dim=-1)  # (rows,)
        lift = scores[:, self.eos_token_ids].amax(dim=-1) - best_closing  # (rows,): -inf or nan where none
        lift = torch.where(torch.isfinite(lift), lift.clamp(min=0), 0.0)
        scores = scores + lift.unsqueeze(-1) * open_closing
        banned = ((depth <= 0).unsqueeze(-1) & self.closing.unsqueeze(1)).any(dim=0)  # (rows, vocab)
        banned[:, self.eos_token_ids] |= (depth > 0).any(dim=0).unsqueeze(-1)
        return scores.masked_fill(banned, -math.inf)


def ink_columns(pixel_values: torch.Tensor, stride: int) -> torch.Tensor:
    """Encoder columns up to the last column holding ink, per image: (batch, 1, H, W) -> (batch,)."""
    has_ink = pixel_values.flatten(1, 2).amax(dim=1) > 0  # (batch, W)
    last = torch.where(has_ink.any(dim=1), has_ink.shape[1] - has_ink.flip(1).int().argmax(dim=1), 0)
    return torch.ceil(last / stride)


class Im2LatexForConditionalGeneration(VisionEncoderDecoderModel):
    """A `VisionEncoderDecoderModel` whose encoder is [`Im2LatexEncoderModel`]. Saved folders are plain
    vision-encoder-decoder folders that also carry this code, so they load with `trust_remote_code=True` in a process
    that never imported the `modeling` package."""

    config_class = Im2LatexConfig
    # The inherited loss is a plain mean over the batch's tokens; it ignores `num_items_in_batch`, so the Trainer must
    # keep scaling it for gradient accumulation and several processes itself.
    accepts_loss_kwargs = False

    def __init__(self, config: Im2LatexConfig, encoder: PreTrainedModel | None = None, decoder=None):
        if encoder is None:
            encoder = Im2LatexEncoderModel(config.encoder)
        super().__init__(config, encoder=encoder, decoder=decoder)
        # Where remote code finds each class. The config class is named through this module: a local folder's
        # files are loaded per import chain, and the config class must be the very one this module imports.
        module = __name__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            "AutoConfig": f"{module}.{Im2LatexConfig.__name__}",
            "AutoModelForImageTextToText": f"{module}.{type(self).__name__}",
        }
        # transformers 5 turns pipeline("image-to-text") into "image-text-to-text" before it looks at its registry,
        # but a task named here comes first: the folder's own pipeline code serves it (with trust_remote_code=True).
        self.config.custom_pipelines = {
            PIPELINE_TASK: {
                "impl": f"{ImageToLatexPipeline.__module__.rsplit('.', 1)[-1]}.{ImageToLatexPipeline.__name__}",
                "pt": ["AutoModelForImageTextToText"],
                "type": "image",
            }
        }

    def generate(self, pixel_values: torch.Tensor | None = None, **kwargs):
        """`VisionEncoderDecoderModel.generate`, with each output's length bounded by its image's ink width when
        `config.max_tokens_per_column` is set (see `InkWidthLengthBound`), no token repeated more than
        `config.max_token_repeats` times in a row when that is set (see `TokenRepeatLimit`), no more than
        `config.max_spacing_run` spacing commands (`config.spacing_token_ids`) in a row when both are set (see
        `SpacingRunLimit`), and LaTeX groups kept balanced when `config.group_token_ids` is set (see
        `BalancedGroups`)."""
        processors = list(kwargs.get("logits_processor") or [])
        config = kwargs.get("generation_config") or self.generation_config
        groups = getattr(self.config, "group_token_ids", None)
        if groups:  # before the length bound, whose forced end token must win
            vocab_size = self.config.decoder.vocab_size
            processors.append(BalancedGroups(groups, vocab_size, config.eos_token_id, device=self.device))
        per_column = getattr(self.config, "max_tokens_per_column", None)
        if pixel_values is not None and per_column:
            beams = kwargs.get("num_beams") or config.num_beams or 1
            extra = getattr(self.config, "extra_tokens", EXTRA_TOKENS)
            limits = ink_columns(pixel_values, self.encoder.config.stride) * per_column + extra  # (batch,)
            processors.append(InkWidthLengthBound(limits.repeat_interleave(beams), config.eos_token_id))
        max_repeats = getattr(self.config, "max_token_repeats", None)
        if max_repeats is not None:  # 0 or less raises in TokenRepeatLimit: only None turns the limit off
            processors.append(TokenRepeatLimit(max_repeats))
        max_run = getattr(self.config, "max_spacing_run", None)
        if max_run is not None and getattr(self.config, "spacing_token_ids", None):  # as above: None turns it off
            processors.append(SpacingRunLimit(self.config.spacing_token_ids, max_run, device=self.device))
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        return super().generate(pixel_values=pixel_values, **kwargs)

    def _reorder_cache(self, past_key_values, beam_idx: torch.LongTensor):
        """Beam search's cache reordering (the hook `generate` calls at each step), for the decoder's self-attention
        cache only. Every beam of an image attends to the same encoder output, so the cross-attention cache reads
        the same whatever the reordering; copying it at each step took 62 % of the time of beam search at batch 32
        on a CPU (torch profiler; `python -m bench.predict_latency` measures the speed)."""
        if isinstance(past_key_values, EncoderDecoderCache):
            past_key_values.self_attention_cache.reorder_cache(beam_idx)
        else:
            past_key_values.reorder_cache(beam_idx)
        return past_key_values


AutoModel.register(Im2LatexEncoderConfig, Im2LatexEncoderModel, exist_ok=True)
Im2LatexForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
