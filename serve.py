"""Serve a model over HTTP: `POST /predict` (an image upload -> JSON), `GET /health`, docs at `/docs`, a page at `/`.

python serve.py                                   # the shipped model on http://127.0.0.1:8000
python serve.py --model outputs/base --host 0.0.0.0 --port 8080 --num-beams 1
"""

import argparse
import logging
from pathlib import Path

import torch
import uvicorn

from modeling.image_processing_im2latex import READING_BUCKET
from server import create_app
from server.app import DEFAULT_MAX_UPLOAD_BYTES

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "im2latex-base"


def bucket_size(text: str) -> tuple[int, int] | None:
    """`96x512` -> (96, 512); `none` -> None."""
    if text.lower() == "none":
        return None
    height, _, width = text.lower().partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 96x512) or none, got {text!r}")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="saved model folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-beams", type=int, default=None, help="beams (default: the model's generation config)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="most concurrent images per generate call")
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES, help="larger uploads: 413")
    parser.add_argument("--max-pixels", type=int, default=None, help="larger images are refused before decoding")
    parser.add_argument("--mathjax-dir", type=Path, default=None, help="MathJax es5 folder (default: found)")
    parser.add_argument(
        "--bucket",
        type=bucket_size,
        default=READING_BUCKET,
        help="pad images up to multiples of HEIGHTxWIDTH so that sizes batch together (default 96x512; none: off)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.num_beams is not None and args.num_beams < 1:
        parser.error("--num-beams must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    app = create_app(
        args.model,
        max_upload_bytes=args.max_upload_bytes,
        num_beams=args.num_beams,
        max_batch_size=args.max_batch_size,
        max_pixels=args.max_pixels,
        mathjax_dir=args.mathjax_dir,
        bucket=args.bucket,
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
