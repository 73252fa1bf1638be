"""Publish a trained im2latex model folder on the Hugging Face Hub, or write the exact folder that would be uploaded.

    python push_to_hub.py --model outputs/base --repo-id USER/im2latex [--metrics eval/metrics.json]
    python push_to_hub.py --model outputs/base --repo-id USER/im2latex --output-dir hub-folder   # no upload

The folder holds the model, processor, tokenizer, generation config, the model's code (`trust_remote_code=True`
loading, "image-to-text" pipeline included) and a model card.
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from transformers import AutoProcessor

from modeling import Im2LatexForConditionalGeneration

logger = logging.getLogger(__name__)

CARD = """---
library_name: transformers
pipeline_tag: image-to-text
tags:
- latex
- ocr
- math
- vision-encoder-decoder
---

# {name}

Reads an image of a math formula and writes its LaTeX: a ResNet encoder (timm ResNet-18 cut after stage 3, 2-D
positional encoding) and a Transformer decoder in a `VisionEncoderDecoderModel`, {parameters:.1f} M parameters.

## Usage

```python
from transformers import pipeline

pipe = pipeline("image-to-text", model="{repo_id}", trust_remote_code=True)
print(pipe("formula.png")[0]["generated_text"])
# or the built-in task, with an empty prefix:
pipe = pipeline("image-text-to-text", model="{repo_id}", trust_remote_code=True)
print(pipe(images="formula.png", text="")[0]["generated_text"])
```

The model's code needs `pip install torch transformers timm pillow opencv-python-headless`.
The output is in the im2latex-100k token form (`\\frac {{ a }} {{ b }}`: tokens separated by spaces). With the
project's code installed (`import modeling`), `trust_remote_code` is not needed for local folders.

## Training data

Formulas from arXiv papers, open textbooks, Math StackExchange and CROHME ground truth, normalised to the
im2latex-100k token form and rendered with pdflatex in varied fonts, sizes and degradations, plus the im2latex-100k
training sample. No im2latex-100k validation or test formula, nor CROHME test formula, was trained on.

## Evaluation

{metrics}

## Limitations

- Printed formulas only; handwriting is out of scope.
- One formula per image; multi-line environments beyond `array`/`aligned` are rarely right.
- Outputs are token-form LaTeX; very long formulas (beyond {max_length} tokens) are cut.
- Published im2latex-100k numbers use the original renders; ours re-render the same test formulas, so compare
  with care.
"""


def metrics_table(metrics_path: Path | None) -> str:
    """A Markdown table of the numeric entries of an evaluation JSON (as `evaluate.py` writes it)."""
    if metrics_path is None:
        return "No evaluation was given when this card was written."
    metrics = json.loads(metrics_path.read_text())
    context = ", ".join(f"{key}: {metrics[key]}" for key in ("dataset", "split", "num_samples") if key in metrics)
    rows = [
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return "\n".join(([context, ""] if context else []) + ["| metric | value |", "|---|---|", *rows])


def write_hub_folder(model_dir: Path, output_dir: Path, repo_id: str, metrics_path: Path | None = None) -> None:
    """Write everything that is uploaded: model, processor, generation config, code and model card."""
    model = Im2LatexForConditionalGeneration.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)  # weights, config, generation config and the code, pipeline included
    processor.save_pretrained(output_dir)
    card = CARD.format(
        name=repo_id.split("/")[-1],
        repo_id=repo_id,
        parameters=model.num_parameters() / 1e6,
        metrics=metrics_table(metrics_path),
        max_length=model.generation_config.max_length,
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def upload(folder: Path, repo_id: str, private: bool, commit_message: str) -> str:
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise RuntimeError("HF_HUB_OFFLINE is set: unset it to upload, or use --output-dir to write the folder")
    if get_token() is None:
        raise RuntimeError("not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message).commit_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="saved model folder (train.py's output)")
    parser.add_argument("--repo-id", required=True, help="USER/NAME on the Hub")
    parser.add_argument("--metrics", type=Path, help="evaluate.py's metrics.json, shown in the model card")
    parser.add_argument("--output-dir", type=Path, help="write the folder here instead of uploading it")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit-message", default="Upload im2latex model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not (args.model / "config.json").is_file():
        print(f"error: {args.model} is not a saved model folder (no config.json)", file=sys.stderr)
        return 2
    if args.metrics is not None and not args.metrics.is_file():
        print(f"error: metrics file {args.metrics} does not exist", file=sys.stderr)
        return 2
    if args.output_dir is not None:
        write_hub_folder(args.model, args.output_dir, args.repo_id, args.metrics)
        logger.info("wrote %s (not uploaded)", args.output_dir)
        return 0
    with tempfile.TemporaryDirectory() as staging:
        write_hub_folder(args.model, Path(staging), args.repo_id, args.metrics)
        try:
            url = upload(Path(staging), args.repo_id, args.private, args.commit_message)
        except Exception as error:  # offline, not logged in, no permission: one line, no traceback
            print(f"error: could not upload to {args.repo_id}: {str(error).splitlines()[0]}", file=sys.stderr)
            return 1
    logger.info("uploaded to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
