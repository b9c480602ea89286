-- 009: mediation halves waiting for their other half: a call whose records a rotated
-- file split (a Kamailio INVITE in one hourly file, its BYE in the next; a Cisco Start
-- and its Stop). One row per (source, call key, kind); paired, stored or rejected
-- (pending longer than [mediation] pending_max_age_s), the row is deleted.
CREATE TABLE mediation_pending (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    head TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    since TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, key, kind)
);
CREATE INDEX mediation_pending_since ON mediation_pending (source, since);
