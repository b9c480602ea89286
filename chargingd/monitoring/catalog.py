"""Every metric /metrics exposes: name, type, help and label names (one place).

Scope says who counts it: ``host`` metrics are this daemon's processes summed (sum
them across hosts); ``cluster`` gauges are read from the shared Redis and every
daemon reports the same value (take max() across hosts, never sum()); ``feeder``
counters count each CDR once across all daemons (sum across hosts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    scope: str = "host"


F = Family
FAMILIES: dict[str, Family] = {
    # -- per process, summed over the host ------------------------------------------
    "chargingd_requests_total": F(
        "counter",
        "Credit-control requests by protocol, kind (authorize, start, interim, stop, "
        "failed, gateway_restart) and result (accepted, refused, fail_open, ok, error)",
        ("protocol", "kind", "result"),
    ),
    "chargingd_request_duration_seconds": F(
        "histogram",
        "Time of the credit-control decision (sessions + Redis) per protocol and kind "
        "(authorize, accounting)",
        ("protocol", "kind"),
    ),
    "chargingd_refusals_total": F("counter", "Refused authorizations by reason", ("reason",)),
    "chargingd_radius_packets_received_total": F("counter", "RADIUS datagrams received"),
    "chargingd_radius_packets_dropped_total": F(
        "counter",
        "RADIUS datagrams dropped unanswered, by reason (overload = queue full, shed)",
        ("reason",),
    ),
    "chargingd_radius_duplicates_total": F(
        "counter",
        "Retransmissions (RFC 5080): answered from the cache, or dropped while the first "
        "copy is in progress",
        ("state",),
    ),
    "chargingd_radius_replies_total": F(
        "counter", "RADIUS replies sent, by packet type", ("type",)
    ),
    "chargingd_radius_events_total": F(
        "counter", "Other RADIUS frontend events (errors, ignored accounting, ...)", ("event",)
    ),
    "chargingd_radius_queue_depth": F(
        "gauge", "RADIUS requests waiting for a worker task, by port", ("port",)
    ),
    "chargingd_disconnect_requests_total": F(
        "counter",
        "Disconnect/CoA requests (RFC 5176) by outcome (sent, retransmitted, acked, "
        "session_not_found, nacked, timed_out, unroutable)",
        ("outcome",),
    ),
    "chargingd_kamailio_rpc_cuts_total": F(
        "counter",
        "Cuts through Kamailio's JSON-RPC (cut_backend kamailio_jsonrpc) by outcome (sent, "
        "retried, ended, not_found, errors, timed_out, unroutable)",
        ("outcome",),
    ),
    "chargingd_cuts_total": F(
        "counter", "Calls the cutter tried to cut, by result (sent, failed)", ("result",)
    ),
    "chargingd_redis_errors_total": F(
        "counter", "Requests and background passes that found Redis unreachable", ("where",)
    ),
    "chargingd_redis_restarts_total": F(
        "counter", "Times the main process restarted its embedded redis-server after it died"
    ),
    "chargingd_exporter_cdrs_total": F(
        "counter",
        "CDRs handled by this host's exporter, by result (exported, duplicate, "
        "dead_letter, claimed)",
        ("result",),
    ),
    "chargingd_exporter_errors_total": F("counter", "Failed exporter passes"),
    "chargingd_processes": F("gauge", "Processes of this daemon reporting, by role", ("role",)),
    "chargingd_alerts_raised_total": F(
        "counter",
        "Alerts this daemon's main process raised (fraud rules, KPI rules, assurance), by "
        "result: opened (a new incident), counted (into an open one), dropped, failed",
        ("result",),
    ),
    # -- cluster-wide gauges (same value on every daemon: max() across hosts) -------
    "chargingd_active_calls": F(
        "gauge", "Live sessions (authorized, not yet ended) in the shared Redis", scope="cluster"
    ),
    "chargingd_gateway_active_calls": F(
        "gauge", "Live sessions per gateway (NAS-IP-Address)", ("gateway",), scope="cluster"
    ),
    "chargingd_reserved_money": F(
        "gauge",
        "Money held for live calls, in currency units, by currency",
        ("currency",),
        scope="cluster",
    ),
    "chargingd_exporter_lag_seconds": F(
        "gauge", "Age of the oldest CDR not yet exported", scope="cluster"
    ),
    "chargingd_exporter_backlog_cdrs": F(
        "gauge",
        "CDRs waiting for the exporter: pending (read, not stored) and undelivered",
        ("state",),
        scope="cluster",
    ),
    "chargingd_exporter_dead_letters": F(
        "gauge", "Entries in the CDR dead-letter stream", scope="cluster"
    ),
    "chargingd_orphan_accounting": F(
        "gauge", "Accounting reports kept in cdr:orphans (no account found)", scope="cluster"
    ),
    "chargingd_leg_accounting": F(
        "gauge",
        "Accounting reports kept in cdr:legs (a leg charged by its other leg)",
        scope="cluster",
    ),
    "chargingd_alert_incidents": F(
        "gauge",
        "Alert incidents opened in the last 24 h (fraud, KPI, assurance) by kind, "
        "severity and state (open, resolved)",
        ("kind", "severity", "state"),
        scope="cluster",
    ),
    "chargingd_kpi_calls": F(
        "gauge",
        "Calls in the KPI window by outcome (answered, busy, no_answer, rejected, "
        "abandoned, failed, unknown), per dimension and group",
        ("window", "dimension", "group", "outcome"),
        scope="cluster",
    ),
    "chargingd_kpi_attempts": F(
        "gauge",
        "Call attempts (CDRs) in the KPI window",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_refused": F(
        "gauge",
        "Authorizations refused in the KPI window",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_asr_ratio": F(
        "gauge",
        "Answer-seizure ratio (E.411): answered / attempts",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_ner_ratio": F(
        "gauge",
        "Network effectiveness ratio (E.425): delivered / attempts with a known outcome",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_acd_seconds": F(
        "gauge",
        "Average call duration of answered calls (reported talk time)",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_aloc_seconds": F(
        "gauge",
        "Average length of conversation (E.437): answer to release, answered calls",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_pdd_seconds": F(
        "gauge",
        "Mean post-dial delay (setup to alerting) where gateways report it",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_mos": F(
        "gauge",
        "Mean opinion score (1-5) where gateways report it",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_jitter_seconds": F(
        "gauge",
        "Mean interarrival jitter where gateways report it",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    "chargingd_kpi_packet_loss_ratio": F(
        "gauge",
        "Mean RTP packet loss where gateways report it",
        ("window", "dimension", "group"),
        scope="cluster",
    ),
    # -- counted once per CDR by the KPI feeders (sum across hosts) -----------------
    "chargingd_calls_total": F(
        "counter", "Ended calls (CDRs) by outcome class", ("outcome",), scope="feeder"
    ),
    "chargingd_calls_ended_total": F(
        "counter",
        "Ended calls by CDR status (normal, unanswered, credit_cut, killed, stale, "
        "gateway_restart, overrun): cuts by reason",
        ("status",),
        scope="feeder",
    ),
    "chargingd_call_talk_seconds_total": F(
        "counter", "Talk time of answered calls as the gateways reported it", scope="feeder"
    ),
    "chargingd_kpi_undecodable_cdrs_total": F(
        "counter", "Stream entries the KPI feeder could not read as a CDR", scope="feeder"
    ),
}
