//! A Job that runs pgBackRest: as the repository host of a cluster (pgbackrest.conf, the
//! client certificate for the instances' TLS servers), or as a reader of the repository a
//! restore comes from; the object store's keys from the user's Secret; restricted, no
//! ServiceAccount token. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_postgres::names::Names;
use pgpilot_postgres::pgbackrest;
use pgpilot_postgres::pgbackrest::restore::{self, Source};

use crate::error::Error;

/// The image's postgres user, which pgBackRest runs as.
const POSTGRES_UID: i64 = 999;

/// What differs from one pgBackRest Job to another.
pub struct Spec<'a> {
    pub name: String,
    /// `pgpilot.io/component` of the Job and its pod.
    pub component: &'a str,
    /// The command to run (`pgbackrest` reads everything else from the file and env).
    pub command: Vec<String>,
    pub repository: Repository<'a>,
    pub extra_env: Vec<EnvVar>,
    pub annotations: BTreeMap<String, String>,
    pub owner: OwnerReference,
    /// The instances' image.
    pub image: &'a str,
    /// Pod retries (Kubernetes waits 10 s, 20 s, 40 s, … between them).
    pub retries: i32,
}

/// `script` run by the shell.
pub fn shell(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.to_owned()]
}

/// Which repository a Job works on.
pub enum Repository<'a> {
    /// The cluster's own (`spec.backup`), reaching these instances (`pg1` first, the
    /// primary) through their TLS servers.
    Own { hosts: &'a [String] },
    /// The one `spec.bootstrap.restore` reads, and nothing else.
    RestoreSource(&'a Source<'a>),
    /// None: a client of the cluster's database.
    None,
}

pub use pgpilot_toolkit::jobs::{condition, last_message};

pub fn job(cluster: &PostgresCluster, spec: Spec<'_>) -> Result<Job, Error> {
    let Some(namespace) = cluster.namespace() else {
        return Err(Error::Invalid {
            field: "metadata.namespace",
            message: "a pgBackRest Job needs a cluster read from the API".into(),
        });
    };
    let names = Names::new(&cluster.name_any());
    let pod_labels = BTreeMap::from([
        (labels::CLUSTER.to_owned(), names.cluster.clone()),
        (labels::COMPONENT.to_owned(), spec.component.to_owned()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
    ]);
    let mut mounts = Vec::new();
    let mut pod_volumes = Vec::new();
    let mut env = Vec::new();
    match spec.repository {
        Repository::Own { hosts } => {
            let Some(backup) = cluster.spec.backup.as_ref() else {
                return Err(Error::Invalid {
                    field: "spec.backup",
                    message: "a Job on the cluster's repository needs spec.backup".into(),
                });
            };
            let volumes = pgbackrest::pod_volumes(&names, backup);
            mounts.extend([volumes.config.clone(), volumes.tls.clone()]);
            mounts.extend(volumes.repo_ca.clone());
            pod_volumes = volumes.volumes;
            env.push(EnvVar {
                name: "PGBACKREST_STANZA".into(),
                value: Some(pgbackrest::stanza(&namespace, &names.cluster)),
                ..Default::default()
            });
            for (i, pod) in hosts.iter().enumerate() {
                env.extend(pgbackrest::job_host_env(&names, &namespace, i + 1, pod));
            }
            env.extend(pgbackrest::secret_env(&backup.repository));
        }
        Repository::RestoreSource(source) => {
            if let Some((volume, mount)) = pgbackrest::ca_volume(
                &source.spec.repository,
                "pgbackrest-restore-ca",
                restore::CA_DIR,
            ) {
                pod_volumes.push(volume);
                mounts.push(mount);
            }
            env.extend(source.option_env()?);
        }
        Repository::None => {}
    }
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    });
    pod_volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    env.extend(spec.extra_env);
    let container = Container {
        name: "pgbackrest".into(),
        image: Some(spec.image.to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(spec.command),
        env: Some(env),
        volume_mounts: Some(mounts),
        // What the script writes to /dev/termination-log; on a failure without it, the end
        // of pgBackRest's output.
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
            name: Some(spec.name),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            annotations: Some(spec.annotations),
            owner_references: Some(vec![spec.owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.retries),
            active_deadline_seconds: None,
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
pub(crate) mod tests {
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
    fn a_job_reaches_the_instances_over_tls_restricted_and_holds_no_secret() {
        use kube::Resource;
        let c = cluster();
        let j = job(
            &c,
            Spec {
                name: "db-x".into(),
                component: "test",
                command: shell("pgbackrest check"),
                repository: Repository::Own {
                    hosts: &["db-1".to_owned(), "db-0".to_owned()],
                },
                extra_env: vec![],
                annotations: BTreeMap::new(),
                owner: c.controller_owner_ref(&()).unwrap(),
                image: "localhost/pgpilot/postgres:17",
                retries: 2,
            },
        )
        .unwrap();
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
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
        assert_eq!(
            env["PGBACKREST_PG2_HOST"].value.as_deref(),
            Some("db-0.db-pods.prod.svc")
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
}
