-- 0003: the audit log (who did what, when, from where, with what result;
-- `GET /api/v1/audit`), written in the same transaction as the action it
-- records and pruned by age (`audit_retention_days`); and the notification outbox.

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

-- The notification outbox: a row per notification, inserted in the
-- transaction of the event that causes it, delivered at least once.
CREATE TABLE opal_outbox (
    id          text COLLATE "C" PRIMARY KEY,   -- ULID: the X-Opal-Delivery id
    op_id       text COLLATE "C" NOT NULL,
    state       text   NOT NULL,                -- pending | delivered | dead
    next_at_ms  bigint NOT NULL,
    data        text   NOT NULL                 -- the notification, as the API serves it
);
CREATE INDEX opal_outbox_due ON opal_outbox (next_at_ms) WHERE state = 'pending';
CREATE INDEX opal_outbox_operation ON opal_outbox (op_id, id);
