-- 001: rated CDRs of every source, and postpaid usage per account and billing period.
-- Money is BIGINT micro-units (1e-6 of the currency unit); times are timestamptz (UTC).

CREATE TABLE cdrs (
    id               BIGSERIAL PRIMARY KEY,
    source           TEXT        NOT NULL,  -- "radius", "diameter", a mediation source
    call_id          TEXT        NOT NULL,  -- the source's own id (Acct-Session-Id, ...)
    account_id       TEXT        NOT NULL,
    caller           TEXT        NOT NULL,
    callee           TEXT        NOT NULL,
    destination      TEXT        NOT NULL,
    start_time       TIMESTAMPTZ NOT NULL,
    answer_time      TIMESTAMPTZ,           -- NULL: unanswered
    end_time         TIMESTAMPTZ NOT NULL,
    duration_s       INTEGER     NOT NULL CHECK (duration_s >= 0),
    billed_s         INTEGER     NOT NULL CHECK (billed_s >= 0),
    cost_micros      BIGINT      NOT NULL,
    currency         TEXT        NOT NULL,
    tariff           TEXT        NOT NULL,
    gateway          TEXT        NOT NULL,
    disconnect_cause INTEGER     NOT NULL,
    status           TEXT        NOT NULL,
    extra            JSONB       NOT NULL DEFAULT '{}'::jsonb,
    stored_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Live sessions may re-send a CDR after a crash: one row per (source, call_id).
    CONSTRAINT cdrs_source_call_id UNIQUE (source, call_id)
);

CREATE INDEX cdrs_account_start ON cdrs (account_id, start_time);
CREATE INDEX cdrs_start ON cdrs (start_time);

-- Postpaid usage, accumulated in the same transaction as each newly stored CDR.
-- period is the UTC calendar month of the call's start, 'YYYY-MM'.
CREATE TABLE usage_periods (
    account_id   TEXT        NOT NULL,
    period       TEXT        NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    currency     TEXT        NOT NULL,
    calls        BIGINT      NOT NULL DEFAULT 0,
    duration_s   BIGINT      NOT NULL DEFAULT 0,
    billed_s     BIGINT      NOT NULL DEFAULT 0,
    cost_micros  BIGINT      NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, period, currency)
);
