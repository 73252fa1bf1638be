"""Reading formulas with a loaded model: batched generation with a confidence score per formula."""

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, ProcessorMixin

from .image_processing_im2latex import READING_BUCKET


@dataclass
class Reading:
    """One image's result: the LaTeX (token form), the mean log-probability of its tokens, and whether
    generation stopped at the length limit instead of at an end token (a sign of a looping output)."""

    latex: str
    score: float
    truncated: bool


@torch.inference_mode()
def read_formulas(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: list[np.ndarray],
    num_beams: int | None = None,
    bucket: tuple[int, int] | None = READING_BUCKET,
    **generate_kwargs,
) -> list[Reading]:
    """Generate the LaTeX of a batch of images already prepared by `processor.image_processor.prepare`.

    Args:
        model: an im2latex `VisionEncoderDecoderModel`.
        processor: its `Im2LatexProcessor`.
        images: prepared images (float arrays), of any sizes.
        num_beams: beams; the model's generation config decides when None.
        bucket: (height, width) steps each image is padded up to before batching (see the image processor's
            `pad`); None pads only to the batch's largest image.
        generate_kwargs: passed to `generate`.

    Returns:
        One `Reading` per image, in order.
    """
    pixel_values = processor.image_processor.pad(images, bucket=bucket).to(device=model.device, dtype=model.dtype)
    if num_beams is not None:
        generate_kwargs["num_beams"] = num_beams
    out = model.generate(
        pixel_values=pixel_values, output_scores=True, return_dict_in_generate=True, **generate_kwargs
    )
    beam_indices = getattr(out, "beam_indices", None)  # beam scores are log-probabilities already
    transition = model.compute_transition_scores(
        out.sequences, out.scores, beam_indices, normalize_logits=beam_indices is None
    )  # (batch, generated): log-probability of each chosen token
    generated = out.sequences[:, 1:]  # (batch, generated), the start token dropped
    # A generation config holds one end token id or a list of them (transformers 5.17 saves a list).
    eos = torch.tensor(model.generation_config.eos_token_id, device=generated.device).flatten()
    is_eos = torch.isin(generated, eos)
    # Score the tokens up to and including the first end token; what follows it is padding.
    counted = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
    transition = transition.float().masked_fill(~counted, 0.0)
    scores = transition.sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    texts = processor.batch_decode(out.sequences, skip_special_tokens=True)
    truncated = ~is_eos.any(dim=1)
    return [
        Reading(latex=text, score=float(score), truncated=bool(cut))
        for text, score, cut in zip(texts, scores.tolist(), truncated.tolist(), strict=True)
    ]
