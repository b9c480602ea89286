"""Build the Alerts of one process from ``[alerts]`` (the app's factory calls this)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chargingd.alerts.alerts import Alerts
from chargingd.alerts.store import AlertStore
from chargingd.alerts.webhook import WebhookSender
from chargingd.core.config.alerts import AlertsConfig


def build_alerts(cfg: AlertsConfig, redis: Any, *, clock_ms: Callable[[], int]) -> Alerts:
    """Alerts on ``redis`` with every [alerts] option; the webhook when a URL is set."""
    store = AlertStore(
        redis,
        clock_ms=clock_ms,
        dedup_window_s=cfg.dedup_window_s,
        retention_s=cfg.retention_s,
        calls_kept=cfg.calls_kept,
        stream_maxlen=cfg.stream_maxlen,
    )
    webhook = None
    if cfg.webhook_url:
        webhook = WebhookSender(
            cfg.webhook_url,
            secret=cfg.webhook_secret,
            timeout_s=cfg.webhook_timeout_s,
            attempts=cfg.webhook_attempts,
            backoff_s=cfg.webhook_backoff_s,
            max_backoff_s=cfg.webhook_max_backoff_s,
            queue_size=cfg.webhook_queue_size,
        )
    return Alerts(store, webhook=webhook)
