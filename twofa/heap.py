"""Long-lived processes (the API's server processes, the Celery workers) and the cyclic garbage collector.

Python's full collection walks every container object the process holds. Most of them were made at start-up
(modules, classes, SQLAlchemy's tables and prebuilt statements, pydantic's validators) and live as long as the
process, and walking them all holds up the email codes and sign-ins in flight. ``gc.freeze`` moves them to a
permanent generation that collections skip, as the ``gc`` documentation suggests for pre-fork servers; what the
process allocates afterwards is collected as before. The price: a frozen object that later becomes part of a garbage
cycle is never reclaimed, which is why only start-up is frozen.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect what start-up left as garbage, then take every object still alive out of the collector's reach. Call
    it once the process has loaded what it serves with, before it forks workers (they share the frozen objects).
    Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
