"""An error of another command in the fused call's batch is not the library's: on a
real redis-server 7, the commands sent with an FCALL (the hold-index write before it,
the gateway registry's write after it) can fail on their own, e.g. an ACL that refuses
one of them. That error is no "the library is missing": the FCALL ran (its reserve,
its record), so it must not be sent again, by FCALL or EVALSHA, and the library stays
in use. Only the FCALL's own error (Function not found) means "nothing ran"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from sessions_harness import EUR, Clock, add_account, call, make_ledger, make_sessions

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.sessions.ccapi import Authorized


async def calls(redis: aioredis.Redis) -> dict[str, int]:
    info: dict[str, Any] = await redis.info("commandstats")
    return {c: int(info.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("fcall", "evalsha")}


async def test_a_refused_command_beside_the_fcall_does_not_resend_it(
    redis7: aioredis.Redis, redis7_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A user its ACL refuses SADD (the gateway registry's write, sent after the
    authorize's FCALL in the same pipeline): the authorize fails as it did by EVALSHA
    (NOPERM), its script ran once, and the next calls still go by FCALL."""
    await redis7.execute_command("ACL", "SETUSER", "nosadd", "on", ">pw", "~*", "&*", "+@all")
    user = aioredis.Redis(
        unix_socket_path=str(redis7_server.socket_path), username="nosadd", password="pw"
    )
    try:
        ledger = await make_ledger(redis7, Clock())
        await add_account(ledger, balance_micros=10 * EUR)
        sessions = make_sessions(user, await make_ledger(user, Clock()), Clock(), tmp_path)
        await sessions.store.load_scripts()
        assert sessions.fused is not None
        library = sessions.fused.library
        assert library.available
        assert isinstance(await sessions.authorize(call("s0")), Authorized)  # caller known
        await redis7.execute_command("ACL", "SETUSER", "nosadd", "-sadd")
        before = await calls(redis7)
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)noperm|permission"):
            await sessions.authorize(call("s1", gateway="10.0.0.2"))  # a new gateway
        after = await calls(redis7)
        ran = {c: after[c] - before[c] for c in after}
        assert ran == {"fcall": 1, "evalsha": 0}  # the script ran once, never resent
        assert library.available  # the library is fine: still called
        # the gateway is registered once per process (it counts as done): the next
        # call has no SADD beside it and goes by FCALL
        before = await calls(redis7)
        assert isinstance(await sessions.authorize(call("s2", gateway="10.0.0.2")), Authorized)
        after = await calls(redis7)
        assert after["fcall"] - before["fcall"] == 1 and after["evalsha"] == before["evalsha"]
    finally:
        await user.aclose()
        await redis7.execute_command("ACL", "DELUSER", "nosadd")
