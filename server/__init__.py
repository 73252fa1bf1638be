"""The im2latex web server (FastAPI): an API and a page around a saved model; needs `modeling`, never `data`."""

from .app import create_app

__all__ = ["create_app"]
