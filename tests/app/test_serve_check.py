"""`chargingd serve --check`: the config and every tariff plan it names loaded as serve
loads them, a summary printed, nothing started (no Redis, no data directory): what an
operator runs before a restart (docs/operations.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from paths import REPO
from radius_e2e_harness import BIN

DEMO = REPO / "config" / "chargingd-demo.toml"


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "serve", "--check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def test_the_demo_config_is_ok_and_summarised(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    tariffs = REPO / "config" / "tariffs"
    text = DEMO.read_text().replace('"config/tariffs/', f'"{tariffs}/')
    config.write_text(text.replace('data_dir = "var"', f'data_dir = "{tmp_path / "data"}"'))
    run = check(config)
    assert run.returncode == 0, run.stderr
    assert f"{config}: configuration OK" in run.stdout
    assert "radius:   127.0.0.1:1812 (auth), :1813 (accounting), 1 clients" in run.stdout
    assert "tariffs:  default (sample-2026, EUR)" in run.stdout
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


def test_a_tariff_that_cannot_load_is_exit_2_naming_it(tmp_path: Path) -> None:
    tariff = tmp_path / "retail.toml"
    tariff.write_text('id = "retail"\ncurrency = "EUR"\n[[rates]]\nprefix = "44"\n')
    config = tmp_path / "c.toml"
    config.write_text(f'[rating]\nplans = {{ retail = "{tariff}" }}\n')
    run = check(config)
    assert run.returncode == 2
    assert "configuration OK" not in run.stdout
    assert str(tariff) in run.stderr and run.stderr.startswith("chargingd serve --check: ")


def test_a_missing_tariff_file_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[rating]\ndefault_plan = "{tmp_path / "nosuch.toml"}"\n')
    run = check(config)
    assert run.returncode == 2 and "nosuch.toml" in run.stderr


def test_a_bad_key_is_exit_2_as_serve_says_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nwrkers = 2\n")
    run = check(config)
    assert run.returncode == 2 and "unknown key server.wrkers" in run.stderr


def test_radius_without_clients_is_pointed_out(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    run = check(config)
    assert run.returncode == 0
    assert "0 clients (no [[radius.clients]]: every packet would be dropped)" in run.stdout
    assert "tariffs:  none (every call would be refused" in run.stdout
