"""Average the weights of fine-tunes of one model (WiSE-FT, a model soup), or store a model's weights in bfloat16.

    python tools/average_models.py models/im2latex-base RUN --output AVG                  # the mean of the two
    python tools/average_models.py models/im2latex-base RUN --weights 0.7 0.3 --output AVG
    python tools/average_models.py RECALIBRATED --output SHIP --dtype bfloat16             # one model: only stored

Averaged BatchNorm running statistics are not the statistics of the averaged weights: re-estimate them afterwards
with `train.py --do_train false --recalibrate_batch_norm N --model_name_or_path AVG` (README: Training).

The output gets a copy of the first model's configuration, generation configuration and processor, so it reads as
the first model reads. Tensors are computed in float32 and stored in `--dtype`; `config.json` keeps float32, so
`from_pretrained` loads bfloat16 weights as float32 (stored so, the shipped model is half the size).
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
# What makes a model folder read as it does, copied from the first model byte for byte (a from_pretrained and
# save_pretrained round trip drops `use_cache` and writes loading options into tokenizer_config.json).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "*.py",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def average_state_dicts(
    state_dicts: list[dict[str, torch.Tensor]], weights: list[float], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The weighted mean of each floating-point tensor, in float32 and then `dtype`; other tensors (BatchNorm's
    `num_batches_tracked`) are the first state dict's.

    Raises:
        ValueError: if the state dicts differ in names or shapes, or the weights are not one per state dict
            summing to 1.
    """
    if len(weights) != len(state_dicts) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"need one weight per model, summing to 1; got {weights} for {len(state_dicts)} models")
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=1):
        if other.keys() != first.keys():
            different = sorted(other.keys() ^ first.keys())
            raise ValueError(f"model {index} has other tensors than model 0: {different[:5]}")
        shapes = [name for name in first if other[name].shape != first[name].shape]
        if shapes:
            raise ValueError(f"model {index} has other shapes than model 0 for {shapes[:5]}")
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            mean = sum(weight * sd[name].float() for weight, sd in zip(weights, state_dicts, strict=True))
            averaged[name] = mean.to(dtype).contiguous()
        else:
            averaged[name] = tensor.clone()
    return averaged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model folders; the first gives config and processor")
    parser.add_argument("--output", type=Path, required=True, help="a new (or empty) folder")
    parser.add_argument("--weights", nargs="+", type=float, help="one per model, summing to 1 (default: equal)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="how the weights are stored")
    args = parser.parse_args(argv)

    for folder in args.models:
        if not (folder / WEIGHTS).is_file():
            parser.error(f"{folder} has no {WEIGHTS}")
    if args.output.exists() and any(args.output.iterdir()):
        parser.error(f"{args.output} exists and is not empty; give a new folder")
    weights = args.weights or [1.0 / len(args.models)] * len(args.models)
    try:
        averaged = average_state_dicts(
            [load_file(folder / WEIGHTS) for folder in args.models], weights, DTYPES[args.dtype]
        )
    except ValueError as error:
        parser.error(str(error))

    first = args.models[0]
    args.output.mkdir(parents=True, exist_ok=True)
    for pattern in MODEL_FILES:
        for path in first.glob(pattern):
            shutil.copy2(path, args.output / path.name)
    save_file(averaged, args.output / WEIGHTS, metadata={"format": "pt"})
    mix = " + ".join(f"{weight:g} x {folder}" for weight, folder in zip(weights, args.models, strict=True))
    print(f"{args.output}: {mix}, {len(averaged)} tensors in {args.dtype}")


if __name__ == "__main__":
    main()
