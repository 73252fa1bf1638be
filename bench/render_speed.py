"""Benchmark data.render: render N formulas from a list and print formulas per second.

Usage: python -m bench.render_speed FORMULAS.txt [--count 2000] [--workers 2] [--batch-size 300] [--style deng]
"""

import argparse
import io
import logging
import time
from pathlib import Path

from data.render import render

logger = logging.getLogger(__name__)


def main() -> None:
    """Render the first ``--count`` non-empty formulas and print throughput and PNG size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("formulas", type=Path)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=300)
    parser.add_argument("--style", default="deng")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    lines = [line.strip() for line in args.formulas.read_text(encoding="utf-8").splitlines() if line.strip()]
    formulas = lines[: args.count]
    start = time.perf_counter()
    results = render(formulas, args.style, workers=args.workers, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    images = [r.image for r in results if r.image is not None]

    start = time.perf_counter()
    sizes = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        sizes.append(buffer.tell())
    encode = time.perf_counter() - start
    print(
        f"{len(formulas)} formulas, {len(images)} rendered, {len(formulas) - len(images)} failed or refused, "
        f"{elapsed:.1f} s: {len(formulas) / elapsed:.0f} formulas/s "
        f"(workers={args.workers}, batch_size={args.batch_size}, style={args.style}); "
        f"PNG encode {len(images) / max(encode, 1e-9):.0f} images/s, mean {sum(sizes) / max(len(sizes), 1):.0f} bytes"
    )


if __name__ == "__main__":
    main()
