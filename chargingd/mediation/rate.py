"""Price a normalised call with its payer's tariff plan and make the rated CDR.

The plan is the source's ``plan`` (an id of [rating] plans, or a file) when set, else
the plan of the account's tariff exactly as live credit control picks it
(RatingConfig.plan_for: [rating] plans[tariff], or default_plan for an account
naming none). The CDR's ``tariff`` names the plan the way live CDRs do: the plan id
("gold", "default"), not the rating plan inside the file. Plans load once per run.
Unanswered calls are not priced: they are kept with zero billed time and cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chargingd.billing.cdr import CDR, CdrStatus
from chargingd.core.config import RatingConfig
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call, utc_datetime
from chargingd.mediation.payers import Payer
from chargingd.mediation.records import RowError
from chargingd.rating.durations import billed_seconds, seconds_to_ns
from chargingd.rating.loaders import load_plan
from chargingd.rating.plan import TariffPlan

PlanLoader = Callable[[str], TariffPlan]


def _default_loader(path: str) -> TariffPlan:
    return load_plan(path)


class Rater:
    """Rates the calls of one source (rate = false: stores them unrated, cost 0)."""

    def __init__(
        self,
        source: SourceConfig,
        *,
        plans: Mapping[str, str] | None = None,
        default_plan: str = "",
        loader: PlanLoader = _default_loader,
    ) -> None:
        self.source = source
        self.rating = RatingConfig(default_plan=default_plan, plans=dict(plans or {}))
        self.loader = loader
        self._loaded: dict[str, TariffPlan] = {}

    def choose(self, tariff: str) -> tuple[str, str]:
        """(plan id, file) for an account's tariff; RowError when none applies."""
        if self.source.plan:
            return self.rating.plan_named(self.source.plan)
        found = self.rating.plan_for(tariff)
        if found is None:
            raise RowError(f"no tariff plan for tariff {tariff!r} ([rating] plans, default_plan)")
        return found

    def _name(self, tariff: str) -> str:
        try:
            return self.choose(tariff)[0]
        except RowError:
            return tariff

    def preload(self) -> None:
        """Load every plan the run may price with (the source's own, else those of
        [rating]) before anything is read: one that cannot load is a configuration
        error (TariffLoadError) up front, not a traceback at the first answered call."""
        if not self.source.rate:
            return
        if self.source.plan:
            self.plan(self.choose("")[1])
            return
        for path in (self.rating.default_plan, *self.rating.plans.values()):
            if path:
                self.plan(path)

    def plan(self, path: str) -> TariffPlan:
        plan = self._loaded.get(path)
        if plan is None:
            plan = self._loaded[path] = self.loader(path)  # errors stop the run: config
        return plan

    def cdr(self, call: Call, payer: Payer) -> CDR:
        """The rated CDR of ``call``; RowError (the reject reason) when it cannot be priced."""
        if call.status == CdrStatus.UNANSWERED or not self.source.rate:
            return _make(call, payer, payer.currency, self._name(payer.tariff), "", 0, 0)
        plan_id, path = self.choose(payer.tariff)
        plan = self.plan(path)
        if payer.from_ledger and plan.currency and plan.currency != payer.currency:
            # Live credit control refuses such a call ("tariff currency mismatch"); a
            # mediated one was priced in the plan's money and debited as the account's
            # (0.035 USD taken as 0.035 EUR).
            raise RowError(
                f"currency mismatch: tariff {plan_id} prices in"
                f" {plan.currency}, account {payer.account_id} holds {payer.currency}"
            )
        try:
            cost = plan.rate(
                subject=payer.account_id,
                destination=call.callee.lstrip("+"),
                start=utc_datetime(call.answer_ms),
                usage_ns=seconds_to_ns(call.duration_s),
                tenant=self.source.tenant,
                category=self.source.category,
            )
        except Exception as exc:
            code = getattr(exc, "code", None)
            if not isinstance(code, str):
                raise  # not a rating refusal: a bug, let it show
            raise RowError(f"rating failed ({code}): {exc}") from None
        billed_s = billed_seconds(cost.billed_ns)
        # A ledger account's money is in its own currency; otherwise the plan says.
        currency = payer.currency if payer.from_ledger else plan.currency or payer.currency
        return _make(
            call, payer, currency, plan_id, cost.destination_id, billed_s, cost.cost_micros
        )


def _make(
    call: Call,
    payer: Payer,
    currency: str,
    tariff: str,
    destination: str,
    billed_s: int,
    cost_micros: int,
) -> CDR:
    return CDR(
        source=call.source,
        call_id=call.call_id,
        account_id=payer.account_id,
        caller=call.caller,
        callee=call.callee,
        destination=destination,
        start_ms=call.start_ms,
        answer_ms=call.answer_ms,
        end_ms=call.end_ms,
        duration_s=call.duration_s,
        billed_s=billed_s,
        cost_micros=cost_micros,
        currency=currency,
        tariff=tariff,
        gateway=call.gateway,
        disconnect_cause=call.cause,
        status=call.status,
        extra=call.extra,
    )
