-- 0003: the audit log: who did what, when, from where, and with what result
-- (`GET /api/v1/audit`). Written in the same transaction as the action it
-- records; pruned by age (`audit_retention_days`).

CREATE TABLE opal_audit (
    id         text COLLATE "C" PRIMARY KEY,   -- ULID: sorts by time
    at_ms      bigint NOT NULL,
    principal  text   NOT NULL,
    action     text   NOT NULL,
    object     text   NOT NULL,
    result     text   NOT NULL,
    data       text   NOT NULL                 -- the entry, as the API serves it
);
CREATE INDEX opal_audit_at ON opal_audit (at_ms);
CREATE INDEX opal_audit_principal ON opal_audit (principal, id);
CREATE INDEX opal_audit_action ON opal_audit (action, id);
