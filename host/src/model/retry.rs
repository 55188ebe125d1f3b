//! Retry policies: how often a failed attempt is tried again, and after how
//! long. Set per type in the config (`[types.X.retry]`) or per workflow step
//! (`retry = {...}`), and carried by the operation it applies to, so every
//! node (and a restarted one) retries it the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error codes a policy may name: every failure code but
/// `invalid_params` (a validation error is never retried).
const RETRYABLE_CODES: &[&str] =
    &["plugin_error", "timeout", "trap", "panic", "memory_limit", "cpu_limit", "interrupted", "internal"];

/// The codes retried when a policy names none.
const DEFAULT_CODES: &[&str] = &["plugin_error", "timeout"];

/// How the delay grows between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `initial`, then doubled at each attempt, up to `max`.
    Exponential,
    /// `initial` every time.
    Fixed,
}

/// A retry policy, as validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The delay before the second attempt, in milliseconds.
    pub initial_ms: u64,
    /// The longest delay, in milliseconds.
    pub max_ms: u64,
    /// The delay varies by up to this fraction either way (0 to 1).
    pub jitter: f64,
    /// Only failures with these error codes are retried.
    pub codes: Vec<String>,
}

/// A retry policy as written in TOML (`[types.X.retry]`, a step's `retry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// `exponential` (the default) or `fixed`.
    #[serde(default)]
    pub backoff: Option<String>,
    /// The first delay, e.g. `"1s"` (default 1 s).
    #[serde(default)]
    pub initial: Option<String>,
    /// The longest delay, e.g. `"5m"` (default 5 min).
    #[serde(default)]
    pub max: Option<String>,
    /// 0 to 1 (default 0.1).
    #[serde(default)]
    pub jitter: Option<f64>,
    /// The error codes to retry (default `plugin_error`, `timeout`).
    #[serde(default)]
    pub codes: Option<Vec<String>>,
}

impl RetryPolicy {
    /// Validates a section; the error names the field (`retry.initial: ...`).
    pub fn from_section(s: &RetrySection) -> Result<RetryPolicy, String> {
        if !(1..=100).contains(&s.attempts) {
            return Err(format!("retry.attempts: must be 1 to 100, not {}", s.attempts));
        }
        let backoff = match s.backoff.as_deref() {
            None | Some("exponential") => Backoff::Exponential,
            Some("fixed") => Backoff::Fixed,
            Some(other) => return Err(format!("retry.backoff: {other:?} is not \"exponential\" or \"fixed\"")),
        };
        let duration = |field: &str, text: Option<&str>, default: Duration| -> Result<Duration, String> {
            let Some(text) = text else { return Ok(default) };
            humantime::parse_duration(text).map_err(|e| format!("retry.{field}: {text:?} is not a duration: {e}"))
        };
        let initial = duration("initial", s.initial.as_deref(), Duration::from_secs(1))?;
        let max = duration("max", s.max.as_deref(), Duration::from_secs(300).max(initial))?;
        if initial.is_zero() || initial > Duration::from_secs(86_400) {
            return Err("retry.initial: must be above 0 and at most 1 day".into());
        }
        if max < initial || max > Duration::from_secs(86_400) {
            return Err("retry.max: must be at least retry.initial and at most 1 day".into());
        }
        let jitter = s.jitter.unwrap_or(0.1);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!("retry.jitter: must be between 0 and 1, not {jitter}"));
        }
        let codes = match &s.codes {
            None => DEFAULT_CODES.iter().map(|c| (*c).to_owned()).collect(),
            Some(codes) if codes.is_empty() => return Err("retry.codes: must name at least one error code".into()),
            Some(codes) => codes.clone(),
        };
        for code in &codes {
            if code == "invalid_params" {
                return Err(
                    "retry.codes: invalid_params cannot be retried (a validation error is never retried)".into()
                );
            }
            if !RETRYABLE_CODES.contains(&code.as_str()) {
                return Err(format!("retry.codes: {code:?} is not an error code ({})", RETRYABLE_CODES.join(", ")));
            }
        }
        Ok(RetryPolicy {
            attempts: s.attempts,
            backoff,
            initial_ms: initial.as_millis() as u64,
            max_ms: max.as_millis() as u64,
            jitter,
            codes,
        })
    }

    /// Whether a failure of `attempt` with `code` is tried again.
    pub fn retries(&self, attempt: u32, code: &str) -> bool {
        attempt < self.attempts && code != "invalid_params" && self.codes.iter().any(|c| c == code)
    }

    /// The delay before attempt `attempt + 1`, given `unit`, a random number
    /// in `[0, 1)` that places it within the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.initial_ms,
            Backoff::Exponential => {
                let doublings = attempt.saturating_sub(1).min(40);
                self.initial_ms.saturating_mul(1u64 << doublings).min(self.max_ms)
            }
        } as f64;
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_millis((base * spread).round() as u64)
    }
}

/// A random number in `[0, 1)`, for the jitter.
pub fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> RetrySection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn exponential_delays_double_up_to_the_max_within_the_jitter() {
        let p =
            RetryPolicy::from_section(&section("attempts = 5\ninitial = \"1s\"\nmax = \"3s\"\njitter = 0.2")).unwrap();
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(3), "capped at max");
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(1200));
        assert!(p.retries(4, "plugin_error") && !p.retries(5, "plugin_error"));
        assert!(!p.retries(1, "trap"), "not a named code");
    }

    #[test]
    fn bad_sections_name_the_field() {
        let err = |text: &str| RetryPolicy::from_section(&section(text)).unwrap_err();
        assert!(err("attempts = 0").starts_with("retry.attempts"));
        assert!(err("attempts = 2\nbackoff = \"linear\"").starts_with("retry.backoff"));
        assert!(err("attempts = 2\ninitial = \"soon\"").starts_with("retry.initial"));
        assert!(err("attempts = 2\ninitial = \"10s\"\nmax = \"1s\"").starts_with("retry.max"));
        assert!(err("attempts = 2\njitter = 2.0").starts_with("retry.jitter"));
        assert!(err("attempts = 2\ncodes = [\"invalid_params\"]").contains("never retried"));
        assert!(err("attempts = 2\ncodes = [\"oops\"]").contains("not an error code"));
        assert!(toml::from_str::<RetrySection>("attempts = 2\nwhen = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..100 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
