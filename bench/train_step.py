"""Time training steps of the shipped model's shape on this machine, in float32 and in bf16 autocast.

Tells whether bf16 pays here: on a CPU without native bfloat16 (oneDNN emulates it) a bf16 step is many times slower,
and train.py then trains in float32 (`keep_bf16_where_supported`). Random images and labels; the first step of each
shape is left out (set-up).

    python -m bench.train_step                       # batch 16 of 64x384 and 96x512 images, 3 steps each
    python -m bench.train_step --batch-size 32 --steps 5 --device cuda   # not run on a GPU yet
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from any folder

from modeling import Im2LatexForConditionalGeneration  # noqa: E402
from train import cpu_has_native_bf16  # noqa: E402

SHAPES = ((64, 384), (96, 512))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/im2latex-base")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape and precision")
    parser.add_argument("--label-length", type=int, default=40)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1:
        parser.error(f"--steps and --batch-size must be at least 1, got {args.steps} and {args.batch_size}")

    torch.manual_seed(0)
    model = Im2LatexForConditionalGeneration.from_pretrained(args.model).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    vocab = model.config.decoder.vocab_size
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {capability}")
    print(f"native bf16 on this CPU: {cpu_has_native_bf16()}")
    for bf16 in (False, True):
        for height, width in SHAPES:
            pixels = torch.rand(args.batch_size, 1, height, width, device=args.device)
            labels = torch.randint(4, vocab, (args.batch_size, args.label_length), device=args.device)
            times = []
            for step in range(args.steps + 1):
                started = time.perf_counter()
                with torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(pixel_values=pixels, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                if step:  # the first step of a shape sets up kernels
                    times.append(time.perf_counter() - started)
            seconds = sum(times) / len(times)
            precision = "bf16 autocast" if bf16 else "float32"
            print(
                f"{precision:>13} {height}x{width} batch {args.batch_size}: {seconds:.2f} s/step, "
                f"{args.batch_size / seconds:.1f} images/s"
            )


if __name__ == "__main__":
    main()
