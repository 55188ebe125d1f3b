//! The schedule record and its id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::model::{OperationId, Timestamp};

/// How many past runs a schedule keeps in its record.
pub(crate) const RECENT_RUNS: usize = 20;

/// A schedule's id (a ULID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScheduleId(Ulid);

impl ScheduleId {
    /// A fresh id.
    pub fn new() -> Self {
        ScheduleId(Ulid::new())
    }
    /// The store key.
    pub fn to_key(self) -> u128 {
        self.0.0
    }
    /// From a store key.
    pub fn from_key(key: u128) -> Self {
        ScheduleId(Ulid(key))
    }
}

impl Default for ScheduleId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ScheduleId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(ScheduleId)
    }
}

/// What happened when a schedule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// An operation was created.
    Started,
    /// The previous operation was still active on the target; nothing was created.
    Skipped,
    /// The operation could not be created (e.g. the plugin is gone).
    Failed,
}

/// One firing of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRun {
    /// When it fired.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// What happened.
    pub outcome: RunOutcome,
    /// The operation created, or the active one that caused a skip.
    #[schema(value_type = Option<String>)]
    pub operation_id: Option<OperationId>,
    /// Why, in words.
    pub message: String,
}

/// A recurring operation: `type` on `target` with `params`, on a cron.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    /// Its id.
    #[schema(value_type = String)]
    pub id: ScheduleId,
    /// Cron expression, UTC; 5 fields, or 6 with seconds first.
    pub cron: String,
    /// Operation type.
    #[serde(rename = "type")]
    pub op_type: String,
    /// Target.
    pub target: String,
    /// Params for every operation it creates.
    pub params: serde_json::Value,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it fires next.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run_at: Option<Timestamp>,
    /// Operations it created.
    pub runs: u64,
    /// Fires skipped because the previous operation was still active.
    pub skipped: u64,
    /// Fires that failed to create an operation.
    pub failed: u64,
    /// The latest fires, newest first (at most [`RECENT_RUNS`]).
    pub recent_runs: Vec<ScheduleRun>,
}

impl Schedule {
    /// Records a firing.
    pub fn record(&mut self, run: ScheduleRun) {
        match run.outcome {
            RunOutcome::Started => self.runs += 1,
            RunOutcome::Skipped => self.skipped += 1,
            RunOutcome::Failed => self.failed += 1,
        }
        self.recent_runs.insert(0, run);
        self.recent_runs.truncate(RECENT_RUNS);
    }
}
