-- journal_tail: an account's balance, lifetime totals and newest journal entry, read at
-- one moment (revenue assurance compares them: docs/assurance.md). Read-only.
-- KEYS[1] acct hash   KEYS[2] journal stream
-- Returns {} (no account) | {{balance, initial, topups, debits, currency}, newest entry}
-- where the newest entry is {} (no journal) or {id, {field, value, ...}}.
local a = redis.call('HMGET', KEYS[1], 'balance', 'initial', 'topups', 'debits', 'currency')
if not a[1] then return {} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {a, last[1] or {}}
