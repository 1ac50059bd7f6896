"""Real services for integration tests and benchmarks: a private Redis, a scriptable SMTP server (aiosmtpd), a
PostgreSQL database of their own, and Celery worker processes."""
