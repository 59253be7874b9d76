//! Upgrades as Prometheus series: how they ended (by kind and result) and how long their
//! steps took (by step kind: `upgrade-replica/db-1` counts as `upgrade-replica`). Labels come
//! from fixed sets, so the series stay bounded whatever the clusters are called.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use pgpilot_api::upgrade::{PostgresUpgradeStatus, StepState, UpgradeKind, UpgradePhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// `minor` or `major`.
    pub kind: String,
    /// `succeeded`, `failed` or `aborted`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone)]
pub struct UpgradeMetrics {
    ended: Family<EndLabels, Counter>,
    steps: Family<StepLabels, Histogram>,
}

impl Default for UpgradeMetrics {
    fn default() -> Self {
        Self {
            ended: Family::default(),
            // 0.5 s to ~4.5 h.
            steps: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 16))
            }),
        }
    }
}

impl UpgradeMetrics {
    /// Registers the families under `pgpilot_`.
    pub fn register(&self, registry: &mut Registry) {
        // Every outcome from the start, at 0: `increase()` and alerts see the first upgrade.
        for kind in ["minor", "major"] {
            for result in ["succeeded", "failed", "aborted"] {
                let _ = self.ended.get_or_create(&EndLabels {
                    kind: kind.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register(
            "upgrades",
            "Upgrades that ended, by kind and result",
            self.ended.clone(),
        );
        r.register_with_unit(
            "upgrade_step_duration",
            "Time from start to end of finished upgrade steps, by step",
            Unit::Seconds,
            self.steps.clone(),
        );
    }

    /// Records what changed from `before` to `after` (one upgrade's status): steps that
    /// finished and the end of the upgrade. Called once per status write, so nothing counts
    /// twice.
    pub fn observe(&self, before: &PostgresUpgradeStatus, after: &PostgresUpgradeStatus) {
        for step in &after.steps {
            let was_done = before
                .steps
                .iter()
                .any(|s| s.name == step.name && s.state == StepState::Done);
            if step.state != StepState::Done || was_done {
                continue;
            }
            if let (Some(start), Some(end)) = (&step.start_time, &step.end_time) {
                let seconds = (end.0.as_millisecond() - start.0.as_millisecond()) as f64 / 1000.0;
                self.steps
                    .get_or_create(&StepLabels {
                        step: step_kind(&step.name).to_owned(),
                    })
                    .observe(seconds.max(0.0));
            }
        }
        let result = match after.phase {
            Some(UpgradePhase::Succeeded) => "succeeded",
            Some(UpgradePhase::Failed) => "failed",
            Some(UpgradePhase::Aborted) => "aborted",
            _ => return,
        };
        if before.phase == after.phase {
            return;
        }
        let kind = match after.kind {
            Some(UpgradeKind::Major) => "major",
            _ => "minor",
        };
        self.ended
            .get_or_create(&EndLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The step's kind: its name up to a `/`.
fn step_kind(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use pgpilot_api::upgrade::UpgradeStep;

    fn step(name: &str, state: StepState, from: i64, to: Option<i64>) -> UpgradeStep {
        let t = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        UpgradeStep {
            name: name.into(),
            state,
            start_time: Some(t(from)),
            end_time: to.map(t),
            message: None,
        }
    }

    #[test]
    fn finished_steps_and_the_end_are_counted_once_with_bounded_labels() {
        let m = UpgradeMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let before = PostgresUpgradeStatus {
            steps: vec![step("upgrade-replica/db-2", StepState::Running, 100, None)],
            ..Default::default()
        };
        let after = PostgresUpgradeStatus {
            phase: Some(UpgradePhase::Succeeded),
            kind: Some(UpgradeKind::Minor),
            steps: vec![step(
                "upgrade-replica/db-2",
                StepState::Done,
                100,
                Some(112),
            )],
            ..Default::default()
        };
        m.observe(&before, &after);
        m.observe(&after, &after);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("pgpilot_upgrades_total{kind=\"minor\",result=\"succeeded\"} 1"),
            "{out}"
        );
        // Every other outcome is there from the start, at 0.
        assert_eq!(out.matches("pgpilot_upgrades_total{").count(), 6, "{out}");
        assert!(
            out.contains("pgpilot_upgrades_total{kind=\"major\",result=\"failed\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("pgpilot_upgrade_step_duration_seconds_count{step=\"upgrade-replica\"} 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "pgpilot_upgrade_step_duration_seconds_sum{step=\"upgrade-replica\"} 12.0"
            ),
            "{out}"
        );
    }
}
