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
        model: when given, the batch also holds `decoder_input_ids`, the labels shifted right by the model's
            `prepare_decoder_input_ids_from_labels` (as `transformers.DataCollatorForSeq2Seq` does). The Trainer
            needs them for label smoothing, where it computes the loss itself and passes the model no labels.
    """

    image_processor: Any
    model: Any = None
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
            if self.model is not None:
                batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
        return batch
