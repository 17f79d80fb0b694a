"""ASGI entry point: ``uvicorn api.main:app``."""

from imgbatch.api.app import create_app

app = create_app()
