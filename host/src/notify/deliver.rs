//! The delivery task: sends the outbox's due notifications, at least once.
//!
//! Every [`TICK`] it takes the due ones from the store (on a shared store,
//! taken for this node for a while, so nodes do not race for them), sends up
//! to [`PARALLEL`] at once, and records each outcome: delivered on a 2xx,
//! else the next attempt after the rule's backoff with jitter, or `dead`
//! once its attempts are spent. An attempt lasts at most the rule's
//! `timeout`, and nothing here is on the path of an operation: a slow or dead
//! receiver delays only its own notifications. It also raises `running_longer`
//! notifications, once per rule and attempt of a long operation.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Rule, Rules, body_bytes};
use crate::hooks::signature::sign_opal;
use crate::model::{DeliveryState, Notification, Timestamp};
use crate::store::{Change, Store};

/// How often the outbox is looked at.
const TICK: Duration = Duration::from_millis(200);
/// Most notifications sent at once.
const PARALLEL: usize = 16;
/// How often long-running operations are looked for.
const LONG_SCAN: Duration = Duration::from_secs(1);

/// Starts delivering; stops at `stop`.
pub fn spawn(store: Store, rules: Arc<Rules>, stop: CancellationToken) {
    if rules.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().user_agent(concat!("opal/", env!("CARGO_PKG_VERSION"))).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the notifications' HTTP client; none will be sent");
                return;
            }
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan = tokio::time::Instant::now();
        loop {
            if stop.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            if last_scan.elapsed() >= LONG_SCAN {
                last_scan = tokio::time::Instant::now();
                running_longer(&store, &rules).await;
            }
            let due = match store.due_notifications(Timestamp::now(), PARALLEL).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the notification outbox; retrying");
                    continue;
                }
            };
            let sends = due.into_iter().map(|n| attempt(&client, &rules, n));
            // At shutdown an attempt in flight is dropped: its notification
            // stays pending and is sent again (at least once).
            let Some(outcomes) = stop.run_until_cancelled(futures_util::future::join_all(sends)).await else {
                return;
            };
            for outcome in outcomes {
                if let Err(e) = store.commit(Change::PutNotification(Box::new(outcome))).await {
                    tracing::warn!(error = %e, "cannot record a notification's delivery; it will be sent again");
                }
            }
        }
    });
}

/// One attempt; returns the notification as it is after it.
async fn attempt(client: &reqwest::Client, rules: &Rules, mut n: Notification) -> Notification {
    let Some(rule) = rules.get(&n.rule) else {
        n.state = DeliveryState::Dead;
        n.last_error = Some(format!("the [[notify]] entry {:?} is no longer in the config", n.rule));
        return n;
    };
    n.attempts += 1;
    match send(client, rule, &n).await {
        Ok(()) => {
            n.state = DeliveryState::Delivered;
            n.delivered_at = Some(Timestamp::now());
            n.last_error = None;
        }
        Err(why) if n.attempts >= rule.max_attempts => {
            tracing::warn!(notification = %n.id, rule = %n.rule, attempts = n.attempts, "notification dead: {why}");
            n.state = DeliveryState::Dead;
            n.last_error = Some(why);
        }
        Err(why) => {
            n.next_at = Timestamp::from(Timestamp::now().system_time() + rule.delay(n.attempts));
            n.last_error = Some(why);
        }
    }
    n
}

async fn send(client: &reqwest::Client, rule: &Rule, n: &Notification) -> Result<(), String> {
    let body = body_bytes(&n.body);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let response = client
        .post(&rule.url)
        .timeout(rule.timeout)
        .header("content-type", "application/json")
        .header("x-opal-delivery", n.id.to_string())
        .header("x-opal-signature", sign_opal(rule.secret.bytes(), now, &body))
        .header("x-opal-event", &n.event)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("the receiver answered {status}")) }
}

/// Raises `running_longer` for the operations past a rule's limit, once per
/// rule and attempt (the notification's id is not reused, so it is looked for).
async fn running_longer(store: &Store, rules: &Rules) {
    if !rules.0.iter().any(|r| r.running_longer_than.is_some()) {
        return;
    }
    let Ok(active) = store.active().await else { return };
    let now = Timestamp::now();
    for op in active {
        let wanting: Vec<&Rule> = rules.running_longer(&op, now).collect();
        if wanting.is_empty() {
            continue;
        }
        let Ok(sent) = store.notifications(Some(op.id), 1000).await else { continue };
        for rule in wanting {
            let raised = sent.iter().any(|n| {
                n.rule == rule.name
                    && n.event == "running_longer"
                    && n.body["operation"]["attempt"].as_u64().is_none_or(|a| a == u64::from(op.attempt))
            });
            if !raised {
                let notification = rule.notification("running_longer", &op, now);
                if let Err(e) = store.commit(Change::PutNotification(Box::new(notification))).await {
                    tracing::warn!(error = %e, "cannot record a running_longer notification");
                }
            }
        }
    }
}
