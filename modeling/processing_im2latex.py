"""The im2latex processor: the image processor and the LaTeX tokenizer, saved and loaded together."""

from transformers import BatchFeature, ProcessorMixin

from .image_processing_im2latex import Im2LatexImageProcessor


class Im2LatexProcessor(ProcessorMixin):
    r"""
    Wraps an [`Im2LatexImageProcessor`] and a `PreTrainedTokenizerFast`.

    `processor(images=...)` gives `pixel_values`; `processor(images=..., text=prefix)` also gives
    `decoder_input_ids` (start token + the prefix's tokens, no end token) so that `generate` continues a given start
    of the formula, as the "image-text-to-text" pipeline does (`text=""` for no prefix). Labels for training come
    from the tokenizer (`processor.tokenizer(formula).input_ids`, which ends with `</s>`).
    """

    def __init__(self, image_processor: Im2LatexImageProcessor | None = None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(self, images=None, text: str | list[str] | None = None, return_tensors: str | None = "pt", **kwargs):
        if images is None and text is None:
            raise ValueError("give images, text (a formula prefix), or both")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            ids = [
                [self.tokenizer.bos_token_id] + self.tokenizer(t, add_special_tokens=False).input_ids for t in texts
            ]
            if len({len(row) for row in ids}) > 1:
                raise ValueError(f"prefixes in one batch must have the same number of tokens, got {texts}")
            data["decoder_input_ids"] = ids
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "decoder_input_ids"]


Im2LatexProcessor.register_for_auto_class("AutoProcessor")
