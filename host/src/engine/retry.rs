//! Retries: a failed attempt whose error code its retry policy names goes
//! back to the queue as the next attempt of the same operation, due after
//! the policy's backoff. It stays one operation: `attempt` goes up,
//! `next_attempt_at` says when the next one may start, the event is
//! `operation.retry_scheduled`, and it keeps its exclusivity slot. Only the
//! last attempt's outcome is terminal.

use std::time::Duration;

use crate::model::{Operation, Status, Timestamp, unit_random};

/// Turns `op`, just failed, into its next attempt if its policy retries the
/// failure; returns the delay if it does.
pub(super) fn schedule(op: &mut Operation) -> Option<Duration> {
    let policy = op.retry.as_ref()?;
    let error = op.error.as_ref()?;
    if op.status != Status::Failed || !policy.retries(op.attempt, &error.code) {
        return None;
    }
    let delay = policy.delay(op.attempt, unit_random());
    let due = Timestamp::from(Timestamp::now().system_time() + delay);
    op.message = format!(
        "attempt {} of {} failed ({}): {}; retrying in {}",
        op.attempt,
        policy.attempts,
        error.code,
        error.message,
        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
    );
    op.status = Status::Pending;
    op.attempt += 1;
    op.next_attempt_at = Some(due);
    op.started_at = None;
    op.finished_at = None;
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OpError, RetryPolicy, RetrySection};

    fn failed(code: &str, policy: &str) -> Operation {
        let mut op = Operation::pending("demo", "0.1.0", "t", serde_json::json!({}), "api");
        let section: RetrySection = toml::from_str(policy).unwrap();
        op.retry = Some(RetryPolicy::from_section(&section).unwrap());
        op.status = Status::Failed;
        op.finished_at = Some(Timestamp::now());
        op.error = Some(OpError::new(code, "boom"));
        op
    }

    #[test]
    fn a_named_failure_becomes_the_next_attempt() {
        let mut op = failed("plugin_error", "attempts = 3\ninitial = \"2s\"\njitter = 0.0");
        assert_eq!(schedule(&mut op), Some(Duration::from_secs(2)));
        assert_eq!((op.status, op.attempt, op.finished_at), (Status::Pending, 2, None));
        assert!(op.next_attempt_at.is_some() && op.message.contains("retrying in 2s"), "{}", op.message);
        op.status = Status::Failed;
        assert_eq!(schedule(&mut op), Some(Duration::from_secs(4)), "exponential");
        op.status = Status::Failed;
        assert_eq!(schedule(&mut op), None, "three attempts in all");
    }

    #[test]
    fn other_codes_and_validation_errors_are_final() {
        assert_eq!(schedule(&mut failed("trap", "attempts = 3")), None);
        assert_eq!(schedule(&mut failed("invalid_params", "attempts = 3")), None);
    }
}
