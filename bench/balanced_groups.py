"""What keeping groups balanced costs per decoding step on the CPU: `BalancedGroups` alone, and a whole `generate`
step with it off and on (alternating, so drift in the machine's speed shows as spread rather than as a difference).

    python -m bench.balanced_groups --dataset ../build/im2latex-v1/data [--model DIR] [--threads 2]

`generate` runs a fixed number of steps (`--steps`, the end token banned until then) on `--batch-size` images padded
to the 128x1024 bucket, greedy and with `--num-beams`.
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoProcessor

from bench.formula_images import sample_images
from bench.predict_latency import DEFAULT_MODEL
from modeling import Im2LatexForConditionalGeneration, group_token_ids
from modeling.modeling_im2latex import BalancedGroups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="parquet dataset folder or image folder")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60, help="tokens each generate call writes")
    parser.add_argument("--repeats", type=int, default=2, help="generate runs per setting, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = Im2LatexForConditionalGeneration.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    groups = group_token_ids(processor.tokenizer)
    print(f"torch threads {torch.get_num_threads()}")

    # The processor alone, on random pieces: its cost grows with the rows and with the length written so far.
    tokenizer = processor.tokenizer
    balanced = BalancedGroups(groups, len(tokenizer), tokenizer.eos_token_id)
    generator = torch.Generator().manual_seed(0)
    for rows in (args.batch_size, args.batch_size * args.num_beams):
        for length in (50, 150, 250):
            input_ids = torch.randint(len(tokenizer), (rows, length), generator=generator)
            scores = torch.randn(rows, len(tokenizer), generator=generator)
            for _ in range(20):  # warm-up
                balanced(input_ids, scores)
            began = time.perf_counter()
            for _ in range(300):
                balanced(input_ids, scores)
            per_call = (time.perf_counter() - began) / 300
            print(f"BalancedGroups alone, {rows:4d} rows, {length:3d} tokens: {1e3 * per_call:.2f} ms per step")

    # Whole generate steps, off and on in turn.
    samples = sample_images(args.dataset, args.batch_size)
    prepared = [processor.image_processor.prepare(data) for data, _ in samples]
    pixel_values = processor.image_processor.pad(prepared, bucket=(128, 1024))
    for _ in range(args.repeats):
        for setting in (None, groups):
            model.config.group_token_ids = setting
            for beams in (1, args.num_beams):
                steps = {"min_new_tokens": args.steps, "max_new_tokens": args.steps}
                with torch.inference_mode():
                    began = time.perf_counter()
                    model.generate(pixel_values=pixel_values, num_beams=beams, **steps)
                per_step = (time.perf_counter() - began) / args.steps
                name = "greedy" if beams == 1 else f"beam {beams}"
                state = "on " if setting else "off"
                print(f"generate, groups {state}, {name:7s}, batch {len(prepared)}: {1e3 * per_step:.1f} ms per step")


if __name__ == "__main__":
    main()
