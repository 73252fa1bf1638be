"""Reading formulas with a loaded model: batched generation with a confidence score per formula."""

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers import PreTrainedModel, ProcessorMixin

from .image_processing_im2latex import READING_BUCKET


@dataclass
class Reading:
    """One image's result: the LaTeX (token form), the mean log-probability of its tokens, whether generation
    stopped at the length limit instead of at an end token (a sign of a looping output), and whether the reading
    is of the image enlarged (`Im2LatexImageProcessor.enlarged`)."""

    latex: str
    score: float
    truncated: bool
    enlarged: bool = False


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

    An image whose glyphs are small is also read enlarged (`Im2LatexImageProcessor.enlarged`), in a second batch so
    that the first reads exactly as without it; the reading that ended (rather than hit the length limit) is kept,
    and of two that both did or both did not, the one with the higher mean token log-probability.

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
    if num_beams is not None:
        generate_kwargs["num_beams"] = num_beams
    image_processor = processor.image_processor
    best = _generate(model, processor, images, bucket, generate_kwargs)
    # Enlarged views batch by their own bucket, so that each reads as it would alone, whatever the batch.
    groups = defaultdict(dict)
    for index, image in enumerate(images):
        enlarged = image_processor.enlarged(image)
        if enlarged is not None:
            key = image_processor.padded_shape([enlarged.shape], bucket) if bucket is not None else None
            groups[key][index] = enlarged
    for group in groups.values():
        readings = _generate(model, processor, list(group.values()), bucket, generate_kwargs)
        for index, reading in zip(group, readings, strict=True):
            if (not reading.truncated, reading.score) > (not best[index].truncated, best[index].score):
                best[index] = replace(reading, enlarged=True)
    return best


def _generate(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: list[np.ndarray],
    bucket: tuple[int, int] | None,
    generate_kwargs: dict,
) -> list[Reading]:
    """One `generate` call over prepared images: a `Reading` each."""
    pixel_values = processor.image_processor.pad(images, bucket=bucket).to(device=model.device, dtype=model.dtype)
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
