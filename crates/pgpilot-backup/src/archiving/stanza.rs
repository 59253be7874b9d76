//! The stanza Job: `stanza-create` (idempotent: it leaves a valid stanza as it is), or
//! `stanza-upgrade` when the stanza belongs to the database before a major upgrade (a new
//! version and system identifier: the stanza keeps the old backups and archive beside the
//! new), then `check` (a WAL switch that must reach the archive), run as pgBackRest's
//! repository host against the primary's TLS server.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::BackupSpec;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::job;

/// `pgpilot.io/component` of the stanza Job and its pod.
pub const COMPONENT: &str = "stanza";
/// What the Job was made from (see [`config_hash`]): another one calls for a new Job.
pub const CONFIG_HASH: &str = "pgpilot.io/config-hash";

pub fn job_name(cluster: &str) -> String {
    format!("{cluster}-stanza")
}

/// What the Job runs.
const SCRIPT: &str = "(pgbackrest stanza-create || pgbackrest stanza-upgrade) && pgbackrest check";

/// A digest of what the stanza is created and checked with: the configuration file, the
/// spec it came from (whose Secret references the file does not show) and the major version
/// the instances run (a major upgrade calls for `stanza-upgrade`).
pub fn config_hash(conf: &str, backup: &BackupSpec, version: i32) -> String {
    let mut h = Sha256::new();
    h.update(conf.as_bytes());
    h.update(serde_json::to_vec(backup).unwrap_or_default());
    h.update(version.to_be_bytes());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Job, owned by the cluster (deleting the cluster deletes it; the stanza stays).
pub fn job(
    cluster: &PostgresCluster,
    primary: &str,
    image: &str,
    hash: &str,
) -> Result<Job, Error> {
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid {
            field: "metadata.uid",
            message: "the cluster has no uid yet".into(),
        })?;
    job::job(
        cluster,
        job::Spec {
            name: job_name(&cluster.name_any()),
            component: COMPONENT,
            command: job::shell(SCRIPT),
            repository: job::Repository::Own {
                hosts: &[primary.to_owned()],
            },
            extra_env: Vec::new(),
            annotations: BTreeMap::from([(CONFIG_HASH.to_owned(), hash.to_owned())]),
            owner,
            image,
            // About 10 minutes of retries; the controller shows each failure meanwhile.
            retries: 6,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::cluster;

    #[test]
    fn the_stanza_job_creates_and_checks_through_the_primary() {
        let j = job(&cluster(), "db-1", "localhost/pgpilot/postgres:17", "abc").unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("db-stanza"));
        assert_eq!(j.metadata.annotations.as_ref().unwrap()[CONFIG_HASH], "abc");
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(6));
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(
            c.command.as_ref().unwrap()[2],
            "(pgbackrest stanza-create || pgbackrest stanza-upgrade) && pgbackrest check"
        );
    }

    #[test]
    fn the_hash_follows_the_repository_and_its_secrets() {
        let b = cluster().spec.backup.unwrap();
        let mut other = b.clone();
        other.repository.s3.credentials.secret_name = "s3-new".into();
        assert_eq!(config_hash("conf", &b, 15), config_hash("conf", &b, 15));
        assert_ne!(config_hash("conf", &b, 15), config_hash("conf", &other, 15));
        assert_ne!(config_hash("conf", &b, 15), config_hash("conf2", &b, 15));
        // After a major upgrade: stanza-upgrade.
        assert_ne!(config_hash("conf", &b, 15), config_hash("conf", &b, 17));
    }
}
