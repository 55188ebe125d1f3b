-- 0002: workflows, retries and the pausable queue.
--
-- * `waiting` (a workflow run at an approval gate) holds its slot and its
--   owner's lease like `running`, so the partial indexes include it.
-- * `next_attempt_ms`: a failed attempt waiting for its retry is `pending`
--   but not claimable before this time (Unix ms).
-- * `parent`: the workflow run an operation is a step of, for its children's
--   listing.
-- * `opal_meta.queue_paused`: while true, no node claims anything.

ALTER TABLE opal_operations ADD COLUMN next_attempt_ms bigint;
ALTER TABLE opal_operations ADD COLUMN parent text COLLATE "C";

DROP INDEX opal_operations_active;
CREATE UNIQUE INDEX opal_operations_active ON opal_operations (slot, target)
    WHERE status IN ('pending', 'running', 'waiting');
DROP INDEX opal_operations_running;
CREATE INDEX opal_operations_running ON opal_operations (owner, lease_until)
    WHERE status IN ('running', 'waiting');
CREATE INDEX opal_operations_parent ON opal_operations (parent, id) WHERE parent IS NOT NULL;
CREATE INDEX opal_operations_retry ON opal_operations (next_attempt_ms)
    WHERE status = 'pending' AND next_attempt_ms IS NOT NULL;

ALTER TABLE opal_meta ADD COLUMN queue_paused boolean NOT NULL DEFAULT false;
