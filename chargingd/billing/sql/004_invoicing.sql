-- 004: invoicing (chargingd/invoicing): billing profiles, subscriptions, one-off
-- charges and credits, invoices / credit notes / statements with gap-free numbers,
-- payments, ledger postings and dunning. Money is BIGINT micro-units.

-- An account's billing settings; an account without a row uses the [invoicing] defaults.
CREATE TABLE billing_profiles (
    account_id         TEXT        PRIMARY KEY,
    cycle              TEXT        NOT NULL DEFAULT 'monthly' CHECK (cycle = 'monthly'),
    billing_day        SMALLINT    NOT NULL DEFAULT 1 CHECK (billing_day BETWEEN 1 AND 28),
    customer_name      TEXT        NOT NULL DEFAULT '',
    customer_address   TEXT[]      NOT NULL DEFAULT '{}',
    email              TEXT        NOT NULL DEFAULT '',
    country            TEXT        NOT NULL DEFAULT '' CHECK (country ~ '^([A-Z]{2})?$'),
    -- standard: VAT at vat_rate_ppm (NULL: the country's rate from the config);
    -- exempt: no VAT, exemption note; reverse_charge: no VAT, the customer's vat_id.
    tax_mode           TEXT        NOT NULL DEFAULT 'standard'
                       CHECK (tax_mode IN ('standard', 'exempt', 'reverse_charge')),
    vat_rate_ppm       INTEGER     CHECK (vat_rate_ppm BETWEEN 0 AND 1000000),
    vat_id             TEXT        NOT NULL DEFAULT '',
    tax_note           TEXT        NOT NULL DEFAULT '',
    payment_terms_days INTEGER     CHECK (payment_terms_days BETWEEN 0 AND 365),
    zero_invoices      BOOLEAN     NOT NULL DEFAULT false,
    call_detail        BOOLEAN     NOT NULL DEFAULT false,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by         TEXT        NOT NULL DEFAULT '',
    CONSTRAINT reverse_charge_needs_vat_id CHECK (tax_mode <> 'reverse_charge' OR vat_id <> '')
);

-- Recurring charges billed per period, prorated by day (ends_on: last day, included).
CREATE TABLE subscriptions (
    id            BIGSERIAL   PRIMARY KEY,
    account_id    TEXT        NOT NULL,
    description   TEXT        NOT NULL CHECK (description <> ''),
    amount_micros BIGINT      NOT NULL CHECK (amount_micros > 0),  -- per month and unit
    quantity      INTEGER     NOT NULL DEFAULT 1 CHECK (quantity > 0),
    starts_on     DATE        NOT NULL,
    ends_on       DATE        CHECK (ends_on IS NULL OR ends_on >= starts_on),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by    TEXT        NOT NULL
);
CREATE INDEX subscriptions_account ON subscriptions (account_id);

-- The last number given in each series ("INV-2026"): taken under FOR UPDATE in the
-- transaction that issues, so numbers are gap-free and never given twice.
CREATE TABLE invoice_series (
    series      TEXT   PRIMARY KEY,
    last_number BIGINT NOT NULL DEFAULT 0
);

-- Invoices (postpaid), statements (prepaid) and credit notes. Immutable once written.
CREATE TABLE invoices (
    id              BIGSERIAL   PRIMARY KEY,
    number          TEXT        NOT NULL UNIQUE,
    series          TEXT        NOT NULL,
    seq             BIGINT      NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('invoice', 'statement', 'credit_note')),
    account_id      TEXT        NOT NULL,
    period          TEXT        NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    period_start    TIMESTAMPTZ NOT NULL,
    period_end      TIMESTAMPTZ NOT NULL,
    currency        TEXT        NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    due_at          TIMESTAMPTZ,            -- NULL: nothing to pay (statements)
    refers_to       BIGINT      REFERENCES invoices (id),  -- credit notes
    reason          TEXT        NOT NULL DEFAULT '',
    customer        JSONB       NOT NULL,
    issuer          JSONB       NOT NULL,
    tax             JSONB       NOT NULL,   -- mode, rate_ppm, note, vat_id
    subtotal_micros BIGINT      NOT NULL,
    tax_micros      BIGINT      NOT NULL,
    total_micros    BIGINT      NOT NULL,
    usage_micros    BIGINT      NOT NULL DEFAULT 0,  -- exact sum of the CDRs' charged_micros
    usage_calls     BIGINT      NOT NULL DEFAULT 0,
    statement       JSONB,                  -- prepaid: opening, top-ups, ..., closing
    call_detail     BOOLEAN     NOT NULL DEFAULT false,
    run_id          TEXT        NOT NULL,
    created_by      TEXT        NOT NULL,
    CONSTRAINT invoices_series_seq UNIQUE (series, seq),
    CONSTRAINT credit_note_refers CHECK ((kind = 'credit_note') = (refers_to IS NOT NULL))
);
-- One invoice (or statement) per account and period, whatever runs at once.
CREATE UNIQUE INDEX invoices_one_per_period ON invoices (account_id, period, kind)
    WHERE kind <> 'credit_note';
CREATE INDEX invoices_period ON invoices (period, account_id);
CREATE INDEX invoices_refers ON invoices (refers_to) WHERE refers_to IS NOT NULL;
CREATE INDEX invoices_due ON invoices (due_at) WHERE kind = 'invoice';

CREATE TABLE invoice_lines (
    invoice_id   BIGINT  NOT NULL REFERENCES invoices (id),
    line_no      INTEGER NOT NULL,
    kind         TEXT    NOT NULL,  -- usage, subscription, charge, credit, rerate, correction
    description  TEXT    NOT NULL,
    quantity     NUMERIC NOT NULL,
    unit         TEXT    NOT NULL,
    calls        BIGINT  NOT NULL DEFAULT 0,
    billed_s     BIGINT  NOT NULL DEFAULT 0,
    exact_micros BIGINT  NOT NULL,  -- before rounding to the minor unit
    amount_micros BIGINT NOT NULL,  -- net, rounded to the minor unit
    tax_micros   BIGINT  NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

-- One-off charges (setup fee) and credits; invoice_id: the invoice that billed it.
CREATE TABLE account_charges (
    id            BIGSERIAL   PRIMARY KEY,
    account_id    TEXT        NOT NULL,
    kind          TEXT        NOT NULL CHECK (kind IN ('charge', 'credit')),
    description   TEXT        NOT NULL CHECK (description <> ''),
    amount_micros BIGINT      NOT NULL CHECK (amount_micros > 0),
    charge_date   DATE        NOT NULL,
    reference     TEXT        NOT NULL UNIQUE,  -- makes `ctl charge add` idempotent
    invoice_id    BIGINT      REFERENCES invoices (id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by    TEXT        NOT NULL
);
CREATE INDEX account_charges_open ON account_charges (account_id) WHERE invoice_id IS NULL;

-- The usage each invoice or statement counted, per period it covered: the current
-- one, and earlier ones re-counted (late CDRs, corrected charges).
CREATE TABLE invoice_usage (
    invoice_id     BIGINT      NOT NULL REFERENCES invoices (id),
    account_id     TEXT        NOT NULL,
    period         TEXT        NOT NULL,
    period_start   TIMESTAMPTZ NOT NULL,
    period_end     TIMESTAMPTZ NOT NULL,
    calls          BIGINT      NOT NULL,
    charged_micros BIGINT      NOT NULL,
    PRIMARY KEY (invoice_id, period)
);
CREATE INDEX invoice_usage_account ON invoice_usage (account_id, period_end);

-- Rerate adjustments billed on an invoice (each one once).
CREATE TABLE invoiced_rerates (
    run_id     TEXT   NOT NULL,
    account_id TEXT   NOT NULL,
    currency   TEXT   NOT NULL,
    invoice_id BIGINT NOT NULL REFERENCES invoices (id),
    PRIMARY KEY (run_id, account_id, currency)
);

-- Issued documents never change: corrections are credit notes.
CREATE FUNCTION invoices_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'issued invoices never change (% on %): issue a credit note instead',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();
CREATE TRIGGER invoice_usage_immutable BEFORE UPDATE OR DELETE ON invoice_usage
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();
CREATE TRIGGER invoiced_rerates_immutable BEFORE UPDATE OR DELETE ON invoiced_rerates
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();

-- Payments, idempotent on the payer's reference.
CREATE TABLE payments (
    id            BIGSERIAL   PRIMARY KEY,
    reference     TEXT        NOT NULL UNIQUE,
    account_id    TEXT        NOT NULL,
    invoice_id    BIGINT      NOT NULL REFERENCES invoices (id),
    amount_micros BIGINT      NOT NULL CHECK (amount_micros > 0),
    currency      TEXT        NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by    TEXT        NOT NULL
);
CREATE INDEX payments_invoice ON payments (invoice_id);

-- What invoicing owes the ledger (postpaid): an invoice's charges and tax, a credit
-- note, a payment. Recorded with the document, posted after commit with txn_id (the
-- ledger applies it once), retried until posted_at is set.
CREATE TABLE ledger_postings (
    txn_id        TEXT        PRIMARY KEY,
    account_id    TEXT        NOT NULL,
    currency      TEXT        NOT NULL,
    amount_micros BIGINT      NOT NULL CHECK (amount_micros <> 0),
    why           TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    posted_at     TIMESTAMPTZ
);
CREATE INDEX ledger_postings_pending ON ledger_postings (created_at) WHERE posted_at IS NULL;

-- Every suspension and reactivation the dunning loop made, and why.
CREATE TABLE dunning_events (
    id         BIGSERIAL   PRIMARY KEY,
    account_id TEXT        NOT NULL,
    action     TEXT        NOT NULL CHECK (action IN ('suspend', 'reactivate')),
    invoice_id BIGINT      REFERENCES invoices (id),
    detail     TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dunning_events_account ON dunning_events (account_id, at);
