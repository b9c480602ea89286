"""Types of the C extension _mmsg.c (recvmmsg/sendmmsg; Linux, optional: radius/intake.py)."""

from typing import Any

MAX_BATCH: int
MAX_DATAGRAM: int

def recv_batch(fd: int, count: int, /) -> list[tuple[bytes, Any, float, bool]]: ...
def send_batch(fd: int, family: int, replies: list[tuple[bytes, Any]], /) -> tuple[int, int]: ...
