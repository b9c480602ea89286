-- An invoice whose total is negative (the corrections of earlier periods, a rerate that
-- lowered calls already invoiced, exceed what its own period charges) refers to the
-- account's oldest invoice still owed, whose outstanding its credit lowers as a credit
-- note's does (chargingd/invoicing/run.py): dunning then never suspends for an invoice
-- the customer no longer owes. Credit notes still always refer to an invoice,
-- statements never, a positive invoice never.
ALTER TABLE invoices DROP CONSTRAINT credit_note_refers;
ALTER TABLE invoices ADD CONSTRAINT credit_note_refers CHECK (
    CASE kind
        WHEN 'credit_note' THEN refers_to IS NOT NULL
        WHEN 'invoice' THEN refers_to IS NULL OR total_micros < 0
        ELSE refers_to IS NULL
    END
);
