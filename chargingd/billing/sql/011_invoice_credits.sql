-- A negative invoice's credit settles the account's owed invoices oldest first, each up
-- to what it still owes; what is left stays on the account (its ledger balance, which
-- the invoice's posting moves in full either way). Each part is a row here, written
-- with the negative invoice and never changed (chargingd/invoicing/run.py). Until now a
-- negative invoice referred to one invoice (refers_to, migration 010) and its whole
-- credit counted against that one, however little it owed: those are copied here as
-- they counted, so what any invoice owes is read from this table alone. refers_to of a
-- negative invoice now names the first invoice it settles (shown, not counted).
CREATE TABLE invoice_credits (
    credit_id     BIGINT NOT NULL REFERENCES invoices (id),  -- the negative invoice
    invoice_id    BIGINT NOT NULL REFERENCES invoices (id),  -- an invoice it settles
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    PRIMARY KEY (credit_id, invoice_id)
);
CREATE INDEX invoice_credits_invoice ON invoice_credits (invoice_id);
CREATE TRIGGER invoice_credits_immutable BEFORE UPDATE OR DELETE ON invoice_credits
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();

INSERT INTO invoice_credits (credit_id, invoice_id, amount_micros)
SELECT id, refers_to, -total_micros FROM invoices
WHERE kind = 'invoice' AND refers_to IS NOT NULL AND total_micros < 0;
