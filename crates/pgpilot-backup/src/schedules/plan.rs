//! What a BackupSchedule does now, pure: the run that is due (once, never a burst), what the
//! concurrency policy and the starting deadline make of it, and which finished backups its
//! history limits drop.

use pgpilot_api::backup::BackupPhase;
use pgpilot_api::schedule::{BackupScheduleSpec, ConcurrencyPolicy};

use pgpilot_toolkit::calendar::Calendar;

/// One of the schedule's PostgresBackups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    pub phase: Option<BackupPhase>,
    /// Creation time, Unix seconds.
    pub created: i64,
}

impl Run {
    pub fn active(&self) -> bool {
        !matches!(
            self.phase,
            Some(BackupPhase::Completed | BackupPhase::Failed)
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    /// Create the backup of the run at `at`.
    Create {
        at: i64,
    },
    /// `Replace`: delete the running backups, then create the run at `at`.
    Replace {
        delete: Vec<String>,
        at: i64,
    },
    /// The run at `at` is not taken, and why.
    Skip {
        at: i64,
        why: String,
    },
}

pub fn decide(
    spec: &BackupScheduleSpec,
    calendar: &Calendar,
    since: i64,
    now: i64,
    runs: &[Run],
) -> Decision {
    if spec.suspend {
        return Decision::Wait;
    }
    let Some(at) = calendar.due(since, now) else {
        return Decision::Wait;
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && now - at > deadline
    {
        return Decision::Skip {
            at,
            why: format!(
                "the run was due {} s ago, past the starting deadline of {deadline} s",
                now - at
            ),
        };
    }
    let active: Vec<String> = runs
        .iter()
        .filter(|r| r.active())
        .map(|r| r.name.clone())
        .collect();
    match (active.is_empty(), spec.concurrency_policy) {
        (true, _) => Decision::Create { at },
        (false, ConcurrencyPolicy::Forbid) => Decision::Skip {
            at,
            why: format!(
                "{} still runs (concurrencyPolicy: Forbid)",
                active.join(", ")
            ),
        },
        (false, ConcurrencyPolicy::Replace) => Decision::Replace { delete: active, at },
    }
}

/// Finished backups beyond `retention.successful` / `retention.failed`, oldest first.
pub fn beyond_history(spec: &BackupScheduleSpec, runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for (phase, keep) in [
        (BackupPhase::Completed, spec.retention.successful),
        (BackupPhase::Failed, spec.retention.failed),
    ] {
        let mut of_phase: Vec<&Run> = runs.iter().filter(|r| r.phase == Some(phase)).collect();
        of_phase.sort_by_key(|r| (r.created, r.name.clone()));
        let extra = of_phase.len().saturating_sub(keep.max(0) as usize);
        out.extend(of_phase[..extra].iter().map(|r| r.name.clone()));
    }
    out
}

/// The PostgresBackup of the run at `at`: the same name whoever creates it, so a run is
/// created once even across a manager restart.
pub fn backup_name(schedule: &str, at: i64) -> String {
    let when = chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y%m%d%H%M").to_string())
        .unwrap_or_else(|| at.to_string());
    let head = &schedule[..schedule.len().min(240)];
    format!("{head}-{when}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackupScheduleSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    const HOURLY: &str = "cluster: {name: db}\nschedule: '0 * * * *'\n";

    fn run(name: &str, phase: Option<BackupPhase>, created: i64) -> Run {
        Run {
            name: name.into(),
            phase,
            created,
        }
    }

    #[test]
    fn a_due_run_is_created_once_under_a_name_of_its_own() {
        let s = spec(HOURLY);
        let c = Calendar::parse(&s.schedule, None).unwrap();
        let since = utc("2026-12-05T12:00:00Z");
        assert_eq!(
            decide(&s, &c, since, utc("2026-12-05T12:59:00Z"), &[]),
            Decision::Wait
        );
        let at = utc("2026-12-05T13:00:00Z");
        assert_eq!(
            decide(&s, &c, since, utc("2026-12-05T13:00:05Z"), &[]),
            Decision::Create { at }
        );
        assert_eq!(backup_name("nightly", at), "nightly-202612051300");
        // Recorded as scheduled: not due again.
        assert_eq!(
            decide(&s, &c, at, utc("2026-12-05T13:00:30Z"), &[]),
            Decision::Wait
        );
    }

    #[test]
    fn a_run_missed_while_down_is_taken_once_within_the_deadline() {
        let s = spec(&format!("{HOURLY}startingDeadlineSeconds: 600\n"));
        let c = Calendar::parse(&s.schedule, None).unwrap();
        let since = utc("2026-12-05T09:00:00Z");
        // Back at 13:05: 10:00-12:00 are gone, 13:00 is 300 s late, within 600 s.
        assert_eq!(
            decide(&s, &c, since, utc("2026-12-05T13:05:00Z"), &[]),
            Decision::Create {
                at: utc("2026-12-05T13:00:00Z")
            }
        );
        // Back at 13:20: 13:00 is 1200 s late.
        match decide(&s, &c, since, utc("2026-12-05T13:20:00Z"), &[]) {
            Decision::Skip { at, why } => {
                assert_eq!(at, utc("2026-12-05T13:00:00Z"));
                assert!(why.contains("starting deadline"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn suspended_schedules_create_nothing() {
        let s = spec(&format!("{HOURLY}suspend: true\n"));
        let c = Calendar::parse(&s.schedule, None).unwrap();
        assert_eq!(
            decide(
                &s,
                &c,
                utc("2026-12-05T12:00:00Z"),
                utc("2026-12-05T15:00:00Z"),
                &[]
            ),
            Decision::Wait
        );
    }

    #[test]
    fn forbid_skips_while_a_backup_runs_and_replace_replaces_it() {
        let c = Calendar::parse("0 * * * *", None).unwrap();
        let runs = [
            run("db-1200", Some(BackupPhase::Running), 1),
            run("db-1100", Some(BackupPhase::Completed), 0),
        ];
        let (since, now) = (utc("2026-12-05T12:00:00Z"), utc("2026-12-05T13:00:10Z"));
        match decide(&spec(HOURLY), &c, since, now, &runs) {
            Decision::Skip { why, .. } => assert!(why.contains("db-1200 still runs"), "{why}"),
            other => panic!("{other:?}"),
        }
        let replace = spec(&format!("{HOURLY}concurrencyPolicy: Replace\n"));
        assert_eq!(
            decide(&replace, &c, since, now, &runs),
            Decision::Replace {
                delete: vec!["db-1200".into()],
                at: utc("2026-12-05T13:00:00Z")
            }
        );
    }

    #[test]
    fn history_limits_drop_the_oldest_finished_backups() {
        let s = spec(&format!(
            "{HOURLY}retention: {{successful: 2, failed: 1}}\n"
        ));
        let runs = [
            run("a", Some(BackupPhase::Completed), 1),
            run("b", Some(BackupPhase::Failed), 2),
            run("c", Some(BackupPhase::Completed), 3),
            run("d", Some(BackupPhase::Failed), 4),
            run("e", Some(BackupPhase::Completed), 5),
            run("f", Some(BackupPhase::Running), 6),
        ];
        assert_eq!(beyond_history(&s, &runs), ["a", "b"]);
        assert!(
            beyond_history(&spec(HOURLY), &runs).is_empty(),
            "defaults keep 7 and 3"
        );
    }
}
