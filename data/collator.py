"""Collating processed examples into a batch: images padded together, labels padded with -100."""

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class FormulaCollator:
    """Pads a list of `{"pixel_values": (H, W) array, "labels": ids}` examples into tensors.

    Images are padded to the batch's largest (rounded to the encoder stride) by the image processor, with
    background; labels are padded with -100, which the loss ignores.

    Args:
        image_processor: the model's `Im2LatexImageProcessor` (model-agnostic here: anything with `pad`).
    """

    image_processor: Any
    label_pad_id: int = -100

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty list of examples")
        batch = {"pixel_values": self.image_processor.pad([f["pixel_values"] for f in features])}
        if "labels" in features[0]:
            width = max(len(f["labels"]) for f in features)
            labels = torch.full((len(features), width), self.label_pad_id, dtype=torch.long)
            for row, feature in enumerate(features):
                labels[row, : len(feature["labels"])] = torch.as_tensor(feature["labels"], dtype=torch.long)
            batch["labels"] = labels
        return batch
