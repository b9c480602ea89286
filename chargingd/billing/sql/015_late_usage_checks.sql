-- 015: what an account's late-usage re-count has seen, so that calls of periods older
-- than [invoicing] late_usage_periods (a late Stop, a late switch file, a rerate of a
-- period long invoiced) are billed as usage corrections too, never dropped
-- (chargingd/invoicing/usage.py). Until now such calls were charged in the ledger and
-- appeared on no invoice.
--
-- Every change of a month's usage records the transaction that made it (the same
-- transaction as the CDR change: store_cdrs, rerate). A re-count records the snapshot
-- it counted in; a month whose last change that snapshot does not see changed since.
ALTER TABLE usage_periods ADD COLUMN changed_xid xid8;
CREATE FUNCTION usage_periods_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id();
    RETURN NEW;
END $$;
CREATE TRIGGER usage_periods_changed BEFORE INSERT OR UPDATE ON usage_periods
    FOR EACH ROW EXECUTE FUNCTION usage_periods_changed();

-- Per account and currency: the snapshot of the last committed issuing run that
-- counted every change it saw (its own period, the recent periods and every older
-- period whose months changed). An account without a row is re-counted in full once.
CREATE TABLE late_usage_checks (
    account_id TEXT        NOT NULL,
    currency   TEXT        NOT NULL,
    snapshot   pg_snapshot NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, currency)
);
