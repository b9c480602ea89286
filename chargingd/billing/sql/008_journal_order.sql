-- 008: the journal's chain is checked in the order the entries were written (their
-- stream id, Redis's clock), not by the caller's clock (at): entries of a period by id.
CREATE INDEX ledger_journal_entry ON ledger_journal (entry_ms);
