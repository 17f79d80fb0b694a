"""Celery workers: dispatch, per-product download/compress/store, completion and maintenance."""
