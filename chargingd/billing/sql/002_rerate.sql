-- 002: rerating runs, their per-account ledger adjustments, and each CDR's first cost.

-- The cost a CDR had before its first applied rerate (NULL: never rerated).
ALTER TABLE cdrs ADD COLUMN original_cost_micros BIGINT;
ALTER TABLE cdrs ADD COLUMN rerate_run_id TEXT;

CREATE TABLE rerate_runs (
    run_id        TEXT        PRIMARY KEY,  -- derived from the run's parameters and results
    from_time     TIMESTAMPTZ NOT NULL,
    to_time       TIMESTAMPTZ NOT NULL,
    account_id    TEXT,                     -- NULL: every account
    plan          TEXT        NOT NULL,     -- plan file, or '' for each account's tariff
    who           TEXT        NOT NULL,
    reason        TEXT        NOT NULL,
    cdrs          BIGINT      NOT NULL,
    changed_cdrs  BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One ledger adjustment per account per run; txn_id makes the ledger apply it once.
CREATE TABLE rerate_adjustments (
    run_id           TEXT        NOT NULL REFERENCES rerate_runs (run_id),
    account_id       TEXT        NOT NULL,
    currency         TEXT        NOT NULL,
    cdrs             BIGINT      NOT NULL,
    old_cost_micros  BIGINT      NOT NULL,
    new_cost_micros  BIGINT      NOT NULL,
    -- The ledger amount: old - new (a price rise debits, a cut credits).
    amount_micros    BIGINT      NOT NULL,
    txn_id           TEXT        NOT NULL UNIQUE,
    applied_at       TIMESTAMPTZ,           -- NULL: not yet confirmed by the ledger
    PRIMARY KEY (run_id, account_id, currency)
);
