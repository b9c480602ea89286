-- 013: periods an invoice run looked at for a postpaid account and issued no invoice
-- for ("nothing to bill", "zero amount"), with the usage it counted then. A call of
-- such a period stored later (a switch file, a late Stop) was never billed: the next
-- runs re-count only periods something counted (invoice_usage), so it is re-counted
-- from here and billed as a usage correction, like one of an invoiced period
-- (chargingd/invoicing/usage.py). A later run of the same period that finds the
-- account still without an invoice writes the row again with what it counted then.
CREATE TABLE uninvoiced_periods (
    account_id     TEXT        NOT NULL,
    period         TEXT        NOT NULL,
    period_start   TIMESTAMPTZ NOT NULL,
    period_end     TIMESTAMPTZ NOT NULL,
    currency       TEXT        NOT NULL,
    calls          BIGINT      NOT NULL,
    charged_micros BIGINT      NOT NULL,
    reason         TEXT        NOT NULL,
    run_id         TEXT        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, period)
);
-- The run reads a label's rows of every account (where the last period ended, for a
-- changed billing day); the re-count reads an account's by the primary key.
CREATE INDEX uninvoiced_periods_period ON uninvoiced_periods (period, account_id);
