"""The HTTP API of the help article (``/api/v1``), a FastAPI application; ``twofa serve`` runs it."""
