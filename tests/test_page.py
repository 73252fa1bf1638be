"""The page at `/` in a real browser: Debian's chromium, driven by Playwright, against a running uvicorn server
with a tiny model. Skipped (with the reason) where chromium or Playwright is missing; CI installs both."""

import base64
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import formula_png

from server import create_app
from server.app import find_mathjax

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

PASTE = """async (encoded) => {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const clipboard = new DataTransfer();
  clipboard.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
  document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: clipboard, bubbles: true, cancelable: true }));
}"""


@pytest.fixture(scope="module")
def base_url(tiny_model_dir):
    """A real uvicorn server on a free port, in a thread of this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_model_dir), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, base_url):
    context = browser.new_context(base_url=base_url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page = context.new_page()
    page.goto("/")
    yield page
    context.close()


def api_reading(base_url: str, data: bytes) -> dict:
    response = httpx.post(f"{base_url}/predict", files={"image": ("formula.png", data, "image/png")}, timeout=60)
    response.raise_for_status()
    return response.json()


def read_back(page, previous: str = "") -> str:
    page.wait_for_function(
        "previous => !document.getElementById('result').hidden && document.getElementById('latex').value !== previous",
        arg=previous,
        timeout=30_000,
    )
    return page.input_value("#latex")


def test_upload_shows_the_latex_a_preview_and_copies(page, base_url, tmp_path):
    data = formula_png((180, 50), "x^2 + y")
    (tmp_path / "formula.png").write_bytes(data)
    expected = api_reading(base_url, data)
    page.set_input_files("#file", str(tmp_path / "formula.png"))
    assert read_back(page) == expected["compact_latex"]
    page.check("input[value=tokens]")
    assert page.input_value("#latex") == expected["latex"]
    if find_mathjax() is not None:
        page.wait_for_selector("#preview mjx-container svg", timeout=30_000)
        assert page.is_hidden("#preview-note")
    else:
        page.wait_for_selector("#preview-note", state="visible", timeout=30_000)
    page.click("#copy")
    page.wait_for_function("document.getElementById('copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == expected["latex"]


def test_paste_shows_the_latex(page, base_url):
    first, second = formula_png((150, 60), "a / b"), formula_png((260, 80), "n! = 1")
    page.evaluate(PASTE, base64.b64encode(first).decode())
    shown = read_back(page)
    assert shown == api_reading(base_url, first)["compact_latex"]
    page.evaluate(PASTE, base64.b64encode(second).decode())
    expected = api_reading(base_url, second)["compact_latex"]
    if expected != shown:  # a tiny random model may read two images alike; then the page cannot show a change
        assert read_back(page, previous=shown) == expected
    assert page.is_visible("#image")


def test_a_bad_file_shows_the_error(page, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page.set_input_files("#file", str(tmp_path / "broken.png"))
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Error 422')", timeout=30_000)
    assert "broken.png" in page.text_content("#status")
