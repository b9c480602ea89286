-- 007: revenue assurance (chargingd/assurance, docs/assurance.md): the ledger's journal
-- of money movements, exported from Redis, and each `chargingd assure` run with its
-- findings. Money is BIGINT micro-units.

-- Every money movement of the ledger, appended by the Lua script that moved it to the
-- account's journal stream ({a:ID}:journal) and copied here by the exporter, once
-- (the primary key is the stream entry). The chain of balance and net after each
-- entry shows a change made outside the ledger's scripts (docs/assurance.md).
CREATE TABLE ledger_journal (
    account_id     TEXT        NOT NULL,
    entry_ms       BIGINT      NOT NULL,  -- the stream entry id, ms-seq, per account
    entry_seq      BIGINT      NOT NULL,
    at             TIMESTAMPTZ NOT NULL,  -- when the script ran (the caller's clock)
    -- open (account created), debit (a live session's commit or release), correct (a
    -- late Stop's correction), usage (a mediated call), rerate, topup, adjust
    kind           TEXT        NOT NULL,
    amount_micros  BIGINT      NOT NULL,  -- the balance's change: < 0 debited, > 0 credited
    balance_micros BIGINT      NOT NULL,  -- the balance after it
    net_micros     BIGINT      NOT NULL,  -- top-ups - debits (lifetime totals) after it
    -- debit/correct: the session id (a live CDR's call_id); usage/rerate: the CDR's
    -- call_id (and source); topup/adjust: the transaction id
    ref            TEXT        NOT NULL DEFAULT '',
    source         TEXT        NOT NULL DEFAULT '',
    who            TEXT        NOT NULL DEFAULT '',
    why            TEXT        NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, entry_ms, entry_seq)
);
CREATE INDEX ledger_journal_at ON ledger_journal (at);
CREATE INDEX ledger_journal_ref ON ledger_journal (account_id, ref);

CREATE TABLE assurance_runs (
    run_id         BIGSERIAL   PRIMARY KEY,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ NOT NULL,
    from_time      TIMESTAMPTZ NOT NULL,
    to_time        TIMESTAMPTZ NOT NULL,  -- excluded
    source         TEXT,                  -- NULL: every mediation source
    account_id     TEXT,                  -- NULL: every account
    params         JSONB       NOT NULL,  -- tolerances, thresholds and sources used
    counts         JSONB       NOT NULL,  -- findings per kind; calls compared and matched how
    money          JSONB       NOT NULL,  -- kind -> currency -> micros (signed sum)
    leakage        JSONB       NOT NULL,  -- currency -> micros
    over_threshold BOOLEAN     NOT NULL,
    findings_kept  INTEGER     NOT NULL,  -- stored below (at most [assurance] max_findings)
    created_by     TEXT        NOT NULL
);
CREATE INDEX assurance_runs_period ON assurance_runs (from_time, to_time);

CREATE TABLE assurance_findings (
    run_id       BIGINT  NOT NULL REFERENCES assurance_runs (run_id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    account_id   TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    -- > 0 revenue the operator is missing (leakage); < 0 the customer was charged more
    -- than the records support; hold_past_lease: the customer's money held
    money_micros BIGINT  NOT NULL,
    source       TEXT    NOT NULL DEFAULT '',
    call_id      TEXT    NOT NULL DEFAULT '',
    matched_by   TEXT    NOT NULL DEFAULT '',
    detail       JSONB   NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, seq)
);
