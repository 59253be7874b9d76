//! Backup verification: a completed PostgresBackup with `spec.verification` is restored into
//! a throwaway one-instance PostgresCluster (`bootstrap.restore` of exactly that backup, to
//! its end), every table of every database is read and counted by a Job, the user's query
//! runs, and the cluster goes again with its volume. The outcome is the backup's
//! `status.verification` (and its schedule's `lastVerification`).
//!
//! The throwaway cluster is an ordinary PostgresCluster owned by the backup: the cluster
//! controller runs it, this controller's restore check chooses its backup; nothing here
//! touches a database pod.

pub mod plan;

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Pod, SecretKeySelector};
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::backup::PostgresBackup;
use pgpilot_api::cluster::ClusterPhase;
use pgpilot_api::cluster::condition::RESTORE_SOURCE_READY;
use pgpilot_api::common::VerificationSpec;
use pgpilot_api::labels;
use pgpilot_postgres::names::Names;
use pgpilot_toolkit::conditions;
use serde_json::json;

use crate::error::Error;
use crate::job;
use plan::{Check, Throwaway};

/// `pgpilot.io/component` of the check Job and its pod.
pub const COMPONENT: &str = "verification";
/// Label on a throwaway cluster: the PostgresBackup it verifies.
pub const VERIFIES: &str = "pgpilot.io/verifies";

/// The throwaway cluster's name: short enough for every child's name and label.
pub fn cluster_name(backup: &PostgresBackup) -> String {
    crate::backups::derived_name(backup, "verify", 40)
}

pub fn check_job_name(backup: &PostgresBackup) -> String {
    format!("{}-check", cluster_name(backup))
}

/// The throwaway cluster: one instance shaped like the source (version, image, storage,
/// resources, parameters), restored from `backup_id` to the backup's end, its volume deleted
/// with it, owned by the backup.
pub fn throwaway(
    backup: &PostgresBackup,
    source: &PostgresCluster,
    backup_id: &str,
) -> Result<PostgresCluster, Error> {
    let repository = source
        .spec
        .backup
        .as_ref()
        .map(|b| b.repository.clone())
        .ok_or_else(|| Error::Invalid {
            field: "spec.backup",
            message: format!(
                "cluster {} has no backup repository to verify from",
                source.name_any()
            ),
        })?;
    let owner = backup
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid {
            field: "metadata.uid",
            message: "the backup has no uid yet".into(),
        })?;
    let src = &source.spec;
    let value = json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {
            "name": cluster_name(backup),
            "namespace": backup.namespace(),
            "labels": {
                VERIFIES: backup.name_any(),
                labels::MANAGED_BY: labels::MANAGED_BY_VALUE,
            },
            "ownerReferences": [owner],
        },
        "spec": {
            "instances": 1,
            "postgresql": {
                "version": src.postgresql.version,
                "image": src.postgresql.image,
                "parameters": src.postgresql.parameters,
            },
            "storage": src.storage,
            "resources": src.resources,
            "bootstrap": {
                "restore": {
                    "source": {"name": source.name_any()},
                    "repository": repository,
                    "backupId": backup_id,
                },
                "recoveryTarget": {"immediate": true},
            },
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        },
    });
    serde_json::from_value(value).map_err(|e| Error::Invalid {
        field: "spec",
        message: format!("cannot build the verification cluster: {e}"),
    })
}

/// Reads every table of every database (sequential scans: the heap itself, not an index)
/// and counts its rows, then runs the user's query; writes a [`plan::Report`]. A table that
/// cannot be read fails the Job with its name and PostgreSQL's error.
const SCRIPT: &str = r#"
import json, os, sys, time
import psycopg2
from psycopg2 import sql

# A new pod may be refused for a moment: a NetworkPolicy enforcer lets its address in
# within a second or two. Unreachable (not a refused login) is tried again for a minute.
UNREACHABLE = ("Connection refused", "timeout expired", "No route to host")

def connect(db):
    deadline = time.monotonic() + 60
    while True:
        try:
            c = psycopg2.connect(host=os.environ["PGPILOT_HOST"], user="postgres", dbname=db, connect_timeout=10)
            break
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline or not any(u in str(e) for u in UNREACHABLE):
                raise
            time.sleep(0.5)
    c.set_session(readonly=True, autocommit=True)
    return c

with connect("postgres").cursor() as cur:
    cur.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
    databases = [r[0] for r in cur.fetchall()]
tables = rows = 0
for db in databases:
    cur = connect(db).cursor()
    cur.execute("SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2")
    for schema, table in cur.fetchall():
        try:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        except psycopg2.Error as e:
            print("%s.%s.%s: %s" % (db, schema, table, str(e).strip()))
            sys.exit(1)
        n = cur.fetchone()[0]
        print("%s.%s.%s %d rows" % (db, schema, table, n))
        tables += 1
        rows += n
report = {"tables": tables, "rows": rows}
query = os.environ.get("PGPILOT_QUERY")
if query:
    cur = connect(os.environ["PGPILOT_DATABASE"]).cursor()
    try:
        cur.execute(query)
        result = cur.fetchall()
    except psycopg2.Error as e:
        print("the verification query failed: %s" % str(e).strip())
        sys.exit(1)
    report["query"] = bool(result) and all(r and r[0] is True for r in result)
    report["queryRows"] = len(result)
with open("/dev/termination-log", "w") as f:
    json.dump(report, f)
print(json.dumps(report))
"#;

/// The check Job, owned by the throwaway cluster (it goes with it).
pub fn check_job(
    backup: &PostgresBackup,
    throwaway: &PostgresCluster,
    spec: &VerificationSpec,
    image: &str,
) -> Result<Job, Error> {
    let owner = throwaway
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid {
            field: "metadata.uid",
            message: "the verification cluster has no uid yet".into(),
        })?;
    let names = Names::new(&throwaway.name_any());
    let ns = throwaway.namespace().unwrap_or_default();
    let env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let mut extra_env = vec![
        env("PGPILOT_HOST", names.rw_host(&ns)),
        env("PGPILOT_DATABASE", spec.database.clone()),
        EnvVar {
            name: "PGPASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.superuser_secret(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(q) = &spec.query {
        extra_env.push(env("PGPILOT_QUERY", q.clone()));
    }
    job::job(
        throwaway,
        job::Spec {
            name: check_job_name(backup),
            component: COMPONENT,
            command: vec!["python3".into(), "-c".into(), SCRIPT.into()],
            repository: job::Repository::None,
            extra_env,
            annotations: BTreeMap::new(),
            owner,
            image,
            retries: 0,
        },
    )
}

/// The throwaway cluster as the caches show it.
pub fn observe(cluster: &PostgresCluster, pods: &[std::sync::Arc<Pod>]) -> Throwaway {
    let status = cluster.status.as_ref();
    let refused = status
        .and_then(|s| conditions::find(&s.conditions, RESTORE_SOURCE_READY))
        .filter(|c| c.status == "False")
        .map(|c| format!("{}: {}", c.reason, c.message));
    let restarts = pods
        .iter()
        .filter(|p| p.labels().get(labels::COMPONENT).map(String::as_str) == Some("instance"))
        .flat_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default()
        })
        .filter(|c| c.name == "postgres")
        .map(|c| c.restart_count)
        .max()
        .unwrap_or_default();
    Throwaway {
        ready: status.and_then(|s| s.phase) == Some(ClusterPhase::Ready),
        refused,
        restarts,
        recovered_to: status
            .and_then(|s| s.restore.as_ref())
            .and_then(|r| r.backup_stop_time.clone()),
    }
}

/// The check Job's state.
pub fn check(job_: &Job, pods: &[std::sync::Arc<Pod>]) -> Check {
    if job::condition(job_, "Complete").is_some() {
        Check::Succeeded {
            report: job::last_message(job_, pods, false).unwrap_or_default(),
        }
    } else if job::condition(job_, "Failed").is_some() {
        Check::Failed {
            output: job::last_message(job_, pods, true).unwrap_or_default(),
        }
    } else {
        Check::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str) -> PostgresBackup {
        serde_json::from_value(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": name, "namespace": "prod", "uid": "0123456789abcdef"},
            "spec": {"cluster": {"name": "db"}, "verification": {"query": "SELECT true"}},
        }))
        .unwrap()
    }

    #[test]
    fn the_throwaway_cluster_restores_exactly_the_backup_and_leaves_no_volume() {
        let source = crate::job::tests::cluster();
        let c = throwaway(&backup("db-nightly-1"), &source, "20261206-030000F").unwrap();
        assert_eq!(c.name_any(), "db-nightly-1-verify");
        assert_eq!(c.labels()[VERIFIES], "db-nightly-1");
        assert_eq!(c.owner_references()[0].kind, "PostgresBackup");
        assert_eq!(c.spec.instances, 1);
        let b = c.spec.bootstrap.as_ref().unwrap();
        let r = b.restore.as_ref().unwrap();
        assert_eq!(r.source.name, "db");
        assert_eq!(r.backup_id.as_deref(), Some("20261206-030000F"));
        assert_eq!(
            r.repository,
            source.spec.backup.as_ref().unwrap().repository
        );
        assert_eq!(b.recovery_target.as_ref().unwrap().immediate, Some(true));
        assert!(
            c.spec.backup.is_none(),
            "the throwaway cluster archives nothing"
        );
        let pvc = c.spec.pvc_retention();
        assert_eq!(pvc.when_deleted, pgpilot_api::cluster::PvcPolicy::Delete);
    }

    #[test]
    fn names_fit_every_child() {
        let long = backup(&"n".repeat(60));
        let c = cluster_name(&long);
        assert!(c.len() <= 40, "{c}");
        assert!(c.ends_with("-01234567-verify"), "{c}");
        assert!(check_job_name(&long).len() <= 63);
    }

    #[test]
    fn the_check_job_reads_the_throwaway_cluster_with_its_own_password() {
        let b = backup("db-nightly-1");
        let c = {
            let mut c = throwaway(&b, &crate::job::tests::cluster(), "x").unwrap();
            c.metadata.uid = Some("uid-2".into());
            c
        };
        let spec = b.spec.verification.clone().unwrap();
        let j = check_job(&b, &c, &spec, "img").unwrap();
        assert_eq!(
            j.metadata.name.as_deref(),
            Some("db-nightly-1-verify-check")
        );
        let pod = j.spec.unwrap().template.spec.unwrap();
        let env: BTreeMap<_, _> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(
            env["PGPILOT_HOST"].value.as_deref(),
            Some("db-nightly-1-verify-rw.prod.svc")
        );
        assert_eq!(env["PGPILOT_QUERY"].value.as_deref(), Some("SELECT true"));
        let pw = env["PGPASSWORD"].value_from.as_ref().unwrap();
        assert_eq!(
            pw.secret_key_ref.as_ref().unwrap().name,
            "db-nightly-1-verify-superuser"
        );
        assert!(!env.contains_key("PGBACKREST_STANZA"));
    }
}
