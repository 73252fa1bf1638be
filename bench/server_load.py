"""Load on the server: N concurrent `POST /predict` requests; prints requests/s and latency percentiles.

    python -m bench.server_load --dataset ../build/eval-data/data              # starts serve.py on a free port
    python -m bench.server_load --url http://127.0.0.1:8000 --dataset examples --requests 200 --concurrency 50

    python -m bench.server_load --dataset examples --bucket none --max-batch-size 16   # other options go to serve.py

Without `--url` it starts `serve.py` (the shipped model unless `--model`; `--num-beams`, `--threads` and any option
this script does not know, such as `--bucket` or `--max-batch-size`, are passed on) and stops it at the end. Every
request must succeed: the exit status is 1 otherwise.
"""

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.formula_images import sample_images

ROOT = Path(__file__).resolve().parents[1]


async def load(url: str, images: list[bytes], requests: int, concurrency: int) -> tuple[list[float], list[str], float]:
    """Send `requests` uploads, at most `concurrency` at a time; returns latencies, failures and the wall time."""
    gate = asyncio.Semaphore(concurrency)
    latencies, failures = [], []

    async def one(client: httpx.AsyncClient, index: int) -> None:
        async with gate:
            began = time.perf_counter()
            try:
                files = {"image": (f"formula{index}.png", images[index % len(images)], "image/png")}
                response = await client.post(f"{url}/predict", files=files)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as error:
                failures.append(repr(error))
            latencies.append(time.perf_counter() - began)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(one(client, index) for index in range(requests)))
        return latencies, failures, time.perf_counter() - began


def start_server(
    model: str | None, num_beams: int | None, threads: int | None, serve_args: list[str]
) -> tuple[subprocess.Popen, str]:
    """serve.py (with `serve_args` added) on a free local port; returns the process and its URL once /health
    answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "serve.py", "--port", str(port)]
    for flag, value in (("--model", model), ("--num-beams", num_beams), ("--threads", threads)):
        if value is not None:
            command += [flag, str(value)]
    command += serve_args
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"serve.py did not come up at {url} (exit status {process.poll()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server; default: start serve.py")
    parser.add_argument("--dataset", type=Path, default=ROOT / "examples", help="parquet dataset or image folder")
    parser.add_argument("--images", type=int, default=50, help="distinct images drawn from the dataset")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--model", default=None, help="for the started server (default: serve.py's)")
    parser.add_argument("--num-beams", type=int, default=None, help="for the started server")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the started server")
    parser.add_argument("--seed", type=int, default=0)
    args, serve_args = parser.parse_known_args()
    if serve_args and args.url:
        parser.error(f"options for serve.py need a server this script starts, not --url: {serve_args}")

    images = [data for data, _ in sample_images(args.dataset, args.images, args.seed)]
    process, url = (None, args.url) if args.url else start_server(args.model, args.num_beams, args.threads, serve_args)
    try:
        health = httpx.get(f"{url}/health", timeout=30).json()
        print(f"{url}: model {health['model']}, {health['num_beams']} beam(s); {len(images)} distinct images")
        asyncio.run(load(url, images[:1], 2, 1))  # warm-up
        latencies, failures, wall = asyncio.run(load(url, images, args.requests, args.concurrency))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(
        f"{args.requests} requests, {args.concurrency} concurrent: {len(failures)} failed, "
        f"{args.requests / wall:.2f} requests/s, latency p50 {p50:.2f} s  p95 {p95:.2f} s  p99 {p99:.2f} s  "
        f"max {max(latencies):.2f} s"
    )
    for failure in failures[:5]:
        print(f"  failure: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
