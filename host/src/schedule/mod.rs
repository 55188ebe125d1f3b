//! `schedule`: recurring operations on a cron.
//!
//! Owns the schedules (in memory, mirrored durably through the store) and the
//! timer task that fires them. A firing goes through `Engine::submit` like any
//! request, with `created_by: schedule:<id>`: if the previous operation is
//! still active on the target, admission refuses it and the fire is recorded
//! as skipped, never as a duplicate. Times are UTC. Fires missed while the
//! server was down are not made up; the next one is computed from now.
//!
//! The table is bounded (`max_schedules`): every schedule is a timer entry
//! and a record, and each one starts operations on its own, so their number
//! must not be up to whoever may create them.
//!
//! In a cluster every node runs the timer. Before it fires, a node takes the
//! fire time in the store ([`Change::ClaimFire`]): one node wins each fire
//! time, so a schedule fires once, whichever nodes are up. Each node reloads
//! the table from the store every [`REFRESH`], to see schedules made, changed
//! and deleted on the others.

mod model;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use model::{RunOutcome, Schedule, ScheduleId, ScheduleRun};

use crate::engine::{Engine, SubmitError, SubmitRequest, Submitted};
use crate::model::{FieldError, Timestamp};
use crate::store::{Change, Store, StoreError};

/// How often a node of a cluster reloads the schedules from the store.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// A request to create a schedule, already checked for shape by the API.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Cron expression.
    pub cron: String,
    /// Operation type.
    pub op_type: String,
    /// Target.
    pub target: String,
    /// Params.
    pub params: serde_json::Value,
    /// Who asks (the principal's audit name), recorded as the schedule's `created_by`.
    pub created_by: String,
    /// The audit entry recorded with the schedule (its object becomes the schedule's id).
    pub audit: Option<crate::model::AuditEntry>,
}

/// Why a schedule could not be created or found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid schedule")]
    Invalid(Vec<FieldError>),
    /// The operation could not be checked (unknown type, invalid params...).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// No such schedule.
    #[error("no schedule {0}")]
    NotFound(ScheduleId),
    /// The server holds `max_schedules` schedules already.
    #[error("the server has {0} schedules, the most it keeps (max_schedules); delete one first")]
    Full(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to the schedules. Cheap to clone.
#[derive(Clone)]
pub struct Schedules {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Engine,
    /// The schedules and their parsed crons. A std mutex: never held across an await.
    table: Mutex<HashMap<ScheduleId, (Schedule, Cron)>>,
    /// Wakes the timer when the table changes.
    changed: Notify,
    /// Most schedules at once.
    max: usize,
    /// Schedules held or being created: a place is taken before the slow
    /// checks and the commit, so concurrent creates cannot overshoot `max`.
    places: AtomicUsize,
}

/// Parses a cron expression (5 fields, or 6 with seconds first).
fn parse_cron(text: &str) -> Result<Cron, FieldError> {
    Cron::from_str(text).map_err(|e| FieldError::new("cron", format!("not a cron expression: {e}")))
}

fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp::from(std::time::SystemTime::from(time))
}

impl Schedules {
    /// Loads the stored schedules and starts the timer; at most `max` may be
    /// created (stored ones over it are kept, and block creating more).
    pub async fn start(
        store: Store,
        engine: Engine,
        max: usize,
        shutdown: CancellationToken,
    ) -> Result<Schedules, StoreError> {
        let now = Utc::now();
        let mut table = HashMap::new();
        for mut schedule in store.schedules().await? {
            match parse_cron(&schedule.cron) {
                Ok(cron) => {
                    schedule.next_run_at = next_after(&cron, now).map(timestamp);
                    table.insert(schedule.id, (schedule, cron));
                }
                Err(e) => tracing::error!(schedule = %schedule.id, error = %e.message, "stored schedule skipped"),
            }
        }
        let places = AtomicUsize::new(table.len());
        let inner = Inner { store, engine, table: Mutex::new(table), changed: Notify::new(), max, places };
        let schedules = Schedules { inner: Arc::new(inner) };
        let timer = schedules.clone();
        tokio::spawn(async move { shutdown.run_until_cancelled(timer.run()).await });
        Ok(schedules)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ScheduleId, (Schedule, Cron)>> {
        self.inner.table.lock().expect("schedule table poisoned")
    }

    /// Creates a schedule after checking its cron, type and params.
    pub async fn create(&self, request: NewSchedule) -> Result<Schedule, ScheduleError> {
        let places = &self.inner.places;
        let max = self.inner.max;
        places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| ScheduleError::Full(max))?;
        let created = self.create_in_place(request).await;
        if created.is_err() {
            places.fetch_sub(1, Ordering::AcqRel);
        }
        created
    }

    async fn create_in_place(&self, request: NewSchedule) -> Result<Schedule, ScheduleError> {
        let cron = parse_cron(&request.cron).map_err(|e| ScheduleError::Invalid(vec![e]))?;
        let Some(first) = next_after(&cron, Utc::now()) else {
            return Err(ScheduleError::Invalid(vec![FieldError::new("cron", "never fires")]));
        };
        self.inner.engine.check(&request.op_type, None, &request.params).await?;
        let schedule = Schedule {
            id: ScheduleId::new(),
            cron: request.cron,
            op_type: request.op_type,
            target: request.target,
            params: request.params,
            created_at: Timestamp::now(),
            created_by: Some(request.created_by),
            next_run_at: Some(timestamp(first)),
            runs: 0,
            skipped: 0,
            failed: 0,
            recent_runs: Vec::new(),
        };
        let put = Change::PutSchedule(Arc::new(schedule.clone()));
        let change = match request.audit {
            Some(mut entry) => {
                entry.object = schedule.id.to_string();
                entry.detail = Some(format!("{} on {} at {}", schedule.op_type, schedule.target, schedule.cron));
                Change::Audited { change: Box::new(put), entry: Box::new(entry) }
            }
            None => put,
        };
        self.inner.store.commit(change).await?;
        self.lock().insert(schedule.id, (schedule.clone(), cron));
        self.inner.changed.notify_one();
        Ok(schedule)
    }

    /// Every schedule, oldest first.
    pub fn list(&self) -> Vec<Schedule> {
        let mut all: Vec<Schedule> = self.lock().values().map(|(s, _)| s.clone()).collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// One schedule.
    pub fn get(&self, id: ScheduleId) -> Option<Schedule> {
        self.lock().get(&id).map(|(s, _)| s.clone())
    }

    /// Deletes a schedule; operations it created are kept.
    pub async fn delete(&self, id: ScheduleId, audit: Option<crate::model::AuditEntry>) -> Result<(), ScheduleError> {
        if self.lock().remove(&id).is_none() {
            return Err(ScheduleError::NotFound(id));
        }
        self.inner.places.fetch_sub(1, Ordering::AcqRel);
        let delete = Change::DeleteSchedule(id);
        let change = match audit {
            Some(entry) => Change::Audited { change: Box::new(delete), entry: Box::new(entry) },
            None => delete,
        };
        self.inner.store.commit(change).await?;
        self.inner.changed.notify_one();
        Ok(())
    }

    /// The timer: sleeps until the earliest fire, fires what is due, repeats.
    async fn run(self) {
        loop {
            let next = self.lock().values().filter_map(|(s, _)| s.next_run_at).min();
            let wait = match next {
                Some(at) => {
                    let due = std::time::SystemTime::from(chrono_of(at));
                    due.duration_since(std::time::SystemTime::now()).unwrap_or_default()
                }
                None => std::time::Duration::from_secs(3600),
            };
            let refresh = if self.inner.store.shared() { REFRESH } else { std::time::Duration::from_secs(3600) };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.changed.notified() => continue,
                () = tokio::time::sleep(refresh), if self.inner.store.shared() => {
                    self.refresh().await;
                    continue;
                }
            }
            self.fire_due().await;
        }
    }

    async fn fire_due(&self) {
        let now = Utc::now();
        let due: Vec<Schedule> = self
            .lock()
            .values()
            .filter(|(s, _)| s.next_run_at.is_some_and(|at| chrono_of(at) <= now))
            .map(|(s, _)| s.clone())
            .collect();
        for schedule in due {
            let at_ms = schedule.next_run_at.map_or(0, |at| chrono_of(at).timestamp_millis());
            let mine = match self.inner.store.commit(Change::ClaimFire { id: schedule.id, at_ms }).await {
                Ok(receipt) => receipt.count == 1,
                Err(e) => {
                    tracing::warn!(schedule = %schedule.id, error = %e, "cannot take a schedule's fire; skipped");
                    false
                }
            };
            if !mine {
                // Another node fires this one; just move on to the next time.
                if let Some((current, cron)) = self.lock().get_mut(&schedule.id) {
                    current.next_run_at = next_after(cron, now).map(timestamp);
                }
                continue;
            }
            let run = self.fire(&schedule).await;
            let updated = {
                let mut table = self.lock();
                let Some((current, cron)) = table.get_mut(&schedule.id) else { continue }; // deleted meanwhile
                current.record(run);
                current.next_run_at = next_after(cron, now).map(timestamp);
                current.clone()
            };
            if let Err(e) = self.inner.store.commit(Change::PutSchedule(Arc::new(updated))).await {
                tracing::error!(schedule = %schedule.id, error = %e, "cannot record a schedule run");
            }
        }
    }

    /// Takes the store's schedules as the table: new ones are added, deleted
    /// ones dropped, and the records of the others (their runs, recorded by
    /// whichever node fired them) replaced, keeping the local timer.
    async fn refresh(&self) {
        let stored = match self.inner.store.schedules().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the schedules");
                return;
            }
        };
        let now = Utc::now();
        let mut table = self.lock();
        let ids: std::collections::HashSet<ScheduleId> = stored.iter().map(|s| s.id).collect();
        table.retain(|id, _| ids.contains(id));
        for mut schedule in stored {
            match table.get_mut(&schedule.id) {
                Some((current, _)) => {
                    schedule.next_run_at = current.next_run_at;
                    *current = schedule;
                }
                None => {
                    let Ok(cron) = parse_cron(&schedule.cron) else { continue };
                    schedule.next_run_at = next_after(&cron, now).map(timestamp);
                    table.insert(schedule.id, (schedule, cron));
                }
            }
        }
        self.inner.places.store(table.len(), Ordering::Release);
    }

    async fn fire(&self, schedule: &Schedule) -> ScheduleRun {
        let request = SubmitRequest {
            op_type: schedule.op_type.clone(),
            target: schedule.target.clone(),
            params: schedule.params.clone(),
            created_by: format!("schedule:{}", schedule.id),
            idempotency_key: None,
            version: None,
            child: None,
            audit: None,
        };
        let at = Timestamp::now();
        let (outcome, operation_id, message) = match self.inner.engine.submit(request).await {
            Ok(Submitted::Created(op) | Submitted::Replayed(op)) => {
                (RunOutcome::Started, Some(op.id), "operation created".to_owned())
            }
            Err(SubmitError::Busy(active)) => (
                RunOutcome::Skipped,
                Some(active.id),
                format!("skipped: operation {} is still {}", active.id, active.status.as_str()),
            ),
            Err(e) => (RunOutcome::Failed, None, e.to_string()),
        };
        tracing::info!(schedule = %schedule.id, outcome = ?outcome, "schedule fired");
        ScheduleRun { at, outcome, operation_id, message }
    }
}

/// A [`Timestamp`] as a chrono time, for cron arithmetic.
fn chrono_of(at: Timestamp) -> DateTime<Utc> {
    DateTime::<Utc>::from(at.system_time())
}
