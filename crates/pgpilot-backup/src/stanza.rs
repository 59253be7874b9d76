//! The stanza Job: `stanza-create` (idempotent: it leaves a valid stanza as it is) then
//! `check` (a WAL switch that must reach the archive), run as pgBackRest's repository host
//! against the primary's TLS server. Pure: built from the cluster, the primary and the image.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::BackupSpec;
use pgpilot_api::labels;
use pgpilot_postgres::names::Names;
use pgpilot_postgres::pgbackrest;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// `pgpilot.io/component` of the stanza Job and its pod.
pub const COMPONENT: &str = "stanza";
/// What the Job was made from (see [`config_hash`]): another one calls for a new Job.
pub const CONFIG_HASH: &str = "pgpilot.io/config-hash";
/// The image's postgres user, which pgBackRest runs as.
const POSTGRES_UID: i64 = 999;

pub fn job_name(cluster: &str) -> String {
    format!("{cluster}-stanza")
}

/// A digest of what the stanza is created and checked with: the configuration file and the
/// spec it came from (whose Secret references the file does not show).
pub fn config_hash(conf: &str, backup: &BackupSpec) -> String {
    let mut h = Sha256::new();
    h.update(conf.as_bytes());
    h.update(serde_json::to_vec(backup).unwrap_or_default());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Job, with the labels the controller's pod watch selects and an owner reference to
/// the cluster (deleting the cluster deletes it; backups and the stanza stay).
pub fn job(
    cluster: &PostgresCluster,
    primary: &str,
    image: &str,
    hash: &str,
) -> Result<Job, Error> {
    let (Some(namespace), Some(backup), Some(owner)) = (
        cluster.namespace(),
        cluster.spec.backup.as_ref(),
        cluster.controller_owner_ref(&()),
    ) else {
        return Err(Error::Invalid {
            field: "spec.backup",
            message: "a stanza Job needs a cluster read from the API with spec.backup".into(),
        });
    };
    let names = Names::new(&cluster.name_any());
    let pod_labels = BTreeMap::from([
        (labels::CLUSTER.to_owned(), names.cluster.clone()),
        (labels::COMPONENT.to_owned(), COMPONENT.to_owned()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
    ]);
    let volumes = pgbackrest::pod_volumes(&names, backup);
    let mut mounts = vec![volumes.config.clone(), volumes.tls.clone()];
    mounts.extend(volumes.repo_ca.clone());
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    });
    let mut pod_volumes = volumes.volumes;
    pod_volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let mut env = vec![EnvVar {
        name: "PGBACKREST_STANZA".into(),
        value: Some(pgbackrest::stanza(&namespace, &names.cluster)),
        ..Default::default()
    }];
    env.extend(pgbackrest::job_host_env(&names, &namespace, primary));
    env.extend(pgbackrest::secret_env(backup));
    let container = Container {
        name: "pgbackrest".into(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "pgbackrest stanza-create && pgbackrest check".into(),
        ]),
        env: Some(env),
        volume_mounts: Some(mounts),
        // pgBackRest's own words when it fails: the controller shows them in a condition.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&names.cluster)),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            annotations: Some(BTreeMap::from([(CONFIG_HASH.to_owned(), hash.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Kubernetes retries a failed pod after 10 s, 20 s, 40 s, … (about 10 minutes
            // for six); the controller shows each failed pod's message meanwhile.
            backoff_limit: Some(6),
            active_deadline_seconds: Some(1800),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(POSTGRES_UID),
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(pod_volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cluster() -> PostgresCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod", "uid": "0c1d-uid", "generation": 1},
            "spec": {"instances": 2, "postgresql": {"version": 17}, "storage": {"size": "1Gi"},
                "backup": {"repository": {"s3": {"endpoint": "minio.storage.svc:9000",
                    "bucket": "backups", "credentials": {"secretName": "s3"},
                    "caBundle": {"name": "minio-ca", "key": "ca.crt"}}}}},
        }))
        .unwrap()
    }

    #[test]
    fn the_job_reaches_the_primary_over_tls_and_holds_no_secret() {
        let j = job(&cluster(), "db-1", "localhost/pgpilot/postgres:17", "abc").unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("db-stanza"));
        assert_eq!(j.metadata.annotations.as_ref().unwrap()[CONFIG_HASH], "abc");
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(6));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(
            env["PGBACKREST_PG1_HOST"].value.as_deref(),
            Some("db-1.db-pods.prod.svc")
        );
        assert_eq!(env["PGBACKREST_STANZA"].value.as_deref(), Some("prod-db"));
        let key = &env["PGBACKREST_REPO1_S3_KEY_SECRET"];
        assert!(key.value.is_none() && key.value_from.is_some());
        let mounts: Vec<_> = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert_eq!(
            mounts,
            [
                "/etc/pgbackrest",
                "/etc/pgbackrest-tls",
                "/etc/pgbackrest-repo-ca",
                "/tmp"
            ]
        );
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            pod.security_context.unwrap().run_as_user,
            Some(POSTGRES_UID)
        );
    }

    #[test]
    fn the_hash_follows_the_repository_and_its_secrets() {
        let b = cluster().spec.backup.unwrap();
        let mut other = b.clone();
        other.repository.s3.credentials.secret_name = "s3-new".into();
        assert_eq!(config_hash("conf", &b), config_hash("conf", &b));
        assert_ne!(config_hash("conf", &b), config_hash("conf", &other));
        assert_ne!(config_hash("conf", &b), config_hash("conf2", &b));
    }
}
