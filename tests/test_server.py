"""The API (server/app.py) on a tiny saved model: round trip, health, docs, and every bad input a client can send."""

import asyncio
import io
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import formula_png
from fastapi.testclient import TestClient
from PIL import Image

import server.batcher
from modeling.compact import compact_or_tokens
from modeling.inference import read_formulas
from server import create_app
from server.batcher import Batcher

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 300_000


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    return create_app(tiny_model_dir, max_upload_bytes=MAX_UPLOAD, max_batch_size=4)


@pytest.fixture(scope="module")
def client(app):
    # The context runs the lifespan (the batcher starts); server errors come back as 500s, as a client sees them.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def post(client: TestClient, data: bytes, name: str = "formula.png"):
    return client.post("/predict", files={"image": (name, data, "image/png")})


def test_predict_round_trip_matches_the_library(client, tiny_model_dir):
    from transformers import AutoProcessor

    from modeling import Im2LatexForConditionalGeneration

    data = formula_png()
    response = post(client, data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"latex", "compact_latex", "score", "truncated", "seconds"}
    model = Im2LatexForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    (expected,) = read_formulas(model, processor, [processor.image_processor.prepare(data)])  # the default bucket
    assert body["latex"] == expected.latex and body["latex"].strip()
    assert body["compact_latex"] == compact_or_tokens(expected.latex)
    assert body["score"] == pytest.approx(expected.score, abs=1e-3)
    assert body["seconds"] > 0


def test_concurrent_requests_all_succeed_and_read_as_alone(client):
    images = [formula_png((160, 48), "a + b"), formula_png((150, 44), "x = y"), formula_png((220, 70), "n!")]
    alone = [post(client, data).json()["latex"] for data in images]
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda i: post(client, images[i % 3]), range(24)))
    assert [r.status_code for r in responses] == [200] * 24
    assert [r.json()["latex"] for r in responses] == [alone[i % 3] for i in range(24)]


def test_batcher_batches_same_shape_only(tiny_model, tiny_processor, monkeypatch):
    batches = []

    def recording_read(model, processor, images, num_beams=None, bucket=None):
        batches.append([image.shape for image in images])
        return read_formulas(model, processor, images, num_beams=num_beams, bucket=bucket)

    monkeypatch.setattr(server.batcher, "read_formulas", recording_read)
    prepare = tiny_processor.image_processor.prepare
    small = [prepare(formula_png((160, 48), text)) for text in ("a", "b + c", "d")]
    large = [prepare(formula_png((240, 90), text)) for text in ("e", "f = g")]
    batcher = Batcher(tiny_model, tiny_processor, max_batch_size=2, bucket=None)

    async def read_all():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.read(image) for image in [small[0], large[0], small[1], large[1]]))
        finally:
            await batcher.stop()

    readings = asyncio.run(read_all())
    assert len(readings) == 4
    for batch in batches:
        keys = {batcher.shape_key(np.zeros(shape, dtype=np.float32)) for shape in batch}
        assert len(keys) == 1, f"a batch mixed padded shapes: {batch}"
        assert len(batch) <= 2
    assert sum(len(batch) for batch in batches) == 4


def test_buckets_batch_sizes_together_and_read_as_alone(tiny_model, tiny_processor):
    prepare = tiny_processor.image_processor.prepare
    sizes = [((160, 48), "a"), ((240, 90), "b = c"), ((90, 30), "d")]
    images = [prepare(formula_png(size, text)) for size, text in sizes]
    batcher = Batcher(tiny_model, tiny_processor, bucket=(32, 128))
    keys = [batcher.shape_key(image) for image in images]
    for key in keys:
        assert key[0] % 32 == 0 or key[0] == 64, keys  # 64: the tiny processor's max height
        assert key[1] % 128 == 0 or key[1] == 256, keys
    same = [image for image, key in zip(images, keys, strict=True) if key == keys[0]]
    assert len(same) == 2  # two sizes, one bucket
    padded = tiny_processor.image_processor.pad(same, bucket=(32, 128))
    for index, image in enumerate(same):  # the image at the top left, background around it
        assert np.array_equal(padded[index, 0, : image.shape[0], : image.shape[1]].numpy(), image)
        assert float(padded[index].sum()) == pytest.approx(float(image.sum()))
    alone = [read_formulas(tiny_model, tiny_processor, [image], bucket=(32, 128))[0].latex for image in same]
    assert [r.latex for r in read_formulas(tiny_model, tiny_processor, same, bucket=(32, 128))] == alone


def test_health_docs_and_page(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["max_upload_bytes"] == MAX_UPLOAD
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="latex"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_upload_over_the_limit_is_413(client):
    response = post(client, b"\x89PNG" + bytes(MAX_UPLOAD))
    assert response.status_code == 413
    assert f"{MAX_UPLOAD:,}" in response.json()["detail"]


def test_streamed_upload_over_the_limit_is_413(client):
    boundary = "im2latexboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'.encode()

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield head
        for _ in range(10):
            yield bytes(MAX_UPLOAD // 5)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("data", "name", "status", "words"),
    [
        (b"", "empty.png", 400, "empty"),
        (b"just some text, not an image", "notes.txt", 422, "not an image"),
        (formula_png()[:200], "cut.png", 422, "could not be decoded"),
    ],
    ids=["empty", "not-an-image", "truncated-png"],
)
def test_bad_uploads_get_a_4xx_naming_the_file(client, data, name, status, words):
    response = post(client, data, name)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert name in detail and words in detail


def test_corrupt_pixel_data_is_422(client):
    data = bytearray(formula_png((400, 200)))
    data[100:-20] = bytes(len(data) - 120)  # header intact, compressed pixels zeroed
    response = post(client, bytes(data), "corrupt.png")
    assert response.status_code == 422, response.text


def test_decompression_bomb_is_refused(client):
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000), 1).save(buffer, format="PNG", optimize=True)  # 400 M pixels in ~60 KB
    assert len(buffer.getvalue()) < MAX_UPLOAD
    response = post(client, buffer.getvalue(), "bomb.png")
    assert response.status_code == 422
    assert "too large" in response.json()["detail"] or "limit" in response.json()["detail"]


def test_missing_field_is_422(client):
    assert client.post("/predict", data={"other": "x"}).status_code == 422


def test_a_failing_model_fails_the_request_not_the_server(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(server.batcher, "read_formulas", broken)
    assert post(client, formula_png()).status_code == 500
    monkeypatch.undo()
    assert post(client, formula_png()).status_code == 200


def test_serve_py_starts_the_server(tiny_model_dir):
    """The one command of the README, on a free port: it answers /health and /predict, then stops cleanly."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "serve.py", "--model", str(tiny_model_dir), "--port", str(port), "--bucket", "none"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "serve.py did not come up"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert health.json()["bucket"] is None
        files = {"image": ("formula.png", formula_png(), "image/png")}
        assert httpx.post(f"http://127.0.0.1:{port}/predict", files=files, timeout=60).json()["latex"].strip()
    finally:
        process.terminate()
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down


def test_serve_py_rejects_a_bad_bucket():
    done = subprocess.run(
        [sys.executable, "serve.py", "--bucket", "96by512"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "HEIGHTxWIDTH" in done.stderr
