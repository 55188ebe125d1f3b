//! Per-principal limits: token buckets for operation starts and WebSocket
//! messages, and a count of open connections.
//!
//! Keyed by the principal's name, so one credential shared by many clients
//! shares one budget. The dev-mode anonymous principal is exempt: it is one
//! person on loopback, and benchmarks drive thousands of connections as it.
//! Each map holds one small entry per principal seen; a full bucket carries no
//! information, so the maps drop full buckets when they grow past
//! [`PRUNE_AT`] entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries past which idle (full) buckets are dropped.
const PRUNE_AT: usize = 10_000;

/// The limits' settings (`[limits]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body, in bytes (413 above it).
    pub max_body: usize,
    /// Operation starts a principal may make at once.
    pub start_burst: u32,
    /// Operation starts per second a principal gets back.
    pub starts_per_second: f64,
    /// WebSocket messages a principal may send at once, all its connections together.
    pub ws_message_burst: u32,
    /// WebSocket messages per second a principal gets back.
    pub ws_messages_per_second: f64,
    /// Open WebSocket connections per principal.
    pub max_connections: usize,
    /// Topics one connection may hold.
    pub max_subscriptions: usize,
    /// Schedules the server holds at once, all principals together.
    pub max_schedules: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1024 * 1024,
            start_burst: 60,
            starts_per_second: 10.0,
            ws_message_burst: 100,
            ws_messages_per_second: 20.0,
            max_connections: 32,
            max_subscriptions: 256,
            max_schedules: 1000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per principal.
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    /// A std mutex: held for arithmetic only.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `burst` at once, refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64) -> RateLimiter {
        RateLimiter { burst: f64::from(burst), per_second, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `who`'s bucket, or says how long until one is back.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if buckets.len() >= PRUNE_AT {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(who.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

/// Open connections per principal.
pub struct ConnectionCounter {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open connection; gives its slot back on drop.
pub struct ConnectionPermit {
    who: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionCounter {
    /// At most `max` connections per principal.
    pub fn new(max: usize) -> ConnectionCounter {
        ConnectionCounter { max, open: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A slot for `who`, or `None` if it has `max` open already.
    pub fn acquire(&self, who: &str) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().expect("connection counter poisoned");
        let count = open.entry(who.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionPermit { who: who.to_owned(), open: self.open.clone() })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connection counter poisoned");
        if let Some(count) = open.get_mut(&self.who) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let limiter = RateLimiter::new(2, 1000.0);
        assert!(limiter.take("ann").is_ok() && limiter.take("ann").is_ok());
        let wait = limiter.take("ann").unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        assert!(limiter.take("bob").is_ok(), "budgets are per principal");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.take("ann").is_ok());
    }

    #[test]
    fn permits_are_counted_and_given_back() {
        let counter = ConnectionCounter::new(2);
        let (a, _b) = (counter.acquire("ann").unwrap(), counter.acquire("ann").unwrap());
        assert!(counter.acquire("ann").is_none());
        assert!(counter.acquire("bob").is_some());
        drop(a);
        assert!(counter.acquire("ann").is_some());
    }
}
