//! What one run measured: plain data, serialized next to the report so the Markdown can be
//! rendered again without measuring again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One timed run and the machine's 1-minute load average when it started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub load1: f64,
    /// Seconds after the start at which the pods reached each step (see `milestones`).
    #[serde(default)]
    pub steps: BTreeMap<String, f64>,
}

/// The environment of the run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Environment {
    pub date: String,
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory: String,
    pub load_start: String,
    pub load_end: String,
    pub host_postgres: String,
    pub image_postgres: String,
    pub patroni: String,
    pub kubernetes: String,
    pub repeat: usize,
    /// The PostgresCluster spec measured (YAML).
    pub cluster_spec: String,
}

/// Time to Ready for one instance count: pgpilot and its two baselines.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ReadyResult {
    pub instances: usize,
    pub pgpilot: Vec<Sample>,
    pub pods: Vec<Sample>,
    pub host: Vec<Sample>,
}

/// One disruption (failover or switchover) seen by the writer.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct EventSample {
    /// Last acknowledged write on the old primary → first on the new one (or, when the
    /// same server came back, the longest pause between acknowledgements).
    pub gap_seconds: f64,
    /// The longest time without an acknowledged insert seen by an outside client beside the
    /// measuring writer: one connection to `-rw`, an insert every 50 ms, 1 s connect and
    /// statement timeouts, a reconnection after any error (what an application sees).
    #[serde(default)]
    pub outside_gap_seconds: Option<f64>,
    /// Whether another server took over.
    pub primary_changed: bool,
    pub old_primary: String,
    pub new_primary: String,
    /// Acknowledged writes in the sample, and those missing when read back afterwards.
    pub acked: usize,
    pub missing: usize,
    /// Failed attempts (connects and inserts) during the sample.
    pub failed_attempts: usize,
    /// The event → the cluster's phase Ready again (every instance back).
    pub back_to_ready_seconds: Option<f64>,
    pub load1: f64,
    /// Seconds after the disruption at which the role label and the `-rw` Service moved
    /// (see `milestones::EVENT_STEPS`), and the first and last acknowledged writes.
    #[serde(default)]
    pub steps: BTreeMap<String, f64>,
    /// Patroni's log lines about the event, from the new primary (and old one if alive).
    pub patroni_log: Vec<String>,
    /// The writer's failed attempts after the disruption: which hop it was waiting for.
    #[serde(default)]
    pub writer_failures: Vec<FailureRun>,
}

/// Consecutive failed attempts of the writer with the same message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FailureRun {
    /// Seconds after the disruption of the first and last attempt.
    pub from: f64,
    pub to: f64,
    pub count: usize,
    pub message: String,
}

/// Merges failures (seconds after the disruption, message), in time order, into runs of one
/// message.
pub fn failure_runs(failures: impl IntoIterator<Item = (f64, String)>) -> Vec<FailureRun> {
    let mut runs: Vec<FailureRun> = Vec::new();
    for (at, message) in failures {
        match runs.last_mut() {
            Some(run) if run.message == message => {
                run.to = at;
                run.count += 1;
            }
            _ => runs.push(FailureRun {
                from: at,
                to: at,
                count: 1,
                message,
            }),
        }
    }
    runs
}

/// All samples of one kind of disruption.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct EventResult {
    pub mode: String,
    pub samples: Vec<EventSample>,
}

/// Everything one `pgpilot-bench all` measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Results {
    pub environment: Environment,
    pub ready: Vec<ReadyResult>,
    pub failover: Vec<EventResult>,
    pub switchover: Option<EventResult>,
    /// Samples that failed, with the error: they are not in the figures.
    pub errors: Vec<String>,
}

/// Median, minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    pub fn of_samples(samples: &[Sample]) -> Option<Self> {
        Self::of(samples.iter().map(|s| s.seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_an_odd_count_takes_the_middle_value() {
        let s = Summary::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    }

    #[test]
    fn summary_of_an_even_count_averages_the_middle_values() {
        assert_eq!(Summary::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn summary_of_nothing_is_none() {
        assert_eq!(Summary::of([]), None);
        assert_eq!(Summary::of([f64::NAN]), None);
    }

    #[test]
    fn consecutive_failures_with_one_message_merge() {
        let runs = failure_runs([
            (1.0, "refused".to_owned()),
            (1.1, "refused".to_owned()),
            (2.0, "timeout".to_owned()),
            (3.0, "refused".to_owned()),
        ]);
        let summary: Vec<_> = runs
            .iter()
            .map(|r| (r.from, r.to, r.count, r.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (1.0, 1.1, 2, "refused"),
                (2.0, 2.0, 1, "timeout"),
                (3.0, 3.0, 1, "refused")
            ]
        );
    }
}
