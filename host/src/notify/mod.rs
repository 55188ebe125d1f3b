//! `notify`: outbound notifications, delivered at least once.
//!
//! Each `[[notify]]` entry of the config file is a [`Rule`]: a receiver's URL
//! and secret, the events it wants (completed, failed, cancelled, retries
//! exhausted, waiting for approval, running longer than N), the types and
//! targets it cares about, and a payload format (Opal's JSON, or Slack's
//! `{"text": …}`).
//!
//! The store asks [`Rules::matching`] inside the transaction that commits an
//! event, and writes what it returns to its outbox in that transaction: a
//! crash never loses a notification, and none is made for what was not
//! committed. The [`deliver`] task then sends them, signed with the
//! `X-Opal-Signature` scheme and a stable `X-Opal-Delivery` id, retrying with
//! exponential backoff and jitter until the rule's attempts are spent (the
//! notification is then `dead`). It runs apart from the operations: a slow or
//! dead receiver delays nothing else.

pub mod deliver;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::TargetGlob;
use crate::hooks::Secret;
use crate::model::{DeliveryState, EventKind, Notification, Operation, Status, Timestamp};

/// The events a rule may ask for.
const EVENTS: &[&str] = &["completed", "failed", "cancelled", "retries_exhausted", "waiting", "running_longer"];

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"id", "event", "at", "operation"}`.
    Opal,
    /// `{"text": "..."}`, for Slack's incoming webhooks and compatible ones.
    Slack,
}

/// One `[[notify]]` entry, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, recorded on each notification.
    pub name: String,
    /// Where notifications go.
    pub url: String,
    /// The signing secret.
    pub secret: Secret,
    /// The events it wants.
    pub events: Vec<String>,
    /// For `running_longer`: how long is too long.
    pub running_longer_than: Option<Duration>,
    /// Only these types (all if empty).
    pub types: Vec<String>,
    /// Only targets matching one of these (all if empty).
    pub targets: Vec<TargetGlob>,
    /// The body's format.
    pub format: Format,
    /// Attempts before a notification is dead.
    pub max_attempts: u32,
    /// The first retry's delay; doubled each time up to `max_delay`.
    pub initial_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// `[[notify]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    name: String,
    url: String,
    secret: String,
    events: Vec<String>,
    #[serde(default)]
    running_longer_than: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    initial_delay: Option<String>,
    #[serde(default)]
    max_delay: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

impl NotifySection {
    /// Checks the section; the error names the field (`notify.ops.url: …`).
    pub fn into_rule(self) -> Result<Rule, String> {
        let name = self.name.clone();
        let field = |f: &str| format!("notify.{name}.{f}");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("notify: name {name:?} must be letters, digits, - or _"));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("{}: {:?} is not an http(s) URL", field("url"), self.url));
        }
        if self.secret.len() < 16 {
            return Err(format!("{}: must be at least 16 bytes", field("secret")));
        }
        if self.events.is_empty() {
            return Err(format!("{}: name at least one of {}", field("events"), EVENTS.join(", ")));
        }
        if let Some(bad) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(format!("{}: {bad:?} is not one of {}", field("events"), EVENTS.join(", ")));
        }
        let duration = |f: &str, text: Option<&str>, default: Duration| -> Result<Duration, String> {
            match text {
                None => Ok(default),
                Some(t) => humantime::parse_duration(t).map_err(|e| format!("{}: {t:?}: {e}", field(f))),
            }
        };
        let running_longer_than = match &self.running_longer_than {
            Some(t) => Some(duration("running_longer_than", Some(t), Duration::ZERO)?),
            None if self.events.iter().any(|e| e == "running_longer") => {
                return Err(format!("{}: running_longer needs running_longer_than", field("events")));
            }
            None => None,
        };
        let targets = self.targets.iter().map(|t| TargetGlob::new(t)).collect::<Result<Vec<_>, _>>()?;
        let max_attempts = self.max_attempts.unwrap_or(10);
        if !(1..=100).contains(&max_attempts) {
            return Err(format!("{}: must be 1 to 100", field("max_attempts")));
        }
        let initial_delay = duration("initial_delay", self.initial_delay.as_deref(), Duration::from_secs(1))?;
        let max_delay = duration("max_delay", self.max_delay.as_deref(), Duration::from_secs(300))?;
        if initial_delay.is_zero() || max_delay < initial_delay {
            return Err(format!("{}: must be above 0 and at most max_delay", field("initial_delay")));
        }
        let timeout = duration("timeout", self.timeout.as_deref(), Duration::from_secs(10))?;
        Ok(Rule {
            name: self.name,
            url: self.url,
            secret: Secret::new(self.secret),
            events: self.events,
            running_longer_than,
            types: self.types,
            targets,
            format: self.format.unwrap_or(Format::Opal),
            max_attempts,
            initial_delay,
            max_delay,
            timeout,
        })
    }
}

/// Every rule of the config.
#[derive(Debug, Clone, Default)]
pub struct Rules(pub Vec<Rule>);

impl Rule {
    fn wants(&self, event: &str, op: &Operation) -> bool {
        self.events.iter().any(|e| e == event)
            && (self.types.is_empty() || self.types.contains(&op.op_type))
            && (self.targets.is_empty() || self.targets.iter().any(|t| t.matches(&op.target)))
    }

    /// The delay before attempt `attempts + 1`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let base = self.initial_delay.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(self.max_delay);
        base.mul_f64(0.8 + 0.4 * crate::model::unit_random())
    }

    /// A notification of `event` about `op`, for this rule.
    pub fn notification(&self, event: &str, op: &Operation, at: Timestamp) -> Notification {
        let id = ulid::Ulid::new();
        let body = match self.format {
            Format::Opal => json!({ "id": id.to_string(), "event": event, "at": at, "operation": op }),
            Format::Slack => json!({ "text": slack_text(event, op) }),
        };
        Notification {
            id,
            rule: self.name.clone(),
            operation: op.id,
            event: event.to_owned(),
            url: self.url.clone(),
            body,
            state: DeliveryState::Pending,
            attempts: 0,
            created_at: at,
            next_at: at,
            delivered_at: None,
            last_error: None,
        }
    }
}

fn slack_text(event: &str, op: &Operation) -> String {
    let what = format!("{} on {}", op.op_type, op.target);
    let message = op.error.as_ref().map_or(op.message.as_str(), |e| e.message.as_str());
    match event {
        "completed" => format!(":white_check_mark: {what} completed: {message}"),
        "failed" => format!(":x: {what} failed: {message}"),
        "retries_exhausted" => format!(":x: {what} failed after {} attempts: {message}", op.attempt),
        "cancelled" => format!(":heavy_minus_sign: {what} {message}"),
        "waiting" => format!(":raised_hand: {what} waits for approval: {message}"),
        _ => format!(":hourglass: {what} is still running ({}%): {message}", op.progress),
    }
}

impl Rules {
    /// Whether any rule wants anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The notifications an event of `kind` leaving `op` as it is makes;
    /// called by the store inside the event's transaction.
    pub fn matching(&self, kind: EventKind, op: &Operation, at: Timestamp) -> Vec<Notification> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut events: Vec<&str> = match kind {
            EventKind::Completed => vec!["completed"],
            EventKind::Failed => vec!["failed"],
            EventKind::Cancelled => vec!["cancelled"],
            EventKind::Waiting => vec!["waiting"],
            _ => Vec::new(),
        };
        // The last attempt of a retry policy failed: the one alert people
        // want instead of one per attempt.
        if kind == EventKind::Failed && op.status == Status::Failed && op.retry.as_ref().is_some_and(|r| r.attempts > 1)
        {
            events.push("retries_exhausted");
        }
        let mut out = Vec::new();
        for event in events {
            for rule in self.0.iter().filter(|r| r.wants(event, op)) {
                out.push(rule.notification(event, op, at));
            }
        }
        out
    }

    /// The rules that want `running_longer` about `op`, if it has run long enough.
    pub fn running_longer<'r>(&'r self, op: &Operation, now: Timestamp) -> impl Iterator<Item = &'r Rule> + 'r {
        let ran =
            op.started_at.and_then(|s| now.system_time().duration_since(s.system_time()).ok()).unwrap_or_default();
        let running = op.status.is_held();
        let op = op.clone();
        self.0.iter().filter(move |r| {
            running && r.running_longer_than.is_some_and(|limit| ran >= limit) && r.wants("running_longer", &op)
        })
    }

    /// The rule named `name`.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.0.iter().find(|r| r.name == name)
    }
}

/// A body as the bytes that are signed and sent.
pub fn body_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(extra: &str) -> Result<Rule, String> {
        let text = format!(
            "name = \"ops\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"0123456789abcdef\"\nevents = [\"failed\", \"completed\"]\n{extra}"
        );
        toml::from_str::<NotifySection>(&text).map_err(|e| e.to_string())?.into_rule()
    }

    #[test]
    fn a_rule_picks_its_events_types_and_targets() {
        let rules = Rules(vec![rule("types = [\"demo\"]\ntargets = [\"site-a/*\"]").unwrap()]);
        let mut op = Operation::pending("demo", "0.1.0", "site-a/1", json!({}), "api");
        op.status = Status::Failed;
        assert_eq!(rules.matching(EventKind::Failed, &op, Timestamp::now()).len(), 1);
        assert!(rules.matching(EventKind::Progress, &op, Timestamp::now()).is_empty());
        assert!(rules.matching(EventKind::Cancelled, &op, Timestamp::now()).is_empty(), "not asked for");
        op.target = "site-b/1".into();
        assert!(rules.matching(EventKind::Failed, &op, Timestamp::now()).is_empty(), "another target");
    }

    #[test]
    fn bad_rules_name_the_field() {
        assert!(rule("format = \"xml\"").unwrap_err().contains("unknown variant"));
        assert!(rule("max_attempts = 0").unwrap_err().contains("notify.ops.max_attempts"));
        let longer = "name = \"l\"\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"\nevents = [\"running_longer\"]";
        assert!(
            toml::from_str::<NotifySection>(longer).unwrap().into_rule().unwrap_err().contains("running_longer_than")
        );
    }
}
