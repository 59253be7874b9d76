//! Decisions about one PostgresBackup, pure: whether its Job may start and against which
//! instances, and its status from the Job and pgBackRest's report.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use pgpilot_api::backup::{BackupPhase, BackupTarget, PostgresBackupStatus};
use pgpilot_postgres::pgbackrest::{self, info};
use pgpilot_toolkit::conditions::{self, Status, Update};

/// `True` once the backup completed (what Argo CD's and Flux's health checks read).
pub const READY: &str = "Ready";

/// Annotation pgBackRest stores with each backup: the PostgresBackup's uid.
pub const ANNOTATION: &str = "pgpilot.io/backup";

/// The cluster, as far as a backup cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    pub exists: bool,
    pub has_repository: bool,
    /// `ContinuousArchiving` is True (a backup waits for its last segment in the archive).
    pub archiving: Result<(), String>,
    pub primary: Option<String>,
    /// Ready replicas, by name.
    pub replicas: Vec<String>,
}

/// The backup's Job as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobFacts {
    Running {
        started: Option<Time>,
    },
    /// What its pod wrote to /dev/termination-log: pgBackRest's `info` for this backup.
    Succeeded {
        report: Option<String>,
    },
    /// The end of pgBackRest's output.
    Failed {
        output: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do now (waiting, running, or done).
    Wait,
    /// Start the Job against these instances (`pg1` the primary), from a standby if one is
    /// there.
    Start {
        hosts: Vec<String>,
        prefer_standby: bool,
    },
}

pub fn next(
    target: BackupTarget,
    phase: Option<BackupPhase>,
    cluster: &ClusterFacts,
    job: Option<&JobFacts>,
) -> Next {
    if matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed)) || job.is_some() {
        return Next::Wait;
    }
    match (&cluster.archiving, &cluster.primary) {
        (Ok(()), Some(primary)) if cluster.exists && cluster.has_repository => {
            let prefer_standby =
                target == BackupTarget::PreferStandby && !cluster.replicas.is_empty();
            let mut hosts = vec![primary.clone()];
            if prefer_standby {
                hosts.extend(cluster.replicas.iter().cloned());
            }
            Next::Start {
                hosts,
                prefer_standby,
            }
        }
        _ => Next::Wait,
    }
}

/// The status: `previous` as it stands once it is terminal (the Job may be gone), else from
/// the Job and the cluster.
pub fn status(
    previous: &PostgresBackupStatus,
    uid: &str,
    job_name: &str,
    cluster: &ClusterFacts,
    job: Option<&JobFacts>,
) -> PostgresBackupStatus {
    if matches!(
        previous.phase,
        Some(BackupPhase::Completed | BackupPhase::Failed)
    ) {
        return previous.clone();
    }
    let pending = |why: String| PostgresBackupStatus {
        phase: Some(BackupPhase::Pending),
        error: Some(why),
        ..Default::default()
    };
    let Some(job) = job else {
        return if !cluster.exists {
            pending("the cluster does not exist (yet)".into())
        } else if !cluster.has_repository {
            pending("the cluster has no spec.backup: there is no repository to back up to".into())
        } else if let Err(why) = &cluster.archiving {
            pending(format!("waiting for continuous archiving: {why}"))
        } else if cluster.primary.is_none() {
            pending("waiting for a primary".into())
        } else {
            PostgresBackupStatus {
                phase: Some(BackupPhase::Pending),
                ..Default::default()
            }
        };
    };
    let base = PostgresBackupStatus {
        job: Some(job_name.to_owned()),
        ..Default::default()
    };
    match job {
        JobFacts::Running { started } => PostgresBackupStatus {
            phase: Some(BackupPhase::Running),
            start_time: started.clone(),
            ..base
        },
        JobFacts::Failed { output } => PostgresBackupStatus {
            phase: Some(BackupPhase::Failed),
            error: Some(failure(output.as_deref())),
            ..base
        },
        JobFacts::Succeeded { report } => {
            let parsed = report
                .as_deref()
                .ok_or_else(|| "the backup Job succeeded but reported nothing".to_owned())
                .and_then(|r| info::parse(r).map_err(|e| format!("pgBackRest's report: {e}")));
            let found = parsed.and_then(|stanzas| {
                stanzas
                    .iter()
                    .find_map(|s| {
                        let oldest = s.oldest().map(|o| o.timestamp.stop);
                        Some((s.annotated(ANNOTATION, uid)?.clone(), oldest))
                    })
                    .ok_or_else(|| {
                        format!("pgBackRest's report has no backup annotated {ANNOTATION}={uid}")
                    })
            });
            match found {
                Ok((b, oldest)) => completed(b, oldest, base),
                Err(e) => PostgresBackupStatus {
                    phase: Some(BackupPhase::Failed),
                    error: Some(e),
                    ..base
                },
            }
        }
    }
}

/// `Ready` once the backup completed, and kstatus' `Stalled` once it failed (a failed backup
/// is not retried), carried on from `previous` so transition times only move on a change.
pub fn set_conditions(
    status: &mut PostgresBackupStatus,
    previous: &[Condition],
    generation: Option<i64>,
    now: Time,
) {
    status.conditions = previous.to_vec();
    let error = status.error.clone().unwrap_or_default();
    let (ready, reason, message) = match status.phase {
        Some(BackupPhase::Completed) => (
            true,
            "Completed",
            format!(
                "backup {} completed",
                status.backup_id.as_deref().unwrap_or_default()
            ),
        ),
        Some(BackupPhase::Failed) => (false, "Failed", error.clone()),
        Some(BackupPhase::Running) => (false, "Running", "the backup Job runs".to_owned()),
        Some(BackupPhase::Pending) | None => (false, "Pending", error.clone()),
    };
    conditions::set(
        &mut status.conditions,
        Update {
            type_: READY,
            status: Status::from(ready),
            reason,
            message,
            observed_generation: generation,
        },
        now.clone(),
    );
    let failed = status.phase == Some(BackupPhase::Failed);
    conditions::set_stalled(
        &mut status.conditions,
        failed.then_some(("BackupFailed", error)),
        generation,
        now,
    );
}

/// Why a backup Job failed: pgBackRest's error, and what a lost connection usually means.
fn failure(output: Option<&str>) -> String {
    let Some(error) = output.map(pgbackrest::error_in) else {
        return "the backup Job failed without output".into();
    };
    // [101] TLS errors and [104] protocol errors mid-backup: the instance went away.
    if error.contains("unexpected eof") || error.contains("[101]") || error.contains("[104]") {
        format!(
            "the backup lost its connection to the instance it read from (did it restart or fail over?); take a new backup. pgBackRest said: {error}"
        )
    } else {
        error
    }
}

fn completed(
    b: info::Backup,
    oldest_stop: Option<i64>,
    base: PostgresBackupStatus,
) -> PostgresBackupStatus {
    let time = |secs: i64| Timestamp::from_second(secs).ok().map(Time);
    PostgresBackupStatus {
        recoverable_from: oldest_stop.and_then(time),
        phase: Some(BackupPhase::Completed),
        backup_id: Some(b.label),
        start_time: time(b.timestamp.start),
        stop_time: time(b.timestamp.stop),
        size_bytes: Some(b.info.size),
        repository_size_bytes: Some(b.info.repository.delta),
        size: Some(human(b.info.size)),
        wal_start: b.archive.start,
        wal_stop: b.archive.stop,
        lsn_start: b.lsn.as_ref().and_then(|l| l.start.clone()),
        lsn_stop: b.lsn.and_then(|l| l.stop),
        ..base
    }
}

/// Bytes for people: `1.2 GiB`.
pub fn human(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a backup Job's pod reported on the e2e tier (pgBackRest 2.55.1, filtered).
    const REPORT: &str = include_str!("fixtures/report-full.json");
    const UID: &str = "3c692b3c-c263-4e94-bf4e-0f7283962f02";

    fn cluster(primary: bool, replicas: &[&str]) -> ClusterFacts {
        ClusterFacts {
            exists: true,
            has_repository: true,
            archiving: Ok(()),
            primary: primary.then(|| "db-0".to_owned()),
            replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn ready_follows_the_phase_and_a_failed_backup_is_stalled() {
        let at = |secs| Time(Timestamp::from_second(secs).unwrap());
        let mut running = PostgresBackupStatus {
            phase: Some(BackupPhase::Running),
            ..Default::default()
        };
        set_conditions(&mut running, &[], Some(1), at(100));
        let ready = conditions::find(&running.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Running")
        );
        assert!(conditions::find(&running.conditions, conditions::STALLED).is_none());

        let mut failed = PostgresBackupStatus {
            phase: Some(BackupPhase::Failed),
            error: Some("[082] WAL segment was not archived".into()),
            ..Default::default()
        };
        set_conditions(&mut failed, &running.conditions, Some(1), at(200));
        let stalled = conditions::find(&failed.conditions, conditions::STALLED).unwrap();
        assert_eq!(
            (
                stalled.status.as_str(),
                stalled.reason.as_str(),
                stalled.message.as_str()
            ),
            ("True", "BackupFailed", "[082] WAL segment was not archived")
        );
        // Still not ready: the transition time is the first one's.
        let ready = conditions::find(&failed.conditions, READY).unwrap();
        assert_eq!(
            (ready.reason.as_str(), &ready.last_transition_time),
            ("Failed", &at(100))
        );

        let mut completed = PostgresBackupStatus {
            phase: Some(BackupPhase::Completed),
            backup_id: Some("20261207-101500F".into()),
            ..Default::default()
        };
        set_conditions(&mut completed, &running.conditions, Some(1), at(300));
        assert!(conditions::is_true(&completed.conditions, READY));
        assert!(conditions::find(&completed.conditions, conditions::STALLED).is_none());
    }

    #[test]
    fn a_standby_is_preferred_when_one_is_ready_and_the_primary_comes_first() {
        assert_eq!(
            next(
                BackupTarget::PreferStandby,
                None,
                &cluster(true, &["db-1"]),
                None
            ),
            Next::Start {
                hosts: vec!["db-0".into(), "db-1".into()],
                prefer_standby: true
            }
        );
        assert_eq!(
            next(BackupTarget::PreferStandby, None, &cluster(true, &[]), None),
            Next::Start {
                hosts: vec!["db-0".into()],
                prefer_standby: false
            }
        );
        assert_eq!(
            next(BackupTarget::Primary, None, &cluster(true, &["db-1"]), None),
            Next::Start {
                hosts: vec!["db-0".into()],
                prefer_standby: false
            }
        );
    }

    #[test]
    fn a_job_that_exists_or_a_finished_backup_starts_nothing() {
        let running = JobFacts::Running { started: None };
        let c = cluster(true, &[]);
        assert_eq!(
            next(BackupTarget::Primary, None, &c, Some(&running)),
            Next::Wait
        );
        for phase in [BackupPhase::Completed, BackupPhase::Failed] {
            assert_eq!(
                next(BackupTarget::Primary, Some(phase), &c, None),
                Next::Wait
            );
        }
    }

    #[test]
    fn without_archiving_or_a_primary_the_backup_waits_and_says_why() {
        let mut c = cluster(true, &[]);
        c.archiving = Err("ContinuousArchiving=False (AccessDenied): refused".into());
        assert_eq!(next(BackupTarget::Primary, None, &c, None), Next::Wait);
        let st = status(&Default::default(), UID, "j", &c, None);
        assert_eq!(st.phase, Some(BackupPhase::Pending));
        assert!(st.error.unwrap().contains("AccessDenied"));
        let st = status(&Default::default(), UID, "j", &cluster(false, &[]), None);
        assert_eq!(st.error.as_deref(), Some("waiting for a primary"));
    }

    #[test]
    fn a_completed_job_gives_pgbackrests_account_of_the_backup() {
        let job = JobFacts::Succeeded {
            report: Some(REPORT.into()),
        };
        let st = status(
            &Default::default(),
            UID,
            "db-full-backup",
            &cluster(true, &[]),
            Some(&job),
        );
        assert_eq!(st.phase, Some(BackupPhase::Completed));
        assert_eq!(st.backup_id.as_deref(), Some("20261205-220354F"));
        assert_eq!(st.size_bytes, Some(23_493_607));
        assert_eq!(st.repository_size_bytes, Some(4_523_266));
        assert_eq!(st.size.as_deref(), Some("22.4 MiB"));
        assert_eq!(st.wal_start.as_deref(), Some("000000010000000000000004"));
        assert_eq!(
            (st.lsn_start.as_deref(), st.lsn_stop.as_deref()),
            (Some("0/4000028"), Some("0/4000158"))
        );
        assert_eq!(st.stop_time.map(|t| t.0.as_second()), Some(1_796_508_236));
        assert_eq!(st.job.as_deref(), Some("db-full-backup"));
        assert_eq!(
            st.recoverable_from.map(|t| t.0.as_second()),
            Some(1_796_508_236),
            "the only backup is the oldest"
        );
    }

    #[test]
    fn a_report_without_this_backup_is_a_failure_not_a_guess() {
        let job = JobFacts::Succeeded {
            report: Some(REPORT.into()),
        };
        let st = status(
            &Default::default(),
            "another-uid",
            "j",
            &cluster(true, &[]),
            Some(&job),
        );
        assert_eq!(st.phase, Some(BackupPhase::Failed));
        assert!(st.error.unwrap().contains("another-uid"));
    }

    #[test]
    fn a_failed_job_shows_pgbackrests_error() {
        let job = JobFacts::Failed {
            output: Some("2026-12-05 22:03:54.100 P00   INFO: backup command begin 2.55.1\n2026-12-05 22:03:55.000 P00  ERROR: [082]: WAL segment 000000010000000000000004 was not archived before the 60000ms timeout\n                                    HINT: check the archive_command.\n".into()),
        };
        let st = status(
            &Default::default(),
            UID,
            "j",
            &cluster(true, &[]),
            Some(&job),
        );
        assert_eq!(st.phase, Some(BackupPhase::Failed));
        assert!(st.error.unwrap().starts_with("[082]: WAL segment"));
    }

    #[test]
    fn a_backup_cut_short_says_the_instance_went_away() {
        // As the e2e tier saw it when the primary was deleted during the backup.
        let job = JobFacts::Failed {
            output: Some("2026-12-05 22:53:40.112 P00  ERROR: [101]: TLS error [1:167772454] unexpected eof while reading\n".into()),
        };
        let st = status(
            &Default::default(),
            UID,
            "j",
            &cluster(true, &[]),
            Some(&job),
        );
        let error = st.error.unwrap();
        assert!(error.contains("lost its connection"), "{error}");
        assert!(
            error.ends_with("[101]: TLS error [1:167772454] unexpected eof while reading"),
            "{error}"
        );
    }

    #[test]
    fn a_finished_backup_keeps_its_status_when_the_job_is_gone() {
        let done = PostgresBackupStatus {
            phase: Some(BackupPhase::Completed),
            backup_id: Some("20261205-220354F".into()),
            ..Default::default()
        };
        assert_eq!(status(&done, UID, "j", &cluster(true, &[]), None), done);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
