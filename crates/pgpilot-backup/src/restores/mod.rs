//! The check before a restore (`spec.bootstrap.restore`): a Job reads the source's
//! repository (its stanza, backups and newest archived WAL), [`plan::choose`] picks the
//! backup that reaches the recovery target or says why none does, and the choice goes to
//! `status.restore` with the `RestoreSourceReady` condition. The cluster controller creates
//! the instances once the choice is there; the first one restores that backup.
//!
//! Checked once: after the choice, nothing here runs again for the cluster (its bootstrap
//! is immutable). A refusal is checked again a minute later, as the source may still be
//! archiving, or the Secret be fixed.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::RestoreStatus;
use pgpilot_postgres::pgbackrest::{self, restore::Source};
use pgpilot_toolkit::conditions::Status;

use crate::error::Error;
use crate::job;
use plan::{Report, Request, Verdict};

/// `pgpilot.io/component` of the check Job and its pod.
pub const COMPONENT: &str = "restore-check";
/// How long a refusal stands before the source is read again.
pub const RETRY_AFTER_SECS: i64 = 60;

pub fn job_name(cluster: &str) -> String {
    format!("{cluster}-restore-check")
}

/// Reads the source's stanza with `info`, the time of its newest archived WAL segment with
/// `repo-ls`, and (when the stanza is missing) which clusters the namespace's path holds;
/// writes a [`Report`] as the termination message (4 KiB at most: middle backups go first).
const SCRIPT: &str = r#"
import json, os, subprocess, sys

def pgbackrest(*args):
    p = subprocess.run(("pgbackrest",) + args, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout + p.stderr)
        sys.exit(p.returncode)
    return json.loads(p.stdout or "null")

stanza = os.environ["PGBACKREST_STANZA"]
info = pgbackrest("info", "--output=json") or [{}]
s = info[0]
backups = sorted(s.get("backup") or [], key=lambda b: b["timestamp"]["stop"])
report = {
    "status": s.get("status"),
    "backups": [[b["label"], b["timestamp"]["stop"], (b.get("lsn") or {}).get("stop")] for b in backups],
}
archives = [a for a in s.get("archive") or [] if a.get("max")]
if archives:
    newest = max(a["max"] for a in archives)
    a = [a for a in archives if a["max"] == newest][-1]
    listing = pgbackrest("repo-ls", "--output=json", "archive/%s/%s/%s" % (stanza, a["id"], newest[:16])) or {}
    times = [v.get("time") for k, v in listing.items() if k.startswith(newest)]
    report["lastWal"] = [newest, max(times) if times else None]
if (s.get("status") or {}).get("code") in (1, 3):
    listing = pgbackrest("repo-ls", "--output=json", "--repo1-path=" + os.environ["PGPILOT_NAMESPACE_PATH"]) or {}
    report["others"] = sorted(k for k, v in listing.items() if v.get("type") == "path" and k != ".")
out = json.dumps(report, separators=(",", ":"))
while len(out) > 3800 and len(report["backups"]) > 2:
    del report["backups"][1]
    report["truncated"] = True
    out = json.dumps(report, separators=(",", ":"))
with open("/dev/termination-log", "w") as f:
    f.write(out)
print(out)
"#;

/// The Job, owned by the cluster, in the image the instances will run.
pub fn job(cluster: &PostgresCluster, source: &Source<'_>, image: &str) -> Result<Job, Error> {
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid {
            field: "metadata.uid",
            message: "the cluster has no uid yet".into(),
        })?;
    let namespace_path =
        pgbackrest::repo_path(&source.spec.repository.s3.path, source.namespace, "");
    job::job(
        cluster,
        job::Spec {
            name: job_name(&cluster.name_any()),
            component: COMPONENT,
            command: vec!["python3".into(), "-c".into(), SCRIPT.into()],
            repository: job::Repository::RestoreSource(source),
            extra_env: vec![EnvVar {
                name: "PGPILOT_NAMESPACE_PATH".into(),
                value: Some(namespace_path.trim_end_matches('/').to_owned()),
                ..Default::default()
            }],
            annotations: BTreeMap::new(),
            owner,
            image,
            retries: 1,
        },
    )
}

/// What the caches show of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    NoJob,
    Running,
    /// The Job completed with this report; `secs_ago`: since it did.
    Read {
        report: String,
        secs_ago: i64,
    },
    /// pgBackRest failed: its output.
    Failed {
        output: String,
        secs_ago: i64,
    },
}

pub fn seen(job: Option<&Job>, pods: &[Arc<Pod>]) -> Seen {
    let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
        return Seen::NoJob;
    };
    let ago = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| Timestamp::now().as_second() - t.0.as_second())
            .unwrap_or_default()
    };
    if let Some(c) = job::condition(job, "Complete") {
        return Seen::Read {
            report: job::last_message(job, pods, false).unwrap_or_default(),
            secs_ago: ago(c.last_transition_time.as_ref()),
        };
    }
    if let Some(c) = job::condition(job, "Failed") {
        return Seen::Failed {
            output: job::last_message(job, pods, true).unwrap_or_default(),
            secs_ago: ago(c.last_transition_time.as_ref()),
        };
    }
    Seen::Running
}

/// The next step and what the cluster's status says.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub job: JobStep,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
    /// The choice, once made.
    pub chosen: Option<RestoreStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStep {
    Nothing,
    Create,
    /// Its refusal is old enough to look again.
    Delete,
}

pub fn step(source: &Source<'_>, request: &Request<'_>, seen: &Seen) -> Step {
    let stanza = source.stanza();
    let checking = |job| Step {
        job,
        status: Status::Unknown,
        reason: "Checking",
        message: format!("Job {} reads stanza {stanza}", COMPONENT),
        chosen: None,
    };
    let retry = |secs_ago: i64| {
        if secs_ago >= RETRY_AFTER_SECS {
            JobStep::Delete
        } else {
            JobStep::Nothing
        }
    };
    match seen {
        Seen::NoJob => checking(JobStep::Create),
        Seen::Running => checking(JobStep::Nothing),
        Seen::Failed { output, secs_ago } => {
            let f = pgbackrest::archive_failure(output, &source.spec.repository);
            Step {
                job: retry(*secs_ago),
                status: Status::False,
                reason: f.reason,
                message: format!(
                    "cannot read the source's repository: {}",
                    f.message
                        .replacen("could not archive WAL", "could not read", 1)
                ),
                chosen: None,
            }
        }
        Seen::Read { report, secs_ago } => {
            let verdict = match serde_json::from_str::<Report>(report) {
                Ok(r) => plan::choose(&r, request),
                Err(e) => Verdict::Refused {
                    reason: "CheckFailed",
                    message: format!("the check Job's report is unreadable ({e}): {report}"),
                },
            };
            match verdict {
                // The Job stays until the choice is read back: a reconcile that does not see
                // it yet must not check (and maybe choose) again.
                Verdict::Chosen { backup, message } => Step {
                    job: JobStep::Nothing,
                    status: Status::True,
                    reason: "BackupChosen",
                    message,
                    chosen: Some(RestoreStatus {
                        stanza,
                        backup_id: backup.label,
                        backup_stop_time: Timestamp::from_second(backup.stop)
                            .ok()
                            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
                    }),
                },
                Verdict::Refused { reason, message } => Step {
                    job: retry(*secs_ago),
                    status: Status::False,
                    reason,
                    message,
                    chosen: None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_api::cluster::RestoreSpec;

    fn source_spec() -> RestoreSpec {
        serde_yaml::from_str(
            "source: {name: old}\nrepository: {s3: {endpoint: 'minio.storage.svc:9000', bucket: backups, credentials: {secretName: s3}, caBundle: {name: minio-ca, key: ca.crt}}}",
        )
        .unwrap()
    }

    fn request() -> Request<'static> {
        Request {
            stanza: "prod-old",
            backup_id: None,
            target: None,
            now: 1_796_600_000,
        }
    }

    #[test]
    fn the_check_job_reads_only_the_source_with_no_secret_in_it() {
        let c = crate::job::tests::cluster();
        let spec = source_spec();
        let source = Source::new(&spec, "prod");
        let j = job(&c, &source, "localhost/pgpilot/postgres:17").unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("db-restore-check"));
        let pod = j.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(env["PGBACKREST_STANZA"].value.as_deref(), Some("prod-old"));
        assert_eq!(
            env["PGBACKREST_REPO1_PATH"].value.as_deref(),
            Some("/pgbackrest/prod/old")
        );
        assert_eq!(
            env["PGPILOT_NAMESPACE_PATH"].value.as_deref(),
            Some("/pgbackrest/prod")
        );
        assert!(env["PGBACKREST_REPO1_S3_KEY_SECRET"].value.is_none());
        // Not the cluster's own repository: no pgbackrest.conf, no TLS client certificate.
        let mounts: Vec<_> = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert_eq!(mounts, ["/etc/pgbackrest-restore-ca", "/tmp"]);
        assert!(!env.contains_key("PGBACKREST_PG1_HOST"));
    }

    #[test]
    fn a_choice_ends_the_check_and_a_refusal_is_looked_at_again_later() {
        let spec = source_spec();
        let source = Source::new(&spec, "prod");
        assert_eq!(step(&source, &request(), &Seen::NoJob).job, JobStep::Create);
        let running = step(&source, &request(), &Seen::Running);
        assert_eq!(
            (running.job, running.status),
            (JobStep::Nothing, Status::Unknown)
        );

        let report = r#"{"status":{"code":0,"message":"ok"},"backups":[["20261206-100000F",1796551200,"0/3000100"]],"lastWal":["000000010000000000000009",1796560200]}"#;
        let s = step(
            &source,
            &request(),
            &Seen::Read {
                report: report.into(),
                secs_ago: 1,
            },
        );
        assert_eq!(
            (s.job, s.status, s.reason),
            (JobStep::Nothing, Status::True, "BackupChosen")
        );
        let chosen = s.chosen.unwrap();
        assert_eq!(chosen.backup_id, "20261206-100000F");
        assert_eq!(chosen.stanza, "prod-old");

        let empty = r#"{"status":{"code":1,"message":"missing stanza path"}}"#;
        let seen = |secs_ago| Seen::Read {
            report: empty.into(),
            secs_ago,
        };
        let s = step(&source, &request(), &seen(5));
        assert_eq!(
            (s.job, s.status, s.reason),
            (JobStep::Nothing, Status::False, "StanzaNotFound")
        );
        assert_eq!(step(&source, &request(), &seen(60)).job, JobStep::Delete);
    }

    #[test]
    fn a_failed_read_says_what_to_fix() {
        let spec = source_spec();
        let source = Source::new(&spec, "prod");
        let s = step(
            &source,
            &request(),
            &Seen::Failed {
                output: "ERROR: [049]: unable to connect to 'minio.storage.svc:9000': Connection refused".into(),
                secs_ago: 0,
            },
        );
        assert_eq!((s.status, s.reason), (Status::False, "EndpointUnreachable"));
        assert!(s.message.starts_with("cannot read the source's repository: cannot reach the object store at minio.storage.svc:9000"), "{}", s.message);
    }
}
