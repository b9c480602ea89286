"""`chargingd export`: run the CDR exporter on its own (``--once``: drain and exit).

It uses the configured Redis, or the daemon's embedded one (started if it is not
running), and the configured billing database (the embedded PostgreSQL by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal

from chargingd.billing.exporter import Exporter

log = logging.getLogger("chargingd.exporter")


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: built-in defaults)"
    )
    parser.add_argument(
        "--once", action="store_true", help="export what the stream holds now, then exit"
    )


async def export(exporter: Exporter, *, once: bool) -> int:
    """Drain once and print the status as JSON, or export until SIGTERM/SIGINT."""
    if once:
        try:
            handled = await exporter.drain()
        finally:
            await exporter.close()
        status = await exporter.status()
        print(json.dumps({"handled": handled, **status}, sort_keys=True))
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await exporter.start()
    log.info("chargingd export running (consumer %s)", exporter.consumer)
    await stop.wait()
    await exporter.stop()
    return 0
