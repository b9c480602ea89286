-- 014: the call detail each invoice or statement billed, kept with it.
--
-- An issued document's call detail (`invoice calls`, the PDF appendix) was read
-- from the CDRs as they are now: after a rerate or a late correction a reprint listed
-- other amounts than the invoice billed. The run now copies the calls it counted, in
-- the same statement's snapshot as the usage it bills, into invoice_calls; the call
-- detail is read from there (immutable, like the document). Documents issued before
-- this migration have no copy (calls_kept false): their call detail is still the
-- CDRs as they are now, and says so when that no longer adds up to what the document
-- counted. No copy is made for them here: the CDRs may have changed since they were
-- issued, and a copy of today's state would claim to be what they billed.
CREATE TABLE invoice_calls (
    invoice_id     BIGINT      NOT NULL REFERENCES invoices (id),
    cdr_id         BIGINT      NOT NULL,  -- no foreign key: the copy outlives the CDR
    revision       INTEGER     NOT NULL,
    source         TEXT        NOT NULL,
    call_id        TEXT        NOT NULL,
    caller         TEXT        NOT NULL,
    callee         TEXT        NOT NULL,
    destination    TEXT        NOT NULL,
    start_time     TIMESTAMPTZ NOT NULL,
    answer_time    TIMESTAMPTZ,
    end_time       TIMESTAMPTZ NOT NULL,
    duration_s     INTEGER     NOT NULL,
    billed_s       INTEGER     NOT NULL,
    charged_micros BIGINT      NOT NULL,
    status         TEXT        NOT NULL
);
CREATE INDEX invoice_calls_invoice ON invoice_calls (invoice_id);
CREATE TRIGGER invoice_calls_immutable BEFORE UPDATE OR DELETE ON invoice_calls
    FOR EACH ROW EXECUTE FUNCTION invoices_are_immutable();
-- No rewrite, no row trigger: existing documents read false (no copy).
ALTER TABLE invoices ADD COLUMN calls_kept BOOLEAN NOT NULL DEFAULT false;
