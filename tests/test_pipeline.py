"""Using a saved folder: AutoProcessor, pipeline("image-to-text"), "image-text-to-text", and remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoConfig, AutoProcessor, pipeline

from modeling import Im2LatexEncoderConfig, Im2LatexProcessor

# Special tokens suppressed so that the random model says something visible (<pad>, <s>, <unk> are ids 0, 1, 3).
GENERATE = {"min_new_tokens": 3, "max_new_tokens": 6, "suppress_tokens": [0, 1, 3]}


def formula_image(size=(200, 40)) -> Image.Image:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text((8, size[1] // 3), "x^2 + y", fill=0)
    return image


@pytest.fixture()
def saved(tiny_model, tiny_processor, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    return tmp_path


def expected_text(model, processor, images) -> list[str]:
    sequences = model.generate(pixel_values=processor(images=images).pixel_values, **GENERATE)
    return processor.batch_decode(sequences, skip_special_tokens=True)


def test_auto_processor_loads_saved_folder(saved, tiny_processor):
    processor = AutoProcessor.from_pretrained(saved)
    assert isinstance(processor, Im2LatexProcessor)
    assert processor.image_processor.to_dict() == tiny_processor.image_processor.to_dict()
    image = formula_image()
    torch.testing.assert_close(processor(images=image).pixel_values, tiny_processor(images=image).pixel_values)


@pytest.mark.parametrize("task, remote", [("image-to-text", True), ("image-to-latex", False)])
def test_image_to_text_pipeline(task, remote, saved, tiny_model, tiny_processor, tmp_path):
    pipe = pipeline(task, model=str(saved), trust_remote_code=remote)
    image, other = formula_image(), formula_image((300, 90))
    path = tmp_path / "formula.png"
    image.save(path)
    expected = expected_text(tiny_model, tiny_processor, [image])[0]
    assert expected  # min_new_tokens makes the random model say something
    assert pipe(image, generate_kwargs=GENERATE) == [{"generated_text": expected}]
    assert pipe(str(path), generate_kwargs=GENERATE) == [{"generated_text": expected}]
    # A list of images of different sizes, batched: one result list per image, as if each ran alone.
    results = pipe([image, other, str(path)], batch_size=2, generate_kwargs=GENERATE)
    alone = [pipe(x, generate_kwargs=GENERATE) for x in (image, other, str(path))]
    assert results == alone
    beams = pipe(image, generate_kwargs={**GENERATE, "num_beams": 3})
    sequences = tiny_model.generate(pixel_values=tiny_processor(images=image).pixel_values, num_beams=3, **GENERATE)
    assert beams == [{"generated_text": tiny_processor.batch_decode(sequences, skip_special_tokens=True)[0]}]
    # Loading the folder's own code (remote) must not swap the encoder config class AutoConfig gives this process.
    encoder_folder = tmp_path / "encoder"
    tiny_model.encoder.save_pretrained(encoder_folder)
    assert type(AutoConfig.from_pretrained(encoder_folder)) is Im2LatexEncoderConfig


def test_image_text_to_text_pipeline(saved, tiny_model, tiny_processor):
    pipe = pipeline("image-text-to-text", model=str(saved))
    image = formula_image()
    out = pipe(images=image, text="", generate_kwargs=dict(GENERATE))  # transformers 5.17 adds keys to the dict
    assert out[0]["generated_text"] == expected_text(tiny_model, tiny_processor, [image])[0]


def test_pipeline_reports_bad_input(saved, tmp_path):
    pipe = pipeline("image-to-latex", model=str(saved))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        pipe(str(bad))


def test_hub_folder_runs_in_a_fresh_process(saved, tiny_model, tiny_processor, tmp_path):
    """push_to_hub.py --output-dir writes the upload; a process that never imports `modeling` (it runs elsewhere,
    so it cannot) loads it with the folder's own code and runs both pipelines."""
    hub = tmp_path / "hub"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"split": "test", "bleu": 0.5, "exact_match": 0.25}))
    command = [sys.executable, "push_to_hub.py", "--model", str(saved), "--repo-id", "me/im2latex-tiny"]
    done = subprocess.run(
        [*command, "--metrics", str(metrics), "--output-dir", str(hub)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = {p.name for p in hub.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "processor_config.json",
        "tokenizer.json",
        "modeling_im2latex.py",
        "configuration_im2latex.py",
        "image_processing_im2latex.py",
        "processing_im2latex.py",
        "pipeline_im2latex.py",
        "README.md",
    } <= names
    card = (hub / "README.md").read_text()
    assert "| bleu | 0.5000 |" in card and 'pipeline("image-to-text", model="me/im2latex-tiny"' in card

    image = formula_image()
    image.save(tmp_path / "formula.png")
    expected = expected_text(tiny_model, tiny_processor, [image])[0]
    script = textwrap.dedent(
        f"""
        import json, sys
        from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
        folder, image = {str(hub)!r}, {str(tmp_path / "formula.png")!r}
        generate = {GENERATE!r}
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        direct = processor.batch_decode(
            model.generate(pixel_values=processor(images=image).pixel_values, **generate), skip_special_tokens=True
        )[0]
        pipe = pipeline("image-to-text", model=folder, trust_remote_code=True)
        chat = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
        print(json.dumps({{
            "modeling_imported": "modeling" in sys.modules,
            "direct": direct,
            "pipeline": pipe([image, image], batch_size=2, generate_kwargs=generate)[1][0]["generated_text"],
            "chat": chat(images=image, text="", generate_kwargs=generate)[0]["generated_text"],
        }}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"modeling_imported": False, "direct": expected, "pipeline": expected, "chat": expected}


def test_push_to_hub_offline_is_one_clear_line(saved):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "push_to_hub.py", "--model", str(saved), "--repo-id", "me/x"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: could not upload to me/x: HF_HUB_OFFLINE")
    assert "Traceback" not in done.stderr
    missing = subprocess.run(
        [sys.executable, "push_to_hub.py", "--model", "no/such/dir", "--repo-id", "me/x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "no/such/dir is not a saved model folder" in missing.stderr
