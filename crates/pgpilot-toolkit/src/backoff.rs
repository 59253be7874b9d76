//! Per-object exponential backoff with jitter: a failing object waits longer each time, a
//! healthy neighbour is not slowed down, and a success forgets the failures.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngExt;

/// Backoff settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Fraction of the delay that is random: 0.2 spreads retries over ±10 %.
    pub jitter: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl Policy {
    /// The delay after `failures` consecutive failures (1 = first), before jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }

    /// `base` spread by the jitter fraction; `unit` is a uniform sample in [0, 1).
    pub fn jittered(&self, base: Duration, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (unit - 0.5);
        base.mul_f64(factor.max(0.0)).min(self.max)
    }
}

/// Consecutive failures per object key.
#[derive(Debug)]
pub struct Backoff<K> {
    policy: Policy,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &K) -> Duration {
        let count = {
            let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let unit: f64 = rand::rng().random();
        self.policy.jittered(self.policy.base_delay(count), unit)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.2,
        }
    }

    #[test]
    fn delay_doubles_per_failure_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.base_delay(10_000), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy();
        let base = Duration::from_secs(10);
        assert_eq!(p.jittered(base, 0.0), Duration::from_secs(9));
        assert_eq!(p.jittered(base, 0.5), Duration::from_secs(10));
        assert!(p.jittered(base, 0.999_999) <= Duration::from_secs(11));
    }

    #[test]
    fn jittered_delays_differ_between_objects() {
        let b = Backoff::new(policy());
        let delays: std::collections::HashSet<Duration> = (0..20).map(|i| b.failed(&i)).collect();
        assert!(
            delays.len() > 1,
            "every object got the same delay: no jitter"
        );
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(900) && *d <= Duration::from_millis(1100))
        );
    }

    #[test]
    fn failures_are_counted_per_object_and_reset_on_success() {
        let b = Backoff::new(policy());
        b.failed(&"a");
        b.failed(&"a");
        let third = b.failed(&"a");
        assert!(
            third >= Duration::from_millis(3600),
            "third failure waits ~4s, got {third:?}"
        );
        assert_eq!(b.failures(&"b"), 0, "other objects are not affected");
        b.succeeded(&"a");
        assert_eq!(b.failures(&"a"), 0);
        assert!(
            b.failed(&"a") <= Duration::from_millis(1100),
            "back to the initial delay"
        );
    }
}
