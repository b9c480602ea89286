"""Memory of Engine.resolve answers (rating/engine.py); safe as plans are immutable.

An answer depends on the instant only through the profile activations in force
(constant between two activation times, Engine.switches) and, in plans where some
destination is bound to periods only, through those periods. So an answer is kept by
activation span when no such plan was consulted ("timeless"), else by exact instant.
A call rates and sizes its grants from one start many times; calls to the same
numbers share the span answers. The engine keys answers by the part of the number
that can decide a match (PrefixIndex.significant), so calls to numbers sharing their
leading digits share them too. Both kinds are bounded; the oldest answer goes first.
"""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

M = TypeVar("M")
Key = tuple[str, str, str, str, int, int]  # tenant, category, subject, number, 2 instants
MAX_KEPT = 4096  # answers kept per kind (the oldest evicted when full)


class ResolveCache(Generic[M]):
    """resolve() answers by activation span (timeless) or by exact instants."""

    def __init__(self, switches: list[int]) -> None:
        self.switches = switches  # sorted activation times, epoch ns
        self._exact: dict[Key, M] = {}
        self._by_span: dict[Key, M] = {}

    def keys(
        self, tenant: str, category: str, subject: str, number: str, when_ns: int, own_ns: int
    ) -> tuple[Key, Key]:
        """The span key and the exact key of a question (own_ns: CGRateS' call start)."""
        spans = bisect.bisect_right(self.switches, when_ns)
        own_spans = bisect.bisect_right(self.switches, own_ns)
        return (
            (tenant, category, subject, number, spans, own_spans),
            (tenant, category, subject, number, when_ns, own_ns),
        )

    def get(self, span_key: Key, key: Key) -> M | None:
        """The remembered answer, or None."""
        found = self._by_span.get(span_key)
        return found if found is not None else self._exact.get(key)

    def get_timed(self, span_key: Key, key: Key) -> tuple[M | None, bool]:
        """get(), and whether the answer was kept by exact instant (timed)."""
        found = self._by_span.get(span_key)
        if found is not None:
            return found, False
        return self._exact.get(key), True

    def put(self, span_key: Key, key: Key, found: M, *, timed: bool) -> None:
        """Remember an answer; ``timed``: a plan with period-bound destinations decided."""
        cache, kept = (self._exact, key) if timed else (self._by_span, span_key)
        if len(cache) >= MAX_KEPT:
            del cache[next(iter(cache))]  # dicts keep insertion order: the oldest
        cache[kept] = found
