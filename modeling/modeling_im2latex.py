"""The im2latex model: a timm ResNet encoder with a 2-D positional encoding, inside a VisionEncoderDecoderModel."""

import math

import timm
import torch
from timm.models.resnet import BasicBlock
from torch import nn
from transformers import AutoModel, PreTrainedModel, VisionEncoderDecoderModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .configuration_im2latex import Im2LatexConfig, Im2LatexEncoderConfig
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


class Im2LatexForConditionalGeneration(VisionEncoderDecoderModel):
    """A `VisionEncoderDecoderModel` whose encoder is [`Im2LatexEncoderModel`]. Saved folders are plain
    vision-encoder-decoder folders that also carry this code, so they load with `trust_remote_code=True` in a process
    that never imported the `modeling` package."""

    config_class = Im2LatexConfig

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


AutoModel.register(Im2LatexEncoderConfig, Im2LatexEncoderModel, exist_ok=True)
Im2LatexForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
