"""``[alerts]``: incident deduplication and the optional webhook (chargingd.alerts)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AlertsConfig:
    # Raises of one incident key within this long of its last raise count into the same
    # incident (one log line, one stream entry, one webhook); after a quiet window the
    # next raise opens a new incident.
    dedup_window_s: int = 3600
    # Incidents (counts, calls) are kept this long after their last raise.
    retention_s: int = 30 * 86400
    # The first calls of an incident kept with it (the rest are only counted).
    calls_kept: int = 50
    # Entries kept in the alert stream {alerts}:stream (approximate trim).
    stream_maxlen: int = 100_000
    # POST each new incident as JSON here (http:// or https://); empty = no webhook.
    webhook_url: str = field(default="", repr=False)  # may carry a token: never in a repr
    # HMAC-SHA256 key of the X-Chargingd-Signature header; empty = unsigned.
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    # Deliveries tried per alert (connection errors, timeouts, 429 and 5xx are retried
    # with exponential back-off from webhook_backoff_s up to webhook_max_backoff_s).
    webhook_attempts: int = 6
    webhook_backoff_s: float = 1.0
    webhook_max_backoff_s: float = 60.0
    # Alerts waiting for delivery; beyond this they are dropped from the webhook
    # (counted, logged; the stream still has them).
    webhook_queue_size: int = 1000

    def validate(self) -> None:
        if self.dedup_window_s < 1 or self.retention_s < self.dedup_window_s:
            raise ValueError("dedup_window_s must be >= 1 and retention_s >= dedup_window_s")
        if not 0 <= self.calls_kept <= 10_000 or self.stream_maxlen < 100:
            raise ValueError("calls_kept must be 0..10000 and stream_maxlen >= 100")
        if self.webhook_url:
            parts = urllib.parse.urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Never echo the URL: it may carry a token.
                raise ValueError("webhook_url must be an http:// or https:// URL with a host")
            try:
                _ = parts.port  # a port out of 0..65535 raises here, not at every delivery
            except ValueError:
                raise ValueError("webhook_url has an invalid port (must be 0..65535)") from None
        if self.webhook_timeout_s <= 0 or self.webhook_backoff_s <= 0:
            raise ValueError("webhook_timeout_s and webhook_backoff_s must be positive")
        if self.webhook_max_backoff_s < self.webhook_backoff_s:
            raise ValueError("webhook_max_backoff_s must be >= webhook_backoff_s")
        if not 1 <= self.webhook_attempts <= 100 or self.webhook_queue_size < 1:
            raise ValueError("webhook_attempts must be 1..100 and webhook_queue_size >= 1")
