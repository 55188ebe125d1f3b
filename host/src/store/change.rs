//! What callers ask of a store, whichever backend is underneath: the changes
//! to record, what a commit returns, and the requests of a cluster's nodes
//! (claims and lease renewals).

use std::sync::Arc;
use std::time::Duration;

use crate::model::{AuditEntry, Event, EventKind, LogLevel, Operation, OperationId, Seq, Timestamp};
use crate::schedule::{Schedule, ScheduleId};

/// Where committed events go (the hub). Called in seq order, after the
/// commit, with every event of every node; it must not block.
pub trait Publish: Send + Sync + 'static {
    /// Hands over one committed batch.
    fn publish(&self, events: Vec<Event>);
}

/// What the stored operation must still be for a transition to apply. This is
/// the fence: a runner whose lease was taken over (its attempt re-queued or
/// failed by another node) can change nothing, and a cancel of a pending
/// operation loses to the claim that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Running or waiting, with the same attempt and owner (`node`) as the
    /// operation carried by the change: the runner's (or a workflow
    /// driver's) own writes.
    Runner,
    /// Waiting at an approval gate, with the same attempt: a decision, by
    /// whichever node takes it (of two decisions, the first wins).
    Waiting,
    /// Pending, with the same attempt: a cancel before it started.
    Pending,
    /// Not ended, with the same attempt, and (in a shared store) running on
    /// an expired lease or owned by the node that recovers it: recovery and
    /// the reaper.
    Orphan,
}

/// One change to record.
#[derive(Debug)]
pub enum Change {
    /// Records a new `pending` operation (event `operation.created`), if its
    /// idempotency key is new and its slot on the target is free; otherwise
    /// refused with [`StoreError::Replay`](super::StoreError::Replay) or
    /// [`StoreError::SlotTaken`](super::StoreError::SlotTaken). The check and
    /// the insert are one step, so concurrent identical requests admit
    /// exactly one operation, whichever nodes they reach.
    Admit {
        /// The pending operation.
        operation: Arc<Operation>,
    },
    /// The operation's new state, and the event that says why it changed. A
    /// terminal kind releases its slot; `Requeued` and `RetryScheduled` make
    /// it claimable again (the latter from its `next_attempt_at`).
    /// Refused with [`StoreError::Fenced`](super::StoreError::Fenced) unless
    /// the stored operation is still what `expect` says.
    Operation {
        /// What happened.
        kind: EventKind,
        /// The operation after it happened (shared with the published event).
        operation: Arc<Operation>,
        /// When it happened.
        at: Timestamp,
        /// The fence.
        expect: Expect,
    },
    /// A line for a running operation's log (fenced like [`Expect::Runner`]).
    Log {
        /// The operation.
        op_id: OperationId,
        /// The attempt that wrote it.
        attempt: u32,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
        /// When it was written.
        at: Timestamp,
    },
    /// Starts up to `max` pending operations on `node`, oldest first (see
    /// [`Claim`]); each gets `operation.started`.
    Claim(Claim),
    /// Asks the node running `id` to cancel it (a shared store's owner sees
    /// the request at its next lease renewal).
    RequestCancel {
        /// The operation.
        id: OperationId,
        /// Who asks.
        by: String,
    },
    /// Drops `active` entries whose holder is missing or already ended.
    ReconcileActive,
    /// Deletes up to `max` operations that ended before `before`, with their
    /// events and idempotency keys.
    Prune {
        /// Cut-off.
        before: Timestamp,
        /// Most operations removed by one change.
        max: usize,
    },
    /// Creates or replaces a schedule.
    PutSchedule(Arc<Schedule>),
    /// Deletes a schedule.
    DeleteSchedule(ScheduleId),
    /// `change`, with the audit entry that records it, in the same
    /// transaction: the entry's `result` says whether the change applied
    /// (`ok`) or was refused (`refused: <why>`).
    Audited {
        /// The action.
        change: Box<Change>,
        /// Its record.
        entry: Box<AuditEntry>,
    },
    /// A notification's new state (after a delivery attempt), or a new one
    /// (`running_longer`): pending ones stay in the outbox.
    PutNotification(Box<crate::model::Notification>),
    /// An audit entry alone (a refused authorization: nothing else to write).
    Audit(Box<AuditEntry>),
    /// Deletes up to `max` audit entries older than `before`.
    PruneAudit {
        /// Cut-off.
        before: Timestamp,
        /// Most entries removed by one change.
        max: usize,
    },
    /// Pauses (`true`) or resumes the queue, store-wide: while it is paused,
    /// claims start nothing.
    SetPaused(bool),
    /// Takes the fire of `id` due at `at` for this node; refused (count 0) if
    /// another node took it, so a schedule fires once per fire time.
    ClaimFire {
        /// The schedule.
        id: ScheduleId,
        /// The fire time, in Unix milliseconds.
        at_ms: i64,
    },
}

/// Which pending operations a node takes.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The node that will run them.
    pub node: String,
    /// Most operations taken.
    pub max: usize,
    /// Only these types (the plugins this node has).
    pub types: Vec<String>,
    /// Per-type limits on running operations, store-wide.
    pub limits: Vec<(String, usize)>,
    /// How long the claimed operations' lease lasts before it is renewed.
    pub lease: Duration,
}

/// What a committed change produced.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    /// The seq of its (last) event, if it recorded one.
    pub seq: Option<Seq>,
    /// How many records it removed, repaired or took.
    pub count: usize,
    /// The operations a [`Change::Claim`] started, now `running` on the node.
    pub claimed: Vec<Operation>,
    /// For a claim: how many operations are still pending.
    pub pending: usize,
    /// For a claim: whether the queue is paused (it then claimed nothing).
    pub paused: bool,
    /// For a claim: the earliest `next_attempt_at` of the operations left
    /// pending because their retry is not due yet.
    pub wake_at: Option<Timestamp>,
}

/// A node's lease renewal: what it still holds, and what it was asked.
#[derive(Debug, Clone, Default)]
pub struct Renewal {
    /// The running operations this node still owns, with their attempts.
    pub held: Vec<(OperationId, u32)>,
    /// Cancels requested on other nodes: (operation, who asked).
    pub cancels: Vec<(OperationId, String)>,
}
