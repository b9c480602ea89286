"""[alerts] configuration: bad values stop startup with the key named, secrets unshown."""

from __future__ import annotations

import pytest

from chargingd.core.config import ConfigError, config_from_dict


def test_defaults_and_a_webhook() -> None:
    cfg = config_from_dict({"alerts": {"webhook_url": "https://hooks.example/x?token=abc"}})
    assert cfg.alerts.dedup_window_s == 3600
    assert cfg.alerts.webhook_url.endswith("token=abc")
    assert "token=abc" not in repr(cfg.alerts)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dedup_window_s": 0}, "dedup_window_s must be >= 1"),
        ({"retention_s": 10}, "retention_s >= dedup_window_s"),
        ({"calls_kept": -1}, "calls_kept must be 0..10000"),
        ({"webhook_url": "ftp://x/token=abc"}, "webhook_url must be an http"),
        ({"webhook_url": "http://"}, "webhook_url must be an http"),
        # Accepted before: every delivery then failed (InvalidURL) and was retried.
        ({"webhook_url": "https://h.example:99999/token=abc"}, "webhook_url has an invalid port"),
        ({"webhook_url": "https://h.example:x443/token=abc"}, "webhook_url has an invalid port"),
        ({"webhook_attempts": 0}, "webhook_attempts must be 1..100"),
        ({"webhook_backoff_s": 5.0, "webhook_max_backoff_s": 1.0}, "webhook_max_backoff_s"),
        ({"webhook_queue_size": 0}, "webhook_queue_size >= 1"),
        ({"webhok_url": "http://x"}, "unknown key alerts.webhok_url"),
    ],
)
def test_bad_values_stop_startup(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"alerts": raw}, "c.toml")
    assert message in str(err.value)
    assert "token=abc" not in str(err.value)
