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
    /// Who created it: `user:<name>`, or `api` in dev mode. `null` for a
    /// schedule stored before Opal recorded it (records are JSON, so an old
    /// one simply lacks the field).
    #[serde(default)]
    pub created_by: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule exactly as the store held it before `created_by` existed.
    const STORED_BEFORE_CREATED_BY: &str = r#"{"id":"01KAQ4ZB1W0C7GZJ5N3T8Y6M2D","cron":"0 3 * * *","type":"demo","target":"site-a/s","params":{"steps":1},"created_at":"2026-01-02T03:04:05.678Z","next_run_at":"2026-01-03T03:00:00Z","runs":2,"skipped":1,"failed":0,"recent_runs":[{"at":"2026-01-02T03:00:00.001Z","outcome":"skipped","operation_id":"01KAQ3ZB1W0C7GZJ5N3T8Y6M2D","message":"skipped: operation 01KAQ3ZB1W0C7GZJ5N3T8Y6M2D is still running"}]}"#;

    #[test]
    fn a_schedule_stored_before_created_by_still_reads() {
        let old: Schedule = serde_json::from_str(STORED_BEFORE_CREATED_BY).expect("an old record reads");
        assert_eq!((old.created_by.as_deref(), old.runs, old.recent_runs.len()), (None, 2, 1));
        let mut new = old.clone();
        new.created_by = Some("user:ann".into());
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""created_by":"user:ann""#), "{text}");
        assert_eq!(serde_json::from_str::<Schedule>(&text).unwrap(), new);
    }
}
