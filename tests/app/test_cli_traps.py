"""CLI traps (issue 9 finding 11), through the real `chargingd` executable: a dialled
number is read as the daemon reads it (--country), a bare --usage is seconds, and
`chargingd ctl ... | head` ends without a BrokenPipeError traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import Harness, running_admin
from paths import REPO

from chargingd.app.cli import main
from chargingd.core.numbers import to_e164
from chargingd.ledger import Mode

BIN = Path(sys.executable).parent / "chargingd"
SAMPLE = str(REPO / "config" / "tariffs" / "sample.toml")
BASE = ["--plan", SAMPLE, "--subject", "alice", "--start", "2026-03-02T10:00:00Z"]

pytestmark = pytest.mark.slow


def _rate_process(*args: str) -> tuple[int, dict[str, Any]]:
    """The real executable, as an operator runs it."""
    done = subprocess.run(
        [str(BIN), "rate", *BASE, *args], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _rate(*args: str) -> tuple[int, dict[str, Any]]:
    """The same command in this process (cheaper for the many variations)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["rate", *BASE, *args])
    return code, json.loads(out.getvalue())


def test_dialled_numbers_are_read_as_the_daemon_reads_them() -> None:
    code, e164 = _rate("--destination", "+442079460000", "--usage", "60s")
    assert code == 0 and e164["destination_id"] == "UK_FIXED"
    # The daemon reads a gateway's Called-Station-Id with its client's country.
    assert to_e164("00442079460000", country="DE") == "+442079460000"
    code, body = _rate_process("--destination", "00442079460000", "--country", "DE", "--usage",
                               "60s")  # fmt: skip
    assert (code, body["number"], body["cost"]) == (0, "+442079460000", e164["cost"])
    for number, country in (("00442079460000", "DE"), ("02079460000", "GB"),
                            ("011442079460000", "US"), ("tel:+44-20-7946-0000", "FR")):  # fmt: skip
        code, body = _rate("--destination", number, "--country", country, "--usage", "60s")
        assert code == 0, body
        assert body["number"] == "+442079460000"
        assert (body["cost"], body["destination_id"]) == (e164["cost"], "UK_FIXED")
    # Without a country a dialling prefix cannot be read: refused, never unknown_destination.
    code, body = _rate("--destination", "00442079460000", "--usage", "60s")
    assert code == 2 and body["error"] == "bad_request"
    assert "--country" in body["message"]
    code, body = _rate("--destination", "0044", "--country", "XX", "--usage", "60s")
    assert code == 2 and "not an ISO 3166 country" in body["message"]
    # Digits as the tariff's prefixes read them still work as before.
    code, body = _rate("--destination", "442079460000", "--usage", "60s")
    assert code == 0 and body["cost"] == e164["cost"]


def test_a_bare_usage_is_seconds() -> None:
    _, explicit = _rate("--destination", "+442079460000", "--usage", "95s")
    code, bare = _rate_process("--destination", "+442079460000", "--usage", "95")
    assert code == 0
    assert (bare["cost"], bare["billed_s"]) == (explicit["cost"], explicit["billed_s"])
    _, nanos = _rate("--destination", "+442079460000", "--usage", "95ns")
    assert nanos["cost"] != bare["cost"]  # units still mean what they say
    _, half = _rate("--destination", "+442079460000", "--usage", "95.5")
    _, half_s = _rate("--destination", "+442079460000", "--usage", "95.5s")
    assert half["cost"] == half_s["cost"]
    code, bad = _rate("--destination", "+442079460000", "--usage", "-95")
    assert code == 2 and bad["error"] == "bad_request"


@pytest.fixture
async def admin(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_admin(redis, tmp_path) as harness:
        yield harness


async def test_ctl_into_a_closed_pipe_ends_quietly(admin: Harness) -> None:
    # Enough accounts that the listing overflows the pipe buffer after `head` exits.
    for first in range(0, 1500, 50):
        await asyncio.gather(
            *(
                admin.ledger.create_account(
                    f"a-{i:04d}", mode=Mode.PREPAID, currency="EUR", who="t"
                )
                for i in range(first, first + 50)
            )
        )
    for fmt in ([], ["--json"]):
        command = (
            f"'{BIN}' ctl --socket '{admin.path}' {' '.join(fmt)} account list --count 1500"
            " | head -n 1"
        )
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", f"{command}; echo \"ctl=${{PIPESTATUS[0]}}\" >&2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = err.decode()
        assert "Traceback" not in text and "BrokenPipeError" not in text, text
        assert "Exception ignored" not in text, text
        assert len(out.decode().splitlines()) == 1
        # 141 = 128 + SIGPIPE, as coreutils report it; 0 when the writes raced ahead of head.
        assert text.strip().splitlines()[-1] in ("ctl=141", "ctl=0"), text


async def test_config_and_json_also_after_the_action(admin: Harness, tmp_path: Path) -> None:
    """`chargingd invoice run --period 2026-11 --config C`, `ctl account get ID --config
    C --json`: options of the command typed after its action, as operators type them,
    were "unrecognized arguments" (exit 2)."""
    await admin.ledger.create_account("late-opts", mode=Mode.PREPAID, currency="EUR", who="t")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[admin]\nsocket_path = "{admin.path}"\n'
        '[billing]\ndb_url = "postgresql://u@db.example.invalid/bills"\n'
    )

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(BIN), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await run(
        "ctl", "account", "get", "late-opts", "--config", str(config), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["id"] == "late-opts"
    code, out, err = await run("ctl", "--config", str(config), "account", "get", "late-opts")
    assert code == 0 and "late-opts" in out and not out.startswith("{"), err  # a table
    code, out, err = await run("db", "url", "--config", str(config))
    assert (code, out.strip()) == (0, "postgresql://u@db.example.invalid/bills"), err
    # Given after the action, it wins over the one before it (the default here).
    code, out, err = await run(
        "db", "--config", "/nonexistent.toml", "url", "--config", str(config)
    )
    assert (code, out.strip()) == (0, "postgresql://u@db.example.invalid/bills"), err
