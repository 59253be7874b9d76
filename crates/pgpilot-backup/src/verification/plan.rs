//! Where a verification stands and what to do next: pure, from what the caches show of the
//! throwaway cluster and its check Job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgpilot_api::common::{VerificationResult, VerificationSpec, VerificationStatus};
use serde::Deserialize;

/// An instance that restarted this often did not come up from the restore.
pub const MAX_RESTARTS: i32 = 3;

/// The throwaway cluster as the caches show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Throwaway {
    pub ready: bool,
    /// The backup controller's refusal of its restore (`RestoreSourceReady=False`).
    pub refused: Option<String>,
    /// Restarts of its first instance's `postgres` container.
    pub restarts: i32,
    /// `status.restore.backupStopTime`: the point the restore reaches.
    pub recovered_to: Option<Time>,
}

/// The check Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Running,
    Succeeded { report: String },
    Failed { output: String },
}

/// What the check Job reports.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub tables: i64,
    pub rows: i64,
    /// The user's query passed (absent without one).
    #[serde(default)]
    pub query: Option<bool>,
    #[serde(default)]
    pub query_rows: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub create_cluster: bool,
    pub create_check: bool,
    pub delete_cluster: bool,
    pub status: VerificationStatus,
}

pub struct Facts<'a> {
    pub spec: &'a VerificationSpec,
    pub backup: &'a str,
    pub backup_id: &'a str,
    pub previous: Option<&'a VerificationStatus>,
    pub throwaway: Option<&'a Throwaway>,
    pub check: Option<&'a Check>,
    pub now: Timestamp,
}

pub fn step(f: &Facts<'_>) -> Step {
    let start = f
        .previous
        .and_then(|p| p.start_time.clone())
        .unwrap_or(Time(f.now));
    let base = VerificationStatus {
        backup: Some(f.backup.to_owned()),
        start_time: Some(start.clone()),
        recovered_to: f
            .throwaway
            .and_then(|t| t.recovered_to.clone())
            .or_else(|| f.previous.and_then(|p| p.recovered_to.clone())),
        ..Default::default()
    };
    let running = |message: String, create_cluster, create_check| Step {
        create_cluster,
        create_check,
        delete_cluster: false,
        status: VerificationStatus {
            result: VerificationResult::Running,
            message: Some(message),
            ..base.clone()
        },
    };
    // The throwaway cluster goes on a later reconcile, once the result is read back: one that
    // reads a stale status meanwhile still finds the cluster and comes to the same result.
    let done = |result, message: String, report: Option<&Report>| Step {
        create_cluster: false,
        create_check: false,
        delete_cluster: false,
        status: VerificationStatus {
            result,
            completion_time: Some(Time(f.now)),
            duration_seconds: Some(f.now.as_second() - start.0.as_second()),
            tables: report.map(|r| r.tables),
            rows: report.map(|r| r.rows),
            message: Some(message),
            ..base.clone()
        },
    };
    // Finished: only the throwaway cluster goes, if it is still there.
    if let Some(p) = f
        .previous
        .filter(|p| p.result != VerificationResult::Running)
    {
        return Step {
            create_cluster: false,
            create_check: false,
            delete_cluster: f.throwaway.is_some(),
            status: p.clone(),
        };
    }
    let elapsed = f.now.as_second() - start.0.as_second();
    if elapsed > f.spec.timeout_seconds {
        return done(
            VerificationResult::Failed,
            format!(
                "not verified within {} s (verification.timeoutSeconds): the restore or the checks took too long",
                f.spec.timeout_seconds
            ),
            None,
        );
    }
    let Some(t) = f.throwaway else {
        return match f.previous {
            None => running(
                format!("restoring backup {} into a throwaway cluster", f.backup_id),
                true,
                false,
            ),
            // Created once: missing now, it is not in the cache yet, or this read of the
            // backup is older than the result that let it go. Nothing changes.
            Some(p) => Step {
                create_cluster: false,
                create_check: false,
                delete_cluster: false,
                status: p.clone(),
            },
        };
    };
    if let Some(why) = &t.refused {
        return done(
            VerificationResult::Failed,
            format!("backup {} cannot be restored: {why}", f.backup_id),
            None,
        );
    }
    if t.restarts >= MAX_RESTARTS {
        return done(
            VerificationResult::Failed,
            format!(
                "backup {} did not restore: the throwaway instance restarted {} times without starting PostgreSQL from it (pgBackRest or PostgreSQL refused the restored files)",
                f.backup_id, t.restarts
            ),
            None,
        );
    }
    if !t.ready {
        return running(
            format!("restoring backup {} into a throwaway cluster", f.backup_id),
            false,
            false,
        );
    }
    match f.check {
        None => running("reading every table".into(), false, true),
        Some(Check::Running) => running("reading every table".into(), false, false),
        Some(Check::Failed { output }) => done(
            VerificationResult::Failed,
            format!("the restored data could not be read: {}", output.trim()),
            None,
        ),
        Some(Check::Succeeded { report }) => match serde_json::from_str::<Report>(report) {
            Err(e) => done(
                VerificationResult::Failed,
                format!("the check's report is unreadable ({e}): {report}"),
                None,
            ),
            Ok(r) if r.query == Some(false) => done(
                VerificationResult::Failed,
                format!(
                    "every table was read ({} tables, {} rows), but the verification query did not return only true ({} rows)",
                    r.tables,
                    r.rows,
                    r.query_rows.unwrap_or_default()
                ),
                Some(&r),
            ),
            Ok(r) => done(
                VerificationResult::Passed,
                format!(
                    "backup {} restored; {} tables read, {} rows{}",
                    f.backup_id,
                    r.tables,
                    r.rows,
                    if r.query.is_some() {
                        "; the verification query returned true"
                    } else {
                        ""
                    }
                ),
                Some(&r),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VerificationSpec {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn facts<'a>(
        spec: &'a VerificationSpec,
        previous: Option<&'a VerificationStatus>,
        throwaway: Option<&'a Throwaway>,
        check: Option<&'a Check>,
        now: i64,
    ) -> Facts<'a> {
        Facts {
            spec,
            backup: "nightly-1",
            backup_id: "20261206-030000F",
            previous,
            throwaway,
            check,
            now: at(now),
        }
    }

    #[test]
    fn a_verification_restores_then_reads_then_cleans_up() {
        let s = spec();
        let first = step(&facts(&s, None, None, None, 0));
        assert!(first.create_cluster && !first.create_check && !first.delete_cluster);
        assert_eq!(first.status.result, VerificationResult::Running);

        let restoring = Throwaway::default();
        let st = step(&facts(&s, Some(&first.status), Some(&restoring), None, 30));
        assert!(!st.create_cluster && !st.create_check);
        // Not in the cache yet (or already gone while the result is not read back): never a
        // second cluster.
        let st = step(&facts(&s, Some(&first.status), None, None, 31));
        assert!(!st.create_cluster);
        assert_eq!(st.status, first.status, "a stale read changes nothing");

        let ready = Throwaway {
            ready: true,
            recovered_to: Some(Time(at(-60))),
            ..Default::default()
        };
        let st = step(&facts(&s, Some(&first.status), Some(&ready), None, 60));
        assert!(st.create_check);

        let report = Check::Succeeded {
            report: r#"{"tables":3,"rows":1200}"#.into(),
        };
        let st = step(&facts(
            &s,
            Some(&first.status),
            Some(&ready),
            Some(&report),
            90,
        ));
        assert!(
            !st.delete_cluster,
            "the cluster goes once the result is read back"
        );
        assert_eq!(st.status.result, VerificationResult::Passed);
        assert_eq!((st.status.tables, st.status.rows), (Some(3), Some(1200)));
        assert_eq!(st.status.duration_seconds, Some(90));
        assert_eq!(st.status.recovered_to, Some(Time(at(-60))));

        // Read back, the result stands and the throwaway cluster goes.
        let again = step(&facts(&s, Some(&st.status), Some(&ready), None, 200));
        assert_eq!(again.status, st.status);
        assert!(again.delete_cluster && !again.create_cluster);
        let gone = step(&facts(&s, Some(&st.status), None, None, 210));
        assert!(!gone.delete_cluster && !gone.create_cluster);
    }

    #[test]
    fn a_backup_that_does_not_restore_or_read_fails_visibly() {
        let s = spec();
        let first = step(&facts(&s, None, None, None, 0)).status;
        let crashing = Throwaway {
            restarts: MAX_RESTARTS,
            ..Default::default()
        };
        let st = step(&facts(&s, Some(&first), Some(&crashing), None, 100));
        assert_eq!(st.status.result, VerificationResult::Failed);
        assert!(
            st.status
                .message
                .clone()
                .unwrap()
                .contains("restarted 3 times")
        );
        let after = step(&facts(&s, Some(&st.status), Some(&crashing), None, 110));
        assert!(after.delete_cluster && after.status == st.status);

        let refused = Throwaway {
            refused: Some("backup 20261206-030000F is not in stanza prod-db".into()),
            ..Default::default()
        };
        let st = step(&facts(&s, Some(&first), Some(&refused), None, 100));
        assert_eq!(st.status.result, VerificationResult::Failed);

        let ready = Throwaway {
            ready: true,
            ..Default::default()
        };
        let unreadable = Check::Failed {
            output: "prod.public.orders: could not read block 7".into(),
        };
        let st = step(&facts(
            &s,
            Some(&first),
            Some(&ready),
            Some(&unreadable),
            100,
        ));
        assert!(
            st.status
                .message
                .unwrap()
                .ends_with("could not read block 7")
        );

        let query_false = Check::Succeeded {
            report: r#"{"tables":1,"rows":0,"query":false,"queryRows":1}"#.into(),
        };
        let st = step(&facts(
            &s,
            Some(&first),
            Some(&ready),
            Some(&query_false),
            100,
        ));
        assert_eq!(st.status.result, VerificationResult::Failed);
    }

    #[test]
    fn a_verification_that_takes_too_long_fails() {
        let s = spec();
        let first = step(&facts(&s, None, None, None, 0)).status;
        let restoring = Throwaway::default();
        let st = step(&facts(&s, Some(&first), Some(&restoring), None, 3601));
        assert_eq!(st.status.result, VerificationResult::Failed);
    }
}
