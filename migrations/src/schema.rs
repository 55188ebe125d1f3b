//! The tables of the current schema version.
//!
//! Keys are chosen so the common reads are range scans:
//! - operation ids are ULIDs stored as `u128`, so key order is creation order;
//! - events are keyed `(operation, seq)`, so one operation's history is one range;
//! - `active` maps `(type, target)` to the operation holding it, which is what
//!   duplicate prevention checks.
//!
//! Values are JSON documents (`&[u8]`): the records evolve by adding optional
//! fields, which JSON absorbs without a migration.

use redb::TableDefinition;

/// `meta`: `schema_version` and other small counters.
pub const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// `meta` key of the schema version.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// `meta` key: the file's history id (see `MigrateReport::history`).
pub const HISTORY_KEY: &str = "history_id";
/// `meta` key of the last event sequence number handed out.
pub const LAST_SEQ_KEY: &str = "last_seq";

/// `operations`: operation id → the operation record (JSON).
pub const OPERATIONS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("operations");
/// `events`: (operation id, seq) → the event record (JSON).
pub const EVENTS: TableDefinition<'_, (u128, u64), &[u8]> = TableDefinition::new("events");
/// `active`: (slot, target) → id of the pending or running operation. The
/// slot is the operation's type, or `group:<name>` for an exclusivity group.
pub const ACTIVE: TableDefinition<'_, (&str, &str), u128> = TableDefinition::new("active");
/// `idempotency`: a client's idempotency key → the operation it created (since version 2).
pub const IDEMPOTENCY: TableDefinition<'_, &str, u128> = TableDefinition::new("idempotency");
/// `schedules`: schedule id → the schedule record (JSON).
pub const SCHEDULES: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("schedules");
/// `event_order`: seq → the operation whose event it is (since version 3), so
/// events can be read back in global seq order.
pub const EVENT_ORDER: TableDefinition<'_, u64, u128> = TableDefinition::new("event_order");

/// `audit`: audit entry id (a ULID, so key order is time order) → the entry
/// (JSON) (since version 4).
pub const AUDIT: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("audit");
/// `outbox`: notification id (a ULID) → a pending notification (JSON) (since version 4).
pub const OUTBOX: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("outbox");
/// `delivered`: notification id → a delivered or dead notification (JSON) (since version 4).
pub const DELIVERED: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("delivered");
