"""train.py end to end on configs/tiny.json (the 12-image fixture), run as a subprocess from the repository root."""

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from transformers import AutoProcessor, Seq2SeqTrainer

from data.augment import AugmentConfig
from data.normalize import canonical
from modeling import Im2LatexForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
SHORT = ("--eval_steps", "3", "--save_steps", "3", "--logging_steps", "1")
# Evaluation generates with a random model that rarely stops: fewer and shorter readings keep the runs quick.
QUICK_EVAL = ("--max_eval_samples", "4", "--generation_max_length", "8")
METRICS = {"eval_loss", "eval_bleu", "eval_token_edit_similarity", "eval_cer", "eval_exact_match"}


def run_train(*arguments: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, "train.py", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=600)


def train_losses(state: dict) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("train") / "tiny"
    done = run_train("configs/tiny.json", "--output_dir", str(output), "--max_steps", "6", *SHORT, *QUICK_EVAL)
    assert done.returncode == 0, done.stderr[-3000:]
    return output, done


def test_output_folder_loads_and_generates(trained):
    output, _ = trained
    model = Im2LatexForConditionalGeneration.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    # tiny.json: default_num_beams 2; max_length covers the longest training label, in the canonical form the labels
    # take (+1 start token, +10 %).
    assert model.generation_config.num_beams == 2
    with open(ROOT / "tests" / "fixtures" / "tiny_dataset" / "metadata.csv", newline="", encoding="utf-8") as file:
        formulas = [canonical(row["formula"]) for row in csv.DictReader(file)]
    longest = max(len(ids) for ids in processor.tokenizer(formulas).input_ids)
    assert model.generation_config.max_length == longest + 1 + math.ceil(0.1 * longest)
    image = Image.new("L", (200, 40), 255)
    ImageDraw.Draw(image).text((8, 12), "x^2 + y", fill=0)
    pixel_values = processor(images=image).pixel_values
    with torch.inference_mode():
        sequences = model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=8)
    assert sequences.shape[0] == 1 and 1 < sequences.shape[1] <= 9
    assert sequences[0, 0].item() == model.generation_config.decoder_start_token_id
    assert isinstance(processor.batch_decode(sequences, skip_special_tokens=True)[0], str)


def test_output_folder_holds_the_best_checkpoint(trained):
    output, _ = trained
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    best = Path(state["best_model_checkpoint"])
    assert best.parent == output and best.name in {"checkpoint-3", "checkpoint-6"}
    saved, kept = load_file(output / "model.safetensors"), load_file(best / "model.safetensors")
    assert saved.keys() == kept.keys()
    for name, tensor in saved.items():
        assert torch.equal(tensor, kept[name]), name


def test_metrics_and_curves(trained):
    output, _ = trained
    evals = json.loads((output / "eval_results.json").read_text())
    assert METRICS <= set(evals)
    assert 0.0 <= evals["eval_bleu"] <= 1.0 and 0.0 <= evals["eval_token_edit_similarity"] <= 1.0
    state = json.loads((output / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_bleu" in e] == [3, 6]
    assert all(METRICS <= set(e) for e in state["log_history"] if "eval_loss" in e)
    assert [step for step, _ in train_losses(state)] == [1, 2, 3, 4, 5, 6]
    curves = output / "training_curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(curves) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_train_loss_is_the_mean_token_loss(trained):
    """A barely trained model's train loss is about its validation loss (both mean cross-entropy per token)."""
    output, _ = trained
    state = json.loads((output / "trainer_state.json").read_text())
    eval_loss = next(e["eval_loss"] for e in state["log_history"] if "eval_loss" in e)
    assert all(0.5 * eval_loss < loss < 1.5 * eval_loss for _, loss in train_losses(state))


def test_fine_tuning_changes_the_image_size_limits(trained, tmp_path):
    original, _ = trained
    output = tmp_path / "wider"
    args = ("--model_name_or_path", str(original), "--output_dir", str(output), "--max_steps", "1", *QUICK_EVAL)
    done = run_train("configs/tiny.json", *args, "--image_max_width", "320")
    assert done.returncode == 0, done.stderr[-3000:]
    image_processor = AutoProcessor.from_pretrained(output).image_processor
    assert (image_processor.max_width, image_processor.max_height) == (320, 64)  # tiny.json's height, kept
    done = run_train("configs/tiny.json", *args, "--image_max_height", "4")
    assert done.returncode != 0 and "min_height=32, max_height=4" in done.stderr


def test_label_smoothing_trains(tmp_path):
    """With label smoothing the Trainer computes the loss from the logits and passes the model no labels, so the
    collator supplies the decoder inputs (without them the model raises)."""
    output = tmp_path / "smoothed"
    args = ("--output_dir", str(output), "--max_steps", "3", *SHORT, *QUICK_EVAL, "--label_smoothing_factor", "0.2")
    done = run_train("configs/tiny.json", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert all(math.isfinite(loss) for _, loss in train_losses(state))


def test_size_sorted_pools_stream_the_epochs(tmp_path):
    """With --pool_batches the training set is streamed; the epochs asked for become steps (12 images, 4 a step)."""
    output = tmp_path / "pools"
    args = ("--output_dir", str(output), "--max_steps", "-1", "--num_train_epochs", "2", *SHORT, *QUICK_EVAL)
    done = run_train("configs/tiny.json", *args, "--pool_batches", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["max_steps"] == 6
    assert all(math.isfinite(loss) for _, loss in train_losses(state))
    assert (output / "model.safetensors").is_file()


def test_size_sorted_pools_resume_without_replaying_the_stream(tmp_path):
    output = tmp_path / "pools"
    args = ("configs/tiny.json", "--output_dir", str(output), *SHORT, *QUICK_EVAL, "--pool_batches", "2")
    assert run_train(*args, "--max_steps", "3").returncode == 0
    done = run_train(*args, "--max_steps", "6")
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert f"resuming from {output / 'checkpoint-3'}" in log and log.count("{'loss'") == 3
    # The stream starts afresh: the Trainer would otherwise process and drop every batch already trained on.
    assert torch.load(output / "checkpoint-6" / "training_args.bin", weights_only=False).ignore_data_skip
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [step for step, _ in train_losses(state)] == list(range(1, 7))


def test_resume_from_last_checkpoint(trained, tmp_path):
    original, _ = trained
    output = tmp_path / "tiny"
    shutil.copytree(original, output)
    done = run_train("configs/tiny.json", "--output_dir", str(output), "--max_steps", "9", *SHORT, *QUICK_EVAL)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert f"resuming from {output / 'checkpoint-6'}" in log
    assert log.count("{'loss'") == 3  # steps 7, 8 and 9 only: the run did not start again at step 0
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 9
    assert [step for step, _ in train_losses(state)] == list(range(1, 10))
    assert (output / "checkpoint-9").is_dir()


def test_time_budget_saves_and_stops(tmp_path):
    """With --max_train_seconds 0 the budget is spent after the first step: that step is saved, then the run ends."""
    output = tmp_path / "budget"
    no_eval = ("--eval_strategy", "no", "--do_eval", "false", "--load_best_model_at_end", "false")
    done = run_train("configs/tiny.json", "--output_dir", str(output), "--max_train_seconds", "0", *no_eval)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "time budget of 0 s spent at step 1: saving and stopping" in done.stdout + done.stderr
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 30
    assert [path.name for path in output.glob("checkpoint-*")] == ["checkpoint-1"]
    assert (output / "model.safetensors").is_file()


def test_augment_options_are_logged_and_bad_ones_refused(tmp_path):
    no_eval = ("--eval_strategy", "no", "--do_eval", "false", "--load_best_model_at_end", "false")
    args = ("configs/tiny.json", "--max_train_seconds", "0", *no_eval)
    options = '{"p_blur": 0.9, "blur_sigma_range": [0.5, 1.6]}'
    spaced = '{"p_blur": 0, "p_noise": 0}'
    done = run_train(
        *args, "--output_dir", str(tmp_path / "good"), "--augment_options", options, "--augment_spaced_options", spaced
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "p_blur=0.9, blur_sigma_range=(0.5, 1.6)" in done.stdout + done.stderr
    # the spaced formulas' augmentation: augment_options' with the spaced options on top
    assert re.search(
        r"hand spacing: AugmentConfig\(.*p_blur=0, blur_sigma_range=\(0.5, 1.6\)", done.stdout + done.stderr
    )
    done = run_train(*args, "--output_dir", str(tmp_path / "bad"), "--augment_options", '{"p_blurr": 0.9}')
    assert done.returncode == 2 and "unknown augment options ['p_blurr']" in done.stderr  # a usage error
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_gradient_accumulation_does_not_scale_the_loss(tmp_path):
    output = tmp_path / "accumulated"
    done = run_train(
        *("configs/tiny.json", "--output_dir", str(output), "--max_steps", "1", "--logging_steps", "1"),
        *("--gradient_accumulation_steps", "2", "--learning_rate", "0", "--warmup_steps", "0"),
        *("--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "false", "--do_eval", "false"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    (_, loss), *_ = train_losses(state)
    config = json.loads((output / "config.json").read_text())
    vocab = config["decoder"]["vocab_size"]
    assert 0.7 * math.log(vocab) < loss < 1.3 * math.log(vocab)  # random init: about ln(vocab) per token
    assert config.get("use_cache", True)  # the Trainer turns it off for training; the saved model reads with it


def parse_train_args(*argv: str):
    import train  # the root script; pytest puts the root on sys.path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["train.py", *argv])
        return train.parse_args()


def test_config_and_command_line_make_the_arguments(tmp_path):
    path = ROOT / "configs" / "tiny.json"
    config = json.loads(path.read_text())
    assert config["max_steps"] != 7
    model_args, data_args, training_args, budget_args = parse_train_args(
        str(path), "--output_dir", str(tmp_path), "--max_steps", "7", "--max_train_seconds", "90"
    )
    assert data_args.dataset == config["dataset"] and model_args.d_model == config["d_model"]
    assert budget_args.max_train_seconds == 90
    assert model_args.encoder_stage_widths == config["encoder_stage_widths"]
    assert training_args.eval_steps == config["eval_steps"]
    assert training_args.max_steps == 7 and training_args.output_dir == str(tmp_path)  # the flags win
    assert data_args.augment_options is None


def test_config_file_gives_augment_options_as_an_object(tmp_path):
    config = json.loads((ROOT / "configs" / "tiny.json").read_text())
    config["augment_options"] = {"p_noise": 0.5, "noise_sigma_range": [2, 20]}
    path = tmp_path / "augment.json"
    path.write_text(json.dumps(config))
    _, data_args, _, _ = parse_train_args(str(path), "--output_dir", str(tmp_path / "out"))
    assert AugmentConfig.from_options(data_args.augment_options).noise_sigma_range == (2, 20)
    _, data_args, _, _ = parse_train_args(str(path), "--augment_options", '{"p_noise": 0.1}')
    assert AugmentConfig.from_options(data_args.augment_options).p_noise == 0.1  # the command line wins


def test_bad_spaced_augment_options_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args("configs/tiny.json", "--augment_spaced_options", '{"p_noisy": 0}')
    assert exit_info.value.code == 2 and "unknown augment options ['p_noisy']" in capsys.readouterr().err


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    config = json.loads((ROOT / "configs" / "tiny.json").read_text())
    config["learning_rat"] = 0.1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(str(path), "--output_dir", str(tmp_path / "out"))
    assert exit_info.value.code == 2
    assert f"{path} has keys that are no argument: ['learning_rat']" in capsys.readouterr().err


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(str(missing), "--output_dir", str(tmp_path / "out"))
    assert exit_info.value.code == 2
    assert f"config file {missing} does not exist" in capsys.readouterr().err


# Distributed data parallel on the CPU: two processes (gloo). `accelerate launch --cpu --num_processes 2` starts a
# single process (accelerate's simple launcher), so the two processes come from `--multi_gpu` with `--use_cpu`.
# About 15-20 s on two busy cores: marked slow to keep this file's default run short.


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not ACCELERATE.exists():
        pytest.skip("accelerate's launcher is not installed")
    output = tmp_path_factory.mktemp("ddp") / "tiny"
    done = run_train(
        *("configs/tiny.json", "--use_cpu", "true", "--output_dir", str(output), "--max_steps", "4"),
        *("--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1", *QUICK_EVAL),
        *("--max_train_seconds", "3600"),  # a budget never spent: the processes agree on it every step
        launcher=(str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return output, done


@pytest.mark.slow
def test_distributed_training_on_two_processes(distributed):
    output, done = distributed
    results = json.loads((output / "train_results.json").read_text())
    # 12 images, 4 per process and step: 2 processes make 2 steps an epoch (one process would need 3).
    assert results["epoch"] == pytest.approx(2.0)
    assert (done.stdout + done.stderr).count("train: 12 formulas") == 2  # one line per process
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (output / "model.safetensors").is_file() and (output / "training_curves.png").is_file()
    assert METRICS <= set(json.loads((output / "eval_results.json").read_text()))


@pytest.mark.slow
def test_distributed_train_loss_is_the_mean_token_loss(distributed):
    output, _ = distributed
    state = json.loads((output / "trainer_state.json").read_text())
    eval_loss = next(e["eval_loss"] for e in state["log_history"] if "eval_loss" in e)
    assert all(0.5 * eval_loss < loss < 1.5 * eval_loss for _, loss in train_losses(state))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_only_where_the_cpu_has_it(native, tiny_model, tmp_path, monkeypatch, caplog):
    """configs/cpu.json asks for bf16; a CPU that would only emulate it (here: told so) trains in float32 instead."""
    import train

    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    no_eval = ("--eval_strategy", "no", "--do_eval", "false", "--load_best_model_at_end", "false")
    _, _, training_args, _ = parse_train_args(
        str(ROOT / "configs" / "cpu.json"), "--output_dir", str(tmp_path), *no_eval
    )
    assert training_args.bf16 and training_args.use_cpu
    with caplog.at_level("WARNING", logger="train"):
        train.keep_bf16_where_supported(training_args)
    assert training_args.bf16 is native
    assert ("no native bfloat16" in caplog.text) is not native
    trainer = Seq2SeqTrainer(model=tiny_model, args=training_args)
    assert trainer.accelerator.mixed_precision == ("bf16" if native else "no")


def test_curves_say_when_the_run_did_not_validate(tmp_path):
    import train  # the root script; pytest puts the root on sys.path

    losses = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    metrics = {"eval_bleu": 0.3, "eval_token_edit_similarity": 0.5, "eval_exact_match": 0.1}
    evals = [{"step": 2, "eval_loss": 1.6, **metrics}]
    notes = {}
    for name, history in (("without", losses), ("with", losses + evals)):
        figure = train.plot_curves(history, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        metrics_panel = figure.axes[1]
        notes[name] = [text.get_text() for text in metrics_panel.texts]
        assert len(metrics_panel.lines) == (0 if name == "without" else 3)
    assert notes == {"without": ["no validation in this run"], "with": []}
    # A run that only recalibrates logs nothing: empty panels, and no legend without anything to label
    figure = train.plot_curves([], tmp_path / "empty.png")
    assert figure.axes[0].get_legend() is None and not figure.axes[0].lines


class NormThenDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.dropout(self.norm(x))


def test_recalibrate_batch_norm_averages_the_batch_statistics():
    import train  # the root script; pytest puts the root on sys.path

    torch.manual_seed(0)
    model = NormThenDropout()
    model.norm.running_mean.fill_(5.0)  # moving averages that do not match the data
    batches = [{"x": torch.randn(8, 3) * scale + shift} for scale, shift in ((1, 0), (2, 1), (3, -4))]
    assert train.recalibrate_batch_norm(model, batches, num_batches=2) == 2
    used = torch.stack([batch["x"] for batch in batches[:2]])
    torch.testing.assert_close(model.norm.running_mean, used.mean(dim=1).mean(dim=0))
    torch.testing.assert_close(model.norm.running_var, used.var(dim=1).mean(dim=0))  # unbiased, as BatchNorm keeps
    assert model.norm.momentum == 0.1 and model.training  # put back as they were
    assert model.norm.num_batches_tracked.item() == 2


def test_recalibrate_batch_norm_without_batches_changes_nothing():
    import train

    model = NormThenDropout().eval()
    model.norm.running_mean.fill_(5.0)
    with pytest.raises(ValueError, match="no batches"):
        train.recalibrate_batch_norm(model, [], num_batches=4)
    assert model.norm.running_mean.eq(5.0).all() and not model.training


def test_recalibration_alone_changes_only_the_batch_norm_statistics(trained, tmp_path):
    original = tmp_path / "original"
    shutil.copytree(trained[0], original, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    generation = json.loads((original / "generation_config.json").read_text())
    generation["max_length"] += 20  # longer than the training labels need (a model shipped with more room)
    (original / "generation_config.json").write_text(json.dumps(generation))
    output = tmp_path / "recalibrated"
    done = run_train(
        "configs/tiny.json",
        "--model_name_or_path", str(original), "--output_dir", str(output),
        "--do_train", "false", "--recalibrate_batch_norm", "2", *QUICK_EVAL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BatchNorm statistics re-estimated on 2 training batches" in done.stderr
    before, after = load_file(original / "model.safetensors"), load_file(output / "model.safetensors")
    assert before.keys() == after.keys()
    statistics = {name for name in before if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert statistics and all(torch.equal(before[name], after[name]) for name in before.keys() - statistics)
    assert all(after[name].eq(2).all() for name in statistics if name.endswith("num_batches_tracked"))
    assert not all(torch.equal(before[name], after[name]) for name in statistics if name.endswith("running_mean"))
    assert json.loads((output / "config.json").read_text())["use_cache"] is True
    assert json.loads((output / "generation_config.json").read_text())["max_length"] == generation["max_length"]
    assert (output / "processor_config.json").is_file() and not (output / "trainer_state.json").exists()
    assert list(output.glob("runs/*/events.out.tfevents.*"))  # its evaluation's log, not in the working directory
