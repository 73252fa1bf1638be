"""Train an im2latex model with the Seq2SeqTrainer.

    accelerate launch train.py configs/base.json                 # one or several GPUs, or the CPU
    python train.py configs/tiny.json --max_steps 20    # JSON keys are the arguments; the command line overrides them

The output folder holds checkpoints (a killed run resumes from the last one), TensorBoard logs, the best model
with its processor, tokenizer and generation config, and `training_curves.png`.
"""

import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import HfArgumentParser, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed
from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import default_logdir
from transformers.trainer_utils import get_last_checkpoint

from data.augment import AugmentConfig, make_train_transform
from data.collator import FormulaCollator
from data.dataset import ProcessFormulas, load_formula_dataset, size_sorted_stream, with_canonical_formulas
from data.metrics import build_compute_metrics
from modeling import (
    Im2LatexForConditionalGeneration,
    Im2LatexImageProcessor,
    Im2LatexProcessor,
    make_config,
    make_generation_config,
    spacing_token_ids,
    train_tokenizer,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this saved model (and its processor) instead of a new one."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Saved processor/tokenizer folder; otherwise one is trained on train formulas."},
    )
    vocab_size: int = field(default=1000, metadata={"help": "Size of a newly trained tokenizer's vocabulary."})
    d_model: int = 256
    decoder_layers: int = 3
    decoder_attention_heads: int = 8
    decoder_ffn_dim: int = 1024
    dropout: float = 0.1
    encoder_stage_depths: list[int] = field(default_factory=lambda: [2, 2, 2])
    encoder_stage_widths: list[int] = field(default_factory=lambda: [64, 128, 256])
    max_positions: int = field(default=512, metadata={"help": "Longest label sequence the decoder can hold."})
    image_max_height: int | None = field(
        default=None,
        metadata={"help": "Images are scaled down to at most this height; default: a saved processor's, or 192."},
    )
    image_max_width: int | None = field(
        default=None,
        metadata={"help": "Images are scaled down to at most this width; default: a saved processor's, or 1024."},
    )
    default_num_beams: int = field(default=4, metadata={"help": "Beams saved in the generation config."})


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "Hub id, parquet DatasetDict folder, or image folder with metadata.csv."})
    train_split: str = "train"
    eval_split: str = "validation"
    image_column: str = "image"
    formula_column: str = "formula"
    max_train_samples: int | None = None
    max_eval_samples: int | None = field(default=500, metadata={"help": "Validation formulas scored per eval."})
    augment: bool = field(default=True, metadata={"help": "Augment training images on the fly."})
    # dict in a config file, str (JSON) on the command line, as Seq2SeqTrainingArguments' lr_scheduler_kwargs
    augment_options: dict | str | None = field(
        default=None,
        metadata={
            "help": "AugmentConfig fields that replace its defaults: a JSON object on the command line, e.g. "
            "'{\"p_blur\": 0.5}', or an object in the config file. See data/augment.py."
        },
    )
    augment_spaced_options: dict | str | None = field(
        default=None,
        metadata={
            "help": "AugmentConfig fields that replace augment_options' for training formulas holding hand spacing "
            'commands (data.spacing.has_hand_spacing), e.g. \'{"p_blur": 0, "p_noise": 0}\' so that a gap is only '
            "labelled where it shows. Unset: one augmentation for every formula."
        },
    )
    pool_batches: int = field(
        default=0,
        metadata={
            "help": "Form training batches from pools of this many batches sorted by image size, so that a batch pads "
            "less (python -m bench.batch_padding); the training set is then one endless stream (epochs become "
            "max_steps; a resumed run starts the stream afresh). 0: random batches."
        },
    )


@dataclass
class RunArguments:
    # Not a Seq2SeqTrainingArguments subclass: checkpoints pickle those, and a class of train.py's would not load.
    max_train_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Save a checkpoint and stop after this many seconds of training, for a machine lent for a fixed "
            "time. The learning rate schedule still spans max_steps."
        },
    )
    recalibrate_batch_norm: int = field(
        default=0,
        metadata={
            "help": "Before saving, re-estimate the encoder's BatchNorm statistics as the plain average over this "
            "many training batches (see recalibrate_batch_norm); with --do_train false, do only that to "
            "--model_name_or_path. 0: keep the moving averages that training left."
        },
    )


def parse_args() -> tuple[ModelArguments, DataArguments, Seq2SeqTrainingArguments, RunArguments]:
    """One JSON file of defaults (its keys are the fields below), overridden by `--field value` arguments."""
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments, RunArguments))
    argv = sys.argv[1:]
    if argv and argv[0].endswith(".json"):
        config_path = Path(argv.pop(0))
        if not config_path.is_file():
            parser.error(f"config file {config_path} does not exist")
        defaults = json.loads(config_path.read_text())
        known = {f for dataclass_type in parser.dataclass_types for f in dataclass_type.__dataclass_fields__}
        unknown = sorted(set(defaults) - known)
        if unknown:
            parser.error(f"{config_path} has keys that are no argument: {unknown}")
        parser.set_defaults(**defaults)
        # set_defaults does not lift `required`: the JSON file may provide those.
        for action in parser._actions:
            if action.dest in defaults:
                action.required = False
    model_args, data_args, training_args, run_args = parser.parse_args_into_dataclasses(args=argv)
    try:  # bad options are refused here, before any work, as bad flags are
        AugmentConfig.from_options(data_args.augment_options).with_options(data_args.augment_spaced_options)
    except ValueError as error:
        parser.error(str(error))
    return model_args, data_args, training_args, run_args


class TimeBudget(TrainerCallback):
    """Save a checkpoint and stop once `seconds` of training have passed, rather than be killed between saves."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        spent = time.monotonic() - self.start >= self.seconds
        if torch.distributed.is_initialized():  # all processes stop at the same step, or the others would hang
            agreed = torch.tensor(int(spent), device=args.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
            spent = bool(agreed)
        if spent:
            logger.info("time budget of %.0f s spent at step %d: saving and stopping", self.seconds, state.global_step)
            control.should_save = True
            control.should_training_stop = True


def recalibrate_batch_norm(model: torch.nn.Module, batches: Iterable[dict], num_batches: int) -> int:
    """Set every BatchNorm layer's running mean and variance to the plain average of its batch statistics over the
    first `num_batches` of `batches` ("precise BatchNorm"), the rest of the model in eval mode and no weight changed;
    returns the number of batches used.

    Training leaves moving averages of its last few dozen batches (momentum 0.1), which can fit the model worse than
    the statistics it trained with: after an H200 fine-tune of the shipped model they raised its validation loss
    from 0.113 (recalibrated on 40 batches of 64) to 0.132 (v8 in the model card's "Tried").

    Raises:
        ValueError: if `batches` yields none, before any statistic is touched.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("no batches to re-estimate the BatchNorm statistics from")
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    momenta, was_training = [norm.momentum for norm in norms], model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
        norm.train()
    used = 0
    with torch.no_grad():
        for batch in itertools.chain([first], itertools.islice(batches, num_batches - 1)):
            model(**batch)
            used += 1
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return used


def plot_curves(log_history: list[dict], path: Path):
    """Loss and validation metrics against the training step, as a PNG for people to look at; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    metrics = [k for k in ("eval_bleu", "eval_token_edit_similarity", "eval_exact_match") if evals and k in evals[0]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        left.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        left.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
    left.set(xlabel="step", ylabel="loss", yscale="log", title="Loss")
    if train or evals:
        left.legend()
    for key in metrics:
        right.plot([e["step"] for e in evals], [e[key] for e in evals], "o-", label=key.removeprefix("eval_"))
    right.set(xlabel="step", ylim=(0, 1), title="Validation metrics")
    if metrics:
        right.legend()
    else:
        right.text(0.5, 0.5, "no validation in this run", ha="center", va="center", transform=right.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check: AVX-512 or AMX). Without it, oneDNN emulates
    bfloat16 and bf16 autocast is slower than float32, not faster."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return check is None or bool(check())


def keep_bf16_where_supported(training_args: Seq2SeqTrainingArguments) -> None:
    """Turn bf16 off, with a warning, for training on a CPU that would only emulate it: on a 2-core AVX2 machine a
    training step ran 16-20 times slower in bf16 autocast than in float32 (`python -m bench.train_step`)."""
    on_cpu = training_args.use_cpu or not torch.cuda.is_available()
    if training_args.bf16 and on_cpu and not cpu_has_native_bf16():
        logger.warning(
            "bf16 was asked for, but this CPU has no native bfloat16 (%s), where bf16 autocast runs many times slower "
            "than float32: training in float32",
            torch.backends.cpu.get_cpu_capability(),
        )
        training_args.bf16 = False
        training_args.mixed_precision = "no"  # what the Trainer's accelerator reads, set from bf16 when parsed


def main() -> None:
    # 1. Arguments and logging
    model_args, data_args, training_args, run_args = parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    keep_bf16_where_supported(training_args)
    # The datasets transforms need the raw `image` and `formula` columns, which are no model arguments.
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)

    # 2. Data
    train_ds = load_formula_dataset(
        data_args.dataset, data_args.train_split, data_args.image_column, data_args.formula_column
    )
    eval_ds = load_formula_dataset(
        data_args.dataset, data_args.eval_split, data_args.image_column, data_args.formula_column
    )
    if data_args.max_train_samples is not None:
        train_ds = train_ds.select(range(min(data_args.max_train_samples, len(train_ds))))
    if data_args.max_eval_samples is not None:
        eval_ds = eval_ds.shuffle(seed=training_args.seed).select(range(min(data_args.max_eval_samples, len(eval_ds))))
    # Labels in the current canonical form, whatever form the dataset was built in (normalised once, here)
    train_ds, eval_ds = with_canonical_formulas(train_ds), with_canonical_formulas(eval_ds)
    logger.info("train: %d formulas, validation: %d", len(train_ds), len(eval_ds))

    # 3. Processor: a saved one, or a tokenizer trained on the training formulas
    train_formulas = list(train_ds["formula"])
    source = model_args.tokenizer_name or model_args.model_name_or_path
    sizes = {"max_height": model_args.image_max_height, "max_width": model_args.image_max_width}
    sizes = {name: value for name, value in sizes.items() if value is not None}
    if source is not None:
        processor = Im2LatexProcessor.from_pretrained(source)
        if sizes:  # the saved processor with new size limits, validated as a new one's are
            processor.image_processor = Im2LatexImageProcessor(**{**processor.image_processor.to_dict(), **sizes})
    else:
        tokenizer = train_tokenizer(train_formulas, vocab_size=model_args.vocab_size)
        processor = Im2LatexProcessor(Im2LatexImageProcessor(**sizes), tokenizer)
    tokenizer = processor.tokenizer

    # 4. Model, and a generation length that covers the longest training formula (or the saved one, if longer)
    if model_args.model_name_or_path is not None:
        model = Im2LatexForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
    else:
        config = make_config(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            d_model=model_args.d_model,
            decoder_layers=model_args.decoder_layers,
            decoder_attention_heads=model_args.decoder_attention_heads,
            decoder_ffn_dim=model_args.decoder_ffn_dim,
            max_length=model_args.max_positions,
            dropout=model_args.dropout,
            encoder_kwargs={
                "stage_depths": model_args.encoder_stage_depths,
                "stage_widths": model_args.encoder_stage_widths,
            },
            spacing_token_ids=spacing_token_ids(tokenizer),
        )
        model = Im2LatexForConditionalGeneration(config)
    positions = model.config.decoder.max_position_embeddings
    longest = max(len(ids) for ids in tokenizer(train_formulas).input_ids)
    max_length = min(positions, longest + 1 + math.ceil(0.1 * longest))  # start token, and some room
    if model_args.model_name_or_path is not None:  # a fine-tune or a recalibration keeps a longer saved bound
        max_length = max(max_length, min(positions, model.generation_config.max_length))
    model.generation_config = make_generation_config(model.config, max_length, model_args.default_num_beams)
    logger.info(
        "model: %.2f M parameters; longest training label %d tokens; generation max_length %d",
        model.num_parameters() / 1e6,
        longest,
        max_length,
    )
    if training_args.generation_max_length is None:
        training_args.generation_max_length = max_length

    # 5. On-the-fly processing: augmentation for training only
    augment = None
    if data_args.augment:
        augment_config = AugmentConfig.from_options(data_args.augment_options)
        logger.info("augmentation: %s", augment_config)
        spaced_config = None
        if data_args.augment_spaced_options is not None:
            spaced_config = augment_config.with_options(data_args.augment_spaced_options)
            logger.info("augmentation of formulas with hand spacing: %s", spaced_config)
        augment = make_train_transform(augment_config, seed=training_args.seed, spaced_config=spaced_config)
    process_train = ProcessFormulas(processor, positions, augment=augment)
    uses_train = training_args.do_train or run_args.recalibrate_batch_norm > 0
    if data_args.pool_batches > 0 and uses_train:
        batch_size = training_args.per_device_train_batch_size
        if training_args.max_steps <= 0:  # a stream has no length: the Trainer counts steps, not epochs
            per_step = batch_size * training_args.world_size * training_args.gradient_accumulation_steps
            training_args.max_steps = math.ceil(training_args.num_train_epochs * len(train_ds) / per_step)
        train_ds = size_sorted_stream(train_ds, process_train, batch_size, data_args.pool_batches, training_args.seed)
        # Each process streams its own shards: dispatching would concatenate batches of different sizes.
        training_args.accelerator_config.dispatch_batches = False
        # A resumed run starts the stream afresh rather than process and drop every batch it has trained on.
        training_args.ignore_data_skip = True
    else:
        train_ds.set_transform(process_train)
    eval_ds.set_transform(ProcessFormulas(processor, positions))

    # 6. Trainer
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if uses_train else None,
        eval_dataset=eval_ds if training_args.do_eval or training_args.eval_strategy != "no" else None,
        data_collator=FormulaCollator(processor.image_processor, model=model),
        processing_class=processor,
        compute_metrics=build_compute_metrics(tokenizer) if training_args.predict_with_generate else None,
    )
    if run_args.max_train_seconds is not None:
        trainer.add_callback(TimeBudget(run_args.max_train_seconds))
    for callback in trainer.callback_handler.callbacks:
        # TensorBoard's folder (OUTPUT/runs/DATE_HOST) is named when training begins: a run that only evaluates
        # would log to ./runs instead.
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(Path(training_args.output_dir) / default_logdir())

    # 7. Train, resuming from the last checkpoint of an interrupted run
    if training_args.do_train:
        last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        if last is not None:
            logger.info("resuming from %s", last)
        result = trainer.train(resume_from_checkpoint=last)
    if run_args.recalibrate_batch_norm > 0:  # each process on its own batches; the main one's model is saved
        # Every BatchNorm is the encoder's: the images alone set the statistics, and the decoder need not run.
        images = ({"pixel_values": batch["pixel_values"]} for batch in trainer.get_train_dataloader())
        used = recalibrate_batch_norm(trainer.model.get_encoder(), images, run_args.recalibrate_batch_norm)
        logger.info("BatchNorm statistics re-estimated on %d training batches", used)
    if uses_train:
        # The Trainer turns the KV cache off (`TrainingArguments.use_cache`); reading wants it on.
        trainer.model.config.use_cache = True
        trainer.save_model()  # the best model when load_best_model_at_end, with processor and generation config
    if training_args.do_train:
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()

    # 8. Evaluate
    if training_args.do_eval:
        metrics = trainer.evaluate(num_beams=training_args.generation_num_beams)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        plot_curves(trainer.state.log_history, Path(training_args.output_dir) / "training_curves.png")

    # 9. Publish
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    main()
