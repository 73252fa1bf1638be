"""The "image-to-text" pipeline for im2latex models: image(s) in, `[{"generated_text": latex}]` out.

transformers 5 dropped its own "image-to-text" task, and `pipeline("image-to-text")` there becomes
"image-text-to-text" before the task registry is read. Saved model folders therefore name this class in
`config.custom_pipelines`, which `pipeline()` reads first: `pipeline("image-to-text", model=FOLDER,
trust_remote_code=True)`. Importing `modeling` also registers it as "image-to-latex", which needs no remote code,
and as "image-to-text" where the installed transformers has no such task and does not redirect it.
"""

from typing import Any

import numpy as np
from transformers import Pipeline

from .inference import read_formulas

PIPELINE_TASK = "image-to-text"
REGISTERED_TASK = "image-to-latex"


class ImageToLatexPipeline(Pipeline):
    """Reads formula images and returns their LaTeX.

    Accepts a PIL image, a path, raw bytes, or a list of them. Images of different sizes are batched together
    (`batch_size=N`) and read by `read_formulas`, as predict.py and the server read them.
    Generation options go through `generate_kwargs`, e.g. `pipe(image, generate_kwargs={"num_beams": 4})`, or
    `max_new_tokens=...`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True

    def __call__(self, inputs: Any = None, **kwargs) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        if inputs is None:
            inputs = kwargs.pop("images", None)
        if inputs is None:
            raise ValueError("Give the pipeline an image: a PIL image, a path, bytes, or a list of them.")
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, generate_kwargs: dict | None = None, max_new_tokens: int | None = None, **kwargs):
        forward_params = {"generate_kwargs": dict(generate_kwargs or {})}
        if max_new_tokens is not None:
            forward_params["generate_kwargs"]["max_new_tokens"] = max_new_tokens
        return {}, forward_params, {}

    def preprocess(self, image: Any) -> dict[str, np.ndarray]:
        # Unpadded here; `_forward` pads the whole batch at once, so images of any size batch together.
        return {"image": self.processor.image_processor.prepare(image)}

    def _forward(self, model_inputs: dict, generate_kwargs: dict | None = None) -> dict:
        images = model_inputs["image"]
        images = images if isinstance(images, list) else [images]
        readings = read_formulas(self.model, self.processor, images, **(generate_kwargs or {}))
        return {"texts": [reading.latex for reading in readings]}

    def postprocess(self, model_outputs: dict) -> list[dict[str, str]]:
        texts = model_outputs["texts"]  # a batch's list, or one text once the pipeline has unbatched it
        return [{"generated_text": text} for text in ([texts] if isinstance(texts, str) else texts)]
