//! Decisions, pure: what to do about the stanza Job, and what the `ContinuousArchiving`
//! condition says, from what the reconcile observed.

use pgpilot_api::cluster::BackupSpec;
use pgpilot_postgres::archiver::Archiver;
use pgpilot_postgres::pgbackrest;
use pgpilot_toolkit::conditions::Status;

/// The condition this controller owns on a PostgresCluster.
pub use pgpilot_api::cluster::condition::CONTINUOUS_ARCHIVING;

/// The stanza Job as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaJob {
    /// The configuration it was made from ([`super::stanza::config_hash`]).
    pub hash: String,
    pub outcome: JobOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Running; `last_failure` is the termination message of its latest failed pod (the
    /// Job itself retries with a growing delay).
    Running {
        last_failure: Option<String>,
    },
    Succeeded,
    /// Out of retries `secs_ago` seconds ago, with its last pod's termination message.
    Failed {
        message: Option<String>,
        secs_ago: i64,
    },
}

/// The one thing to do about the stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StanzaStep {
    /// Nothing: it is ready, running, or waiting for its retry or for a primary.
    Wait,
    Create,
    /// Delete the Job: made from another configuration, or out of retries a while ago (the
    /// next reconcile creates a new one).
    Delete,
}

/// How long a Job out of retries stays (and its failure shown) before a new one starts.
pub const RETRY_AFTER_SECS: i64 = 60;

pub fn stanza_step(job: Option<&StanzaJob>, hash: &str, have_primary: bool) -> StanzaStep {
    match job {
        None if have_primary => StanzaStep::Create,
        None => StanzaStep::Wait,
        Some(j) if j.hash != hash => StanzaStep::Delete,
        Some(j) => match &j.outcome {
            JobOutcome::Failed { secs_ago, .. } if *secs_ago >= RETRY_AFTER_SECS => {
                StanzaStep::Delete
            }
            _ => StanzaStep::Wait,
        },
    }
}

/// What `ContinuousArchiving` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archiving {
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

/// The condition from the stanza's state and the primary's archiver (`Err`: why it could
/// not be read). `previous` is the live condition: while a retry runs, a failure stays shown.
pub fn archiving(
    backup: &BackupSpec,
    stanza: &str,
    job: Option<&StanzaJob>,
    hash: &str,
    archiver: Option<&Result<Archiver, String>>,
    previous: Option<(Status, &str, &str)>,
) -> Archiving {
    let s3 = &backup.repository.s3;
    let repo = format!("s3://{}{}", s3.bucket, s3.path.trim_end_matches('/'));
    let unknown = |reason, message: String| Archiving {
        status: Status::Unknown,
        reason,
        message,
    };
    let failed = |error: &str| {
        let f = pgbackrest::archive_failure(error, &backup.repository);
        Archiving {
            status: Status::False,
            reason: f.reason,
            message: f.message,
        }
    };
    let job = job.filter(|j| j.hash == hash);
    match job.map(|j| &j.outcome) {
        Some(JobOutcome::Succeeded) => {}
        Some(
            JobOutcome::Failed {
                message: Some(message),
                ..
            }
            | JobOutcome::Running {
                last_failure: Some(message),
            },
        ) => return failed(message),
        Some(JobOutcome::Failed { message: None, .. }) => {
            return failed("the stanza Job failed without a message");
        }
        running_or_none => {
            if let Some((Status::False, reason, message)) = previous {
                return Archiving {
                    status: Status::False,
                    reason: known_reason(reason),
                    message: message.to_owned(),
                };
            }
            return unknown(
                "CreatingStanza",
                if running_or_none.is_some() {
                    format!("creating and checking stanza {stanza} in {repo}")
                } else {
                    format!("waiting for a primary to create stanza {stanza} in {repo}")
                },
            );
        }
    }
    match archiver {
        None => unknown(
            "NoPrimary",
            "no primary to read the archiver from".to_owned(),
        ),
        Some(Err(e)) => unknown(
            "ArchiverUnreadable",
            format!("reading pg_stat_archiver: {e}"),
        ),
        Some(Ok(a)) if a.failing() => match &a.error {
            Some(e) => failed(e),
            None => Archiving {
                status: Status::False,
                reason: "ArchiveFailed",
                message: format!(
                    "PostgreSQL could not archive {} (pgBackRest left no message; see the primary's log)",
                    a.last_failed_wal.as_deref().unwrap_or("a segment")
                ),
            },
        },
        Some(Ok(a)) => match &a.last_archived_wal {
            Some(wal) => Archiving {
                status: Status::True,
                reason: "Archiving",
                message: format!("WAL is archived to {repo} (stanza {stanza}); last segment {wal}"),
            },
            None => unknown(
                "WaitingForArchive",
                format!("stanza {stanza} is ready in {repo}; no segment archived yet"),
            ),
        },
    }
}

/// Reasons are `&'static str`; a previous condition's reason maps back to one of ours.
fn known_reason(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "AccessDenied",
        "BucketNotFound",
        "TLSFailure",
        "EndpointUnreachable",
        "StanzaMissing",
        "ArchiveFailed",
    ];
    KNOWN
        .iter()
        .find(|k| **k == reason)
        .copied()
        .unwrap_or("ArchiveFailed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> BackupSpec {
        serde_yaml::from_str(
            "repository:\n  s3: {endpoint: 'minio:9000', bucket: backups, credentials: {secretName: s3}}\n",
        )
        .unwrap()
    }

    fn job(outcome: JobOutcome) -> StanzaJob {
        StanzaJob {
            hash: "h1".into(),
            outcome,
        }
    }

    const DENIED: &str =
        "104\nHTTP request failed with 403 (Forbidden): <Code>InvalidAccessKeyId</Code>";

    fn failed(secs_ago: i64) -> JobOutcome {
        JobOutcome::Failed {
            message: Some(DENIED.into()),
            secs_ago,
        }
    }

    fn running() -> JobOutcome {
        JobOutcome::Running { last_failure: None }
    }

    #[test]
    fn a_stanza_job_is_created_once_there_is_a_primary() {
        assert_eq!(stanza_step(None, "h1", false), StanzaStep::Wait);
        assert_eq!(stanza_step(None, "h1", true), StanzaStep::Create);
    }

    #[test]
    fn a_job_from_another_configuration_is_replaced() {
        let j = job(JobOutcome::Succeeded);
        assert_eq!(stanza_step(Some(&j), "h2", true), StanzaStep::Delete);
    }

    #[test]
    fn a_job_out_of_retries_is_replaced_a_minute_later() {
        assert_eq!(
            stanza_step(Some(&job(failed(5))), "h1", true),
            StanzaStep::Wait
        );
        assert_eq!(
            stanza_step(Some(&job(failed(60))), "h1", true),
            StanzaStep::Delete
        );
    }

    #[test]
    fn success_and_running_wait() {
        for outcome in [running(), JobOutcome::Succeeded] {
            assert_eq!(
                stanza_step(Some(&job(outcome)), "h1", true),
                StanzaStep::Wait
            );
        }
    }

    fn archiver(archived: Option<&str>, failing: bool, error: Option<&str>) -> Archiver {
        Archiver {
            last_archived_wal: archived.map(str::to_owned),
            last_archived_at: archived.map(|_| 10),
            last_failed_wal: failing.then(|| "000000010000000000000004".to_owned()),
            last_failed_at: failing.then_some(20),
            current_wal: Some("000000010000000000000005".into()),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn archiving_is_true_once_the_stanza_is_ready_and_segments_arrive() {
        let j = job(JobOutcome::Succeeded);
        let a = Ok(archiver(Some("000000010000000000000003"), false, None));
        let c = archiving(&backup(), "prod-db", Some(&j), "h1", Some(&a), None);
        assert_eq!((c.status, c.reason), (Status::True, "Archiving"));
        assert!(
            c.message.contains("000000010000000000000003"),
            "{}",
            c.message
        );
        assert!(
            c.message.contains("s3://backups/pgbackrest"),
            "{}",
            c.message
        );

        let a = Ok(archiver(None, false, None));
        let c = archiving(&backup(), "prod-db", Some(&j), "h1", Some(&a), None);
        assert_eq!((c.status, c.reason), (Status::Unknown, "WaitingForArchive"));
    }

    #[test]
    fn a_failing_archiver_says_why_in_pgbackrests_words() {
        let j = job(JobOutcome::Succeeded);
        let a = Ok(archiver(
            Some("000000010000000000000003"),
            true,
            Some("39\nunable to connect to 'minio:9000': [111] Connection refused"),
        ));
        let c = archiving(&backup(), "prod-db", Some(&j), "h1", Some(&a), None);
        assert_eq!((c.status, c.reason), (Status::False, "EndpointUnreachable"));
        assert!(c.message.contains("Connection refused"), "{}", c.message);
    }

    #[test]
    fn a_failed_stanza_job_shows_its_reason_while_it_retries_and_after() {
        for outcome in [
            failed(3),
            JobOutcome::Running {
                last_failure: Some(DENIED.into()),
            },
        ] {
            let c = archiving(&backup(), "prod-db", Some(&job(outcome)), "h1", None, None);
            assert_eq!((c.status, c.reason), (Status::False, "AccessDenied"));
            assert!(c.message.contains("Secret s3"), "{}", c.message);
        }
    }

    #[test]
    fn a_new_job_keeps_the_last_failure_shown_until_it_knows_better() {
        let c = archiving(
            &backup(),
            "prod-db",
            Some(&job(failed(70))),
            "h1",
            None,
            None,
        );
        let previous = Some((Status::False, c.reason, c.message.as_str()));
        let again = archiving(
            &backup(),
            "prod-db",
            Some(&job(running())),
            "h1",
            None,
            previous,
        );
        assert_eq!(again, c);
        let first = archiving(
            &backup(),
            "prod-db",
            Some(&job(running())),
            "h1",
            None,
            None,
        );
        assert_eq!(
            (first.status, first.reason),
            (Status::Unknown, "CreatingStanza")
        );
    }

    #[test]
    fn no_primary_no_reading() {
        let j = job(JobOutcome::Succeeded);
        let c = archiving(&backup(), "prod-db", Some(&j), "h1", None, None);
        assert_eq!((c.status, c.reason), (Status::Unknown, "NoPrimary"));
        let c = archiving(&backup(), "prod-db", None, "h1", None, None);
        assert_eq!((c.status, c.reason), (Status::Unknown, "CreatingStanza"));
        assert!(c.message.contains("waiting for a primary"));
    }
}
