-- 003: what the ledger moved for each CDR (DESIGN invariant 7) and how.
--   charged_micros  money the ledger actually moved for this call (>= 0)
--   charge          live | mediated_debit | recorded_only | none
--   charge_reason   why charged_micros differs from cost_micros ('' when it does not):
--                   capped, debt, rerate, unmatched, ...
-- CDRs stored before this migration: a live CDR's cost was what its session debited;
-- a mediated one never touched the ledger.

ALTER TABLE cdrs
    ADD COLUMN charged_micros BIGINT NOT NULL DEFAULT 0 CHECK (charged_micros >= 0),
    ADD COLUMN charge TEXT NOT NULL DEFAULT 'none'
        CHECK (charge IN ('live', 'mediated_debit', 'recorded_only', 'none')),
    ADD COLUMN charge_reason TEXT NOT NULL DEFAULT '';

UPDATE cdrs SET charged_micros = cost_micros, charge = 'live'
WHERE source IN ('radius', 'diameter') AND cost_micros >= 0;

CREATE INDEX cdrs_account_charge ON cdrs (account_id, charge);

-- Usage per period carries the money charged too (invoices are built on it). A
-- recorded_only CDR is a second record of a call already counted: usage skips it.
ALTER TABLE usage_periods ADD COLUMN charged_micros BIGINT NOT NULL DEFAULT 0;

UPDATE usage_periods u SET charged_micros = s.charged
FROM (
    SELECT account_id, to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM') AS period, currency,
        sum(charged_micros) AS charged
    FROM cdrs GROUP BY 1, 2, 3
) s
WHERE u.account_id = s.account_id AND u.period = s.period AND u.currency = s.currency;
