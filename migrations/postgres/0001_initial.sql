-- 0001: Opal's cluster schema.
--
-- The database decides what the nodes may not decide alone:
-- * opal_operations_active: at most one pending or running operation per
--   (slot, target), where the slot is the type or `group:<name>`;
-- * opal_operations_idempotency: one operation per idempotency key;
-- * opal_meta.last_seq: the counter row every event-writing transaction
--   updates just before it commits, so seqs are dense and commit-ordered
--   across every node (a sequence would hand out numbers that commit out of
--   order, and readers following `seq > last` would skip events).
-- Records are stored as the JSON the API serves (`data`); the columns beside
-- it are what queries filter, lock and fence on.

CREATE TABLE opal_meta (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    history   bigint  NOT NULL,
    last_seq  bigint  NOT NULL DEFAULT 0
);
INSERT INTO opal_meta (history) VALUES (greatest(1, (random() * 9.2e18)::bigint));

CREATE TABLE opal_operations (
    id                  text COLLATE "C" PRIMARY KEY,  -- ULID: sorts by creation time
    type                text    NOT NULL,
    target              text    NOT NULL,
    slot                text    NOT NULL,
    status              text    NOT NULL,
    attempt             integer NOT NULL,
    owner               text,                          -- the node running it
    lease_until         timestamptz,                   -- the owner's lease, by the database's clock
    cancel_requested_by text,                          -- a cancel for the owner to act on
    idempotency_key     text,
    created_by          text    NOT NULL,
    finished_at_ms      bigint,
    data                text    NOT NULL
);
CREATE UNIQUE INDEX opal_operations_active ON opal_operations (slot, target)
    WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX opal_operations_idempotency ON opal_operations (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX opal_operations_pending ON opal_operations (id) WHERE status = 'pending';
CREATE INDEX opal_operations_running ON opal_operations (owner, lease_until) WHERE status = 'running';

CREATE TABLE opal_events (
    seq    bigint PRIMARY KEY,
    op_id  text COLLATE "C" NOT NULL,
    frame  text NOT NULL
);
CREATE INDEX opal_events_operation ON opal_events (op_id, seq);

CREATE TABLE opal_schedules (
    id            text COLLATE "C" PRIMARY KEY,
    data          text   NOT NULL,
    last_fire_ms  bigint                         -- the last fire time a node claimed
);
