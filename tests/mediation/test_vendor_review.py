"""Vendor-documented cases a review found mis-mediated (each failed before its fix)."""

from __future__ import annotations

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised

KAM = "Mar 11 09:00:05 sbc1 kamailio[2211]: NOTICE: acc [acc.c:284]: ACC: "
USERS = "src_user=4930123456;dst_user=4989987654"


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


def test_kamailio_failed_branch_before_the_answer_is_the_same_call() -> None:
    """acc docs (log_missed_flag): set again in failure_route, every failed branch of
    serial forking is logged as "call missed". The answered branch that follows has
    the same Call-ID: it is the call, not a duplicate of an unanswered one."""
    lines = [
        f"{KAM}call missed: timestamp=1552294801;method=INVITE;from_tag=f;to_tag=g1;"
        f"call_id=s1;code=503;reason=Service Unavailable;{USERS}\n",
        f"{KAM}transaction answered: timestamp=1552294805;method=INVITE;from_tag=f;"
        f"to_tag=g2;call_id=s1;code=200;reason=OK;{USERS}\n",
        f"{KAM}transaction answered: timestamp=1552294930;method=BYE;from_tag=g2;"
        f"to_tag=f;call_id=s1;code=200;reason=OK;{USERS}\n",
        f"{KAM}call missed: timestamp=1552294901;method=INVITE;from_tag=h;to_tag=g1;"
        f"call_id=s2;code=503;reason=Service Unavailable;{USERS}\n",
        f"{KAM}call missed: timestamp=1552294903;method=INVITE;from_tag=h;to_tag=g2;"
        f"call_id=s2;code=486;reason=Busy Here;{USERS}\n",
    ]
    calls = calls_of(lines, SourceConfig(format="kamailio"))
    assert [(c.call_id, c.status, c.duration_s, c.cause) for c in calls] == [
        ("s1", "normal", 125, 16),
        ("s2", "unanswered", 0, 17),  # one call: its last branch's failure (486) ends it
    ]
