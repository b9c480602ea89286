"""Every Redis key of the fraud rules (the one place they are built).

Fraud state is not money: the rules own these keys and their scripts (lua/), but an
account's keys carry the ledger's hash tag ``{a:ID}`` (ledger.keys.account_tag), so a
rule, the account's block and the sessions' authorize script share one Cluster slot.

  {a:ID}:fr:v           string  the account's state, one cmsgpack map read and written
                              once per authorize (lua/fraud.lua): since, deny flags,
                              blocked_by, the authorize rules' counters (bucketed
                              windows), distinct numbers, live calls, countries called,
                              recent answers for retransmissions
  {a:ID}:fr:ans:SID     string  a call's answer for its retransmissions, when the value's
                              recent answers were full (lua/fraud.lua fr_add_recent;
                              expires with the refusal memory)
  {a:ID}:fr:log         zset  calls counted by the event rules (short calls, failed
                              attempts; score slot*1e13+ms; an Access-Reject's member
                              names its identity: plan.reject_member)
  {a:ID}:fr:ev          hash  spend and answer buckets of the event rules (SLOT:m/a/n:B;
                              SLOT:t:B when bucket B's last event came)
  {a:ID}:fr:seen        zset  CDR / refusal ids already counted (re-deliveries)
  {fip:IP}:fr:v         string  one caller IP's state (velocity per caller IP; the deny
                              flag of an identity_scan rule that refuses it)
  {fip:IP}:fr:scan      zset  identities no account has that the IP tried (identity_scan;
                              score slot*1e13+ms, member the identity)
  {fdst:NUMBER}:fr:callers zset  accounts that called a risky number (range) lately
                              (shared_destination; member the account id)
  {fdst:NUMBER}:fr:v    string  that number's state (read for its since; never written)
  {fid:IDENT}:fr:log    zset  refusals of an identity no account has
  {fid:IDENT}:fr:v      string  that identity's state (read for its since; never written)
"""

from __future__ import annotations

from chargingd.ledger.keys import account_tag, tag_of


def value_key(account_id: str) -> str:
    """(Built per authorize: the account's tag as the ledger's key helpers remember it,
    when they hold the account, not formatted again.)"""
    return tag_of(account_id) + ":fr:v"


def log_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:log"


def events_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:ev"


def seen_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:seen"


def no_record_key(account_id: str, session_id: str) -> str:
    """Where a caller without session records (the rules alone) says none exists."""
    return f"{account_tag(account_id)}:fr:none"


def answer_key(account_id: str, session_id: str) -> str:
    """A call's remembered answer of its own (the value's recent answers were full)."""
    return f"{account_tag(account_id)}:fr:ans:{session_id}"


def ip_tag(ip: str) -> str:
    return f"{{fip:{ip}}}"


def ip_value_key(ip: str) -> str:
    return f"{ip_tag(ip)}:fr:v"


def ip_scan_key(ip: str) -> str:
    return f"{ip_tag(ip)}:fr:scan"


def destination_tag(number: str) -> str:
    """The slot of one called number (range): shared_destination counts its callers."""
    return f"{{fdst:{number}}}"


def destination_callers_key(number: str) -> str:
    return f"{destination_tag(number)}:fr:callers"


def destination_value_key(number: str) -> str:
    return f"{destination_tag(number)}:fr:v"


def stranger_tag(identity: str) -> str:
    """The slot of an identity no account has (refusals counted, alerts only)."""
    return f"{{fid:{identity}}}"


def stranger_log_key(identity: str) -> str:
    return f"{stranger_tag(identity)}:fr:log"


def stranger_value_key(identity: str) -> str:
    return f"{stranger_tag(identity)}:fr:v"
