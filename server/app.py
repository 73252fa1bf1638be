"""The im2latex web server: `POST /predict` reads the LaTeX of an uploaded image, `/` is a page for people.

The model is loaded once per app; requests are prepared in a thread pool and read in batches on one worker thread
(see `server.batcher`), so the event loop stays free and concurrent requests share `generate` calls.
"""

import importlib.util
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from transformers import AutoProcessor

from modeling import Im2LatexForConditionalGeneration, InvalidImageError
from modeling.compact import compact_or_tokens
from modeling.image_processing_im2latex import READING_BUCKET

from .batcher import Batcher

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20


class Prediction(BaseModel):
    """The reading of one image."""

    latex: str  # the model's token form: \frac { a } { b }
    compact_latex: str  # the same formula as people write it: \frac{a}{b}
    score: float  # mean log-probability of the tokens; low means doubtful
    truncated: bool  # generation hit the length limit instead of ending (often a looping output)
    seconds: float  # time spent on this request in the server, queueing included


def find_mathjax() -> Path | None:
    """The folder of MathJax 3's browser components (`tex-svg.js` and friends) installed by the
    `django-static-mathjax` wheel (plain static files, no Django needed), or None when it is not installed."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "static" / "mathjax" / "es5"
        if (folder / "tex-svg.js").is_file():
            return folder
    return None


class UploadLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, at once when its Content-Length says so, or as
    soon as a streamed body passes the limit (before the upload is spooled to disk)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"the upload is larger than the limit of {self.max_bytes:,} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large().detail}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()  # FastAPI re-raises HTTPExceptions met while parsing the body
            return message

        await self.app(scope, counting_receive, send)


def create_app(
    model_dir: str | Path,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    num_beams: int | None = None,
    max_batch_size: int = 8,
    max_pixels: int | None = None,
    mathjax_dir: Path | None = None,
    bucket: tuple[int, int] | None = READING_BUCKET,
) -> FastAPI:
    """Build the app around a saved model folder (loaded here, once).

    Args:
        model_dir: a saved im2latex model folder or Hub id.
        max_upload_bytes: larger request bodies get 413.
        num_beams: beams per reading; the model's generation config decides when None.
        max_batch_size: most images read in one `generate` call.
        max_pixels: images with more pixels are refused before decoding (default: the image processor's limit).
        mathjax_dir: MathJax's `es5` folder for the page's preview; found automatically when None.
        bucket: (height, width) steps that images are padded up to before reading (see `server.batcher`); None
            pads only to the model's stride.

    Returns:
        The FastAPI app; its lifespan starts and stops the batcher.
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    model = Im2LatexForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    if max_pixels is not None:
        processor.image_processor.max_input_pixels = max_pixels
    batcher = Batcher(model, processor, max_batch_size=max_batch_size, num_beams=num_beams, bucket=bucket)
    mathjax_dir = mathjax_dir or find_mathjax()
    if mathjax_dir is not None and not (Path(mathjax_dir) / "tex-svg.js").is_file():
        raise FileNotFoundError(f"no tex-svg.js in the MathJax folder {mathjax_dir}")
    if mathjax_dir is None:
        logger.warning("MathJax not found (pip install django-static-mathjax): the page shows no preview")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="im2latex",
        summary="Reads an image of a math formula and writes its LaTeX.",
        lifespan=lifespan,
    )
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    async def health() -> dict:
        """The server is up and its model loaded."""
        return {
            "status": "ok",
            "model": str(model_dir),
            "num_beams": num_beams or model.generation_config.num_beams,
            "max_upload_bytes": max_upload_bytes,
            "bucket": bucket,
            "preview": mathjax_dir is not None,
        }

    @app.post(
        "/predict",
        responses={
            400: {"description": "empty upload"},
            413: {"description": "upload too large"},
            422: {"description": "not an image, a corrupt image or one with too many pixels"},
        },
    )
    async def predict(image: Annotated[UploadFile, File(description="a PNG, JPEG, GIF, ... image")]) -> Prediction:
        """Read the LaTeX of one uploaded formula image."""
        began = time.perf_counter()
        data = await image.read()
        name = image.filename or "the upload"
        if not data:
            raise HTTPException(400, f"{name} is empty")
        try:
            prepared = await run_in_threadpool(processor.image_processor.prepare, data)
        except InvalidImageError as error:
            raise HTTPException(422, f"{name}: {error}") from error
        except Exception as error:  # a decoder tripping on hostile bytes is still the input's fault, not a crash
            logger.warning("preparing %s failed: %r", name, error)
            raise HTTPException(422, f"{name} could not be decoded as an image: {error}") from error
        reading = await batcher.read(prepared)
        return Prediction(
            latex=reading.latex,
            compact_latex=compact_or_tokens(reading.latex),
            score=round(reading.score, 4),
            truncated=reading.truncated,
            seconds=round(time.perf_counter() - began, 4),
        )

    if mathjax_dir is not None:
        app.mount("/static/mathjax", StaticFiles(directory=mathjax_dir), name="mathjax")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
