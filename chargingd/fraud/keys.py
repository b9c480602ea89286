"""Every Redis key of the fraud rules (the one place they are built).

Fraud state is not money: the rules own these keys and their scripts (lua/), but an
account's keys carry the ledger's hash tag ``{a:ID}`` (ledger.keys.account_tag), so a
rule, the account's block and the sessions' authorize script share one Cluster slot.

  {a:ID}:fr:st          hash  since (counts before it ignored), deny:RULE[|IDENTITY]
                              -> until ms, blocked_by, blocked_ms
  {a:ID}:fr:log         zset  counted calls of the account's rules (score slot*1e13+ms)
  {a:ID}:fr:id:IDENT    zset  counted calls of one identity (velocity per identity)
  {a:ID}:fr:rg:RANGE    zset  calls to one number range (same_destination)
  {a:ID}:fr:live        zset  session id -> ms its entry lapses (concurrent calls)
  {a:ID}:fr:cc          hash  country -> ms of the last call there (new_country)
  {a:ID}:fr:ev          hash  spend and answer buckets of the event rules
  {a:ID}:fr:seen        zset  CDR / refusal ids already counted (re-deliveries)
  {a:ID}:fr:no:SID      string  a rule refused this call: "refuse|RULE" / "block|RULE",
                              for its retransmissions (the ledger's refusal_ttl_ms)
  {fip:IP}:fr:log       zset  counted calls from one caller IP (every account)
  {fip:IP}:fr:st        hash  state of that IP's slot (a placeholder: never written)
  {fid:IDENT}:fr:log    zset  refusals of an identity no account has
  {fid:IDENT}:fr:st     hash  state of that identity's slot
"""

from __future__ import annotations

from chargingd.ledger.keys import account_tag


def state_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:st"


def log_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:log"


def identity_key(account_id: str, identity: str) -> str:
    return f"{account_tag(account_id)}:fr:id:{identity}"


def range_key(account_id: str, number_range: str) -> str:
    return f"{account_tag(account_id)}:fr:rg:{number_range}"


def live_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:live"


def countries_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:cc"


def events_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:ev"


def seen_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:fr:seen"


def refusal_key(account_id: str, session_id: str) -> str:
    return f"{account_tag(account_id)}:fr:no:{session_id}"


def ip_tag(ip: str) -> str:
    return f"{{fip:{ip}}}"


def ip_log_key(ip: str) -> str:
    return f"{ip_tag(ip)}:fr:log"


def ip_state_key(ip: str) -> str:
    return f"{ip_tag(ip)}:fr:st"


def stranger_tag(identity: str) -> str:
    """The slot of an identity no account has (refusals counted, alerts only)."""
    return f"{{fid:{identity}}}"


def stranger_log_key(identity: str) -> str:
    return f"{stranger_tag(identity)}:fr:log"


def stranger_state_key(identity: str) -> str:
    return f"{stranger_tag(identity)}:fr:st"
