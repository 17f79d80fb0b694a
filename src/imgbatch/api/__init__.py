"""The HTTP API: upload, status, download, media and health."""
