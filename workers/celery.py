"""``celery -A workers``: Celery looks for the application in ``workers.celery``; it lives in ``workers.app``."""

from __future__ import annotations

from workers.app import app

__all__ = ["app"]
