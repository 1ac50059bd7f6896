"""Celery settings, read from the environment (``TWOFA_*``) through ``twofa.settings``.

What shapes them (see ../shared/SECURITY.md): tasks are idempotent, so they are acknowledged late and re-queued when
a worker dies (``task_reject_on_worker_lost``); one message at a time per worker process, so a slow task never
holds OTP messages hostage in a prefetch buffer; a single visibility timeout everywhere (celery#9339), longer
than any countdown we use, so Redis never redelivers a message that is merely waiting (kombu#337).
"""

from __future__ import annotations

from celery.schedules import crontab
from kombu import Queue

from twofa.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
result_backend = _settings.result_backend
task_ignore_result = True  # tasks return statuses only; nothing needs to be read back

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Seconds. Must exceed the longest retry countdown (MAX_BACKOFF in workers.mail_tasks) and the longest task.
VISIBILITY_TIMEOUT = 3600
broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
visibility_timeout = VISIBILITY_TIMEOUT

task_soft_time_limit = 60
task_time_limit = 90

task_queues = (Queue("otp"), Queue("mail"), Queue("scheduled"), Queue("reports"))
task_default_queue = "mail"
task_create_missing_queues = False
task_routes = {
    "twofa.deliver_email": {"queue": "mail"},  # email codes are sent to "otp" explicitly by the dispatcher
    "twofa.expire_codes": {"queue": "scheduled"},
    "twofa.sweep_outbox": {"queue": "scheduled"},
    "twofa.enforce_policies": {"queue": "scheduled"},
    "twofa.report.*": {"queue": "reports"},
}

timezone = "UTC"
enable_utc = True
beat_schedule = {
    "expire-codes": {"task": "twofa.expire_codes", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-outbox": {"task": "twofa.sweep_outbox", "schedule": 60.0, "options": {"expires": 55}},
    "enforce-policies": {"task": "twofa.enforce_policies", "schedule": 900.0, "options": {"expires": 850}},
    "weekly-reports": {"task": "twofa.report.weekly_all", "schedule": crontab(minute="0", hour="6", day_of_week="1")},
}

worker_send_task_events = False
worker_hijack_root_logger = False
