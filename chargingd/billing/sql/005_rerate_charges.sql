-- 005: rerating settles each call's charge, not a per-account sum (issue 9).
-- A rerate moves a call's charged_micros to a target: the new price for a call the
-- ledger charged in full, never more than it charged for one it charged less (capped,
-- forgiven), nothing for a call the ledger never charged (recorded_only, none). One
-- row per call and run; the ledger applies it once (Ledger.rerate_usage, keyed by
-- the call), and cdrs.charged_micros follows what the ledger reports.

CREATE TABLE rerate_charges (
    seq              BIGSERIAL   PRIMARY KEY,  -- the order the ledger applies them in
    run_id           TEXT        NOT NULL REFERENCES rerate_runs (run_id),
    cdr_id           BIGINT      NOT NULL REFERENCES cdrs (id),
    account_id       TEXT        NOT NULL,
    currency         TEXT        NOT NULL,
    source           TEXT        NOT NULL,
    call_id          TEXT        NOT NULL,
    old_charged      BIGINT      NOT NULL CHECK (old_charged >= 0),
    target_charged   BIGINT      NOT NULL CHECK (target_charged >= 0),
    insufficient     TEXT        NOT NULL CHECK (insufficient IN ('debt', 'cap')),
    -- The CDR's charge_reason to keep (a call charged less than its price on purpose
    -- stays so); '' takes the ledger's ('rerate', or 'capped').
    keep_reason      TEXT        NOT NULL DEFAULT '',
    applied_at       TIMESTAMPTZ,           -- NULL: not yet confirmed by the ledger
    applied_charged  BIGINT,                -- what the ledger holds for the call after it
    error            TEXT,                  -- the ledger refused it (not retried)
    UNIQUE (run_id, cdr_id)
);

CREATE INDEX rerate_charges_pending ON rerate_charges (seq)
    WHERE applied_at IS NULL AND error IS NULL;
