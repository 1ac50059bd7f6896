"""The Celery edge: the app, the outbox dispatcher, and thin tasks that open a session and call the core."""
