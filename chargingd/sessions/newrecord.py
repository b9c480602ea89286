"""The record of a new call: its account's plan and currency checked, the called
number normalised, the first grant priced, and the usage its hold pays for (shared by
authorize and by accounting for a call it adopts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chargingd.core.config import SessionsConfig
from chargingd.core.numbers import NumberError, normalize_or_raw, to_e164
from chargingd.sessions.ccapi import CallInfo, RefusalCode, Refused
from chargingd.sessions.pricing import Priced, Pricer, RatingError
from chargingd.sessions.store import SessionRecord

log = logging.getLogger("chargingd.sessions")


@dataclass(frozen=True)
class Profile:
    """What rating needs of an account; re-checked by the fused script on every use."""

    account_id: str
    tariff: str
    currency: str
    mode: str = "prepaid"  # h323-billing-model in the Accept; re-checked like the rest


class RecordMaker:
    """Builds new session records with the pricer and the sessions config."""

    def __init__(self, pricer: Pricer, cfg: SessionsConfig) -> None:
        self.pricer = pricer
        self.cfg = cfg
        # SessionsConfig.country_of and session_ttl_s, kept (the config is frozen): its
        # method is interpreted, a frame per authorize (round 10b)
        self._countries = dict(cfg.client_countries)
        self._default_country = cfg.default_country
        self._session_ttl_s = cfg.session_ttl_s

    def country_of(self, client: str) -> str:
        """SessionsConfig.country_of, compiled."""
        return self._countries.get(client, self._default_country)

    def new_record(
        self, call: CallInfo, account: Profile, now_ms: int, usage_s: int = 0, *, hold: bool = False
    ) -> tuple[SessionRecord, Priced] | Refused:
        """A live record for this call and the price of ``usage_s`` seconds on it, or
        why its destination cannot be rated. ``hold``: the record holds that price
        (held_micros, paid_usage_s), as _reserve_first asks the fused script to."""
        plan_id = self.pricer.plan_id_for(account.tariff)
        if plan_id is None:
            log.error("account %s names tariff %r, not loaded", account.account_id, account.tariff)
            return Refused(RefusalCode.SYSTEM_ERROR, "tariff not available")
        if self.pricer.currency_of(plan_id) not in ("", account.currency):
            log.error(
                "account %s (%s) rated by a tariff in another currency",
                account.account_id,
                account.currency,
            )
            return Refused(RefusalCode.SYSTEM_ERROR, "tariff currency mismatch")
        country = self.country_of(call.client)
        try:
            callee = to_e164(call.called, country=country)
        except NumberError:
            return Refused(RefusalCode.DESTINATION_NOT_ALLOWED, "invalid called number")
        try:  # Grants.price of the record below (not answered: rated from auth_ms)
            priced = self.pricer.price(
                plan_id, subject=account.account_id, number=callee, start_ms=now_ms, usage_s=usage_s
            )
        except RatingError as exc:
            return Refused(
                RefusalCode.DESTINATION_NOT_ALLOWED, f"destination not allowed ({exc.code})"
            )
        held = max(priced.cost_micros, 1) if hold else 0
        paid_s = self._paid_s(plan_id, account.account_id, callee, now_ms, held)
        rec = SessionRecord(
            session_id=call.session_id,
            account_id=account.account_id,
            user_name=call.user_name,
            caller=normalize_or_raw(call.calling, country=country),
            callee=callee,
            destination=priced.destination_id,
            plan=plan_id,
            currency=account.currency,
            gateway=call.gateway,
            client=call.client,
            auth_ms=now_ms,
            last_seen_ms=now_ms,
            held_micros=held if paid_s > 0 else 0,
            paid_usage_s=paid_s,
            nas_session_id=call.nas_session_id,
            conf_id=call.conf_id,
            call_origin=call.call_origin,
        )
        return rec, priced

    def _paid_s(self, plan_id: str, account_id: str, callee: str, now_ms: int, held: int) -> int:
        """Grants.paid_s of the record new_record builds (0 for no money)."""
        if held <= 0:
            return 0
        paid = self.pricer.paid_s(
            plan_id, subject=account_id, number=callee, start_ms=now_ms, amount_micros=held
        )
        return min(paid, self._session_ttl_s)
