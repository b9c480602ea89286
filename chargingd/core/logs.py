"""Logging for the daemon: one line per event on stderr, level from [server] log_level.

The event loop never waits for stderr (a pipe to a slow journald or terminal would
stall every request): records go through a queue to a writer thread. The writer is
stopped, and the queue flushed, at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once (idempotent: replaces earlier handlers)."""
    global _listener
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stop_logging()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, stream)
    _listener.start()
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level.upper())


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (also run at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_logging)
