"""im2latex modeling: importing this package registers the model, processors and the "image-to-text" pipeline
with the transformers Auto classes, so saved folders load with `from_pretrained` and `pipeline(...)`."""

from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .compact import to_compact
from .configuration_im2latex import Im2LatexConfig, Im2LatexEncoderConfig, make_config, make_generation_config
from .image_processing_im2latex import Im2LatexImageProcessor, InvalidImageError, load_image
from .modeling_im2latex import Im2LatexEncoderModel, Im2LatexForConditionalGeneration, PositionalEncoding2D
from .pipeline_im2latex import PIPELINE_TASK, REGISTERED_TASK, ImageToLatexPipeline
from .processing_im2latex import Im2LatexProcessor
from .tokenization_im2latex import group_token_ids, spacing_token_ids, train_tokenizer

AutoImageProcessor.register(Im2LatexEncoderConfig, Im2LatexImageProcessor, exist_ok=True)
AutoProcessor.register(Im2LatexEncoderConfig, Im2LatexProcessor, exist_ok=True)
for task in (REGISTERED_TASK, PIPELINE_TASK):
    if task not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=ImageToLatexPipeline, pt_model=AutoModelForImageTextToText, type="image"
        )

__all__ = [
    "Im2LatexConfig",
    "Im2LatexEncoderConfig",
    "Im2LatexEncoderModel",
    "Im2LatexForConditionalGeneration",
    "Im2LatexImageProcessor",
    "Im2LatexProcessor",
    "ImageToLatexPipeline",
    "InvalidImageError",
    "PositionalEncoding2D",
    "group_token_ids",
    "load_image",
    "make_config",
    "make_generation_config",
    "spacing_token_ids",
    "to_compact",
    "train_tokenizer",
]
