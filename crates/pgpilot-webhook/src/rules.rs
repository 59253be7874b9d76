//! The admission rules: pure functions of the object under review and the objects it refers
//! to, as the webhook found them. Each rule covers what CEL cannot see (another object).
//!
//! A reference to an object that does not exist (yet) is admitted with a warning, as
//! Kubernetes admits a Pod naming a missing ConfigMap: GitOps tools apply a directory in an
//! order of their own, and a restore may read the backups of a cluster that is gone. What is
//! denied is a contradiction with an object that does exist.

use kube::ResourceExt;
use pgpilot_api::backup::{BackupPhase, PostgresBackup};
use pgpilot_api::cluster::{Ensure, PostgresCluster};
use pgpilot_api::rotation::SecretRotation;
use pgpilot_api::upgrade::PostgresUpgrade;
use pgpilot_postgres::names::{self, Names};

/// What the webhook answers: denied with a reason, or allowed, with warnings either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub denied: Option<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    fn deny(reason: String) -> Self {
        Verdict {
            denied: Some(reason),
            warnings: Vec::new(),
        }
    }
    fn warn(warning: String) -> Self {
        Verdict {
            denied: None,
            warnings: vec![warning],
        }
    }
    /// Both verdicts: denied if either is (the first reason), every warning.
    fn and(mut self, other: Verdict) -> Self {
        self.denied = self.denied.or(other.denied);
        self.warnings.extend(other.warnings);
        self
    }
}

/// One active upgrade per cluster: a new PostgresUpgrade is denied while another one of its
/// cluster has not succeeded, failed or been aborted.
pub fn one_upgrade_at_a_time(new: &PostgresUpgrade, in_namespace: &[PostgresUpgrade]) -> Verdict {
    let cluster = &new.spec.cluster.name;
    let mut active: Vec<&PostgresUpgrade> = in_namespace
        .iter()
        .filter(|u| &u.spec.cluster.name == cluster && u.name_any() != new.name_any())
        .filter(|u| u.is_active())
        .collect();
    active.sort_by_key(|u| (u.creation_timestamp().map(|t| t.0), u.name_any()));
    let Some(first) = active.first() else {
        return Verdict::default();
    };
    let phase = first
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("Pending".to_owned(), |p| format!("{p:?}"));
    Verdict::deny(format!(
        "PostgresUpgrade {other} is under way for cluster {cluster} (phase {phase}): one upgrade at a time per cluster. Wait until it ends, or abort it: kubectl -n {ns} patch postgresupgrade {other} --type merge -p '{{\"spec\":{{\"abort\":true}}}}'",
        other = first.name_any(),
        ns = new.namespace().unwrap_or_default(),
    ))
}

/// A restore reads the backups of `spec.bootstrap.restore.source` from
/// `spec.bootstrap.restore.repository`. When the source cluster exists, that repository must
/// be one it backs up to (or did); a source that never backed up has nothing to restore.
/// `source` is the source cluster as found (None: it does not exist).
pub fn restore_source(
    cluster: &PostgresCluster,
    namespace: &str,
    source: Option<&PostgresCluster>,
) -> Verdict {
    let Some(restore) = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.restore.as_ref())
    else {
        return Verdict::default();
    };
    let source_ns = restore.source.namespace.as_deref().unwrap_or(namespace);
    let source_name = &restore.source.name;
    let wanted = restore.repository.s3.location();
    let Some(source) = source else {
        return Verdict::warn(format!(
            "PostgresCluster {source_ns}/{source_name} does not exist: the restore reads the backups it left in {wanted}/{source_ns}/{source_name}, and fails with a condition if there are none"
        ));
    };
    let status = source.status.as_ref().and_then(|s| s.backup.as_ref());
    let known: Vec<String> = [
        source
            .spec
            .backup
            .as_ref()
            .map(|b| b.repository.s3.location()),
        status.and_then(|b| b.repository.clone()),
        status.and_then(|b| b.previous_repository.clone()),
    ]
    .into_iter()
    .flatten()
    .fold(Vec::new(), |mut seen, l| {
        if !seen.contains(&l) {
            seen.push(l);
        }
        seen
    });
    if known.is_empty() {
        return Verdict::deny(format!(
            "spec.bootstrap.restore.source: PostgresCluster {source_ns}/{source_name} has never backed up (no spec.backup, no status.backup.repository): there is nothing to restore"
        ));
    }
    if !known.contains(&wanted) {
        let before = match &known[1..] {
            [] => String::new(),
            earlier => format!(" (before: {})", earlier.join(", ")),
        };
        return Verdict::deny(format!(
            "spec.bootstrap.restore.repository is {wanted}, but PostgresCluster {source_ns}/{source_name} backs up to {}{before}: copy its spec.backup.repository",
            known[0]
        ));
    }
    Verdict::default()
}

/// A new cluster with backups whose name an earlier cluster of the namespace had, and whose
/// completed PostgresBackups are still recorded: if those backups are in the repository path
/// this cluster writes to (`<path>/<namespace>/<name>`), two clusters would write to one
/// path. pgBackRest refuses that (another system identifier), so this cluster would run
/// without backups. Only a warning: the records do not say which repository they are in.
pub fn earlier_cluster_backups(
    cluster: &PostgresCluster,
    namespace: &str,
    in_namespace: &[PostgresBackup],
) -> Verdict {
    let Some(backup) = &cluster.spec.backup else {
        return Verdict::default();
    };
    let name = cluster.name_any();
    let restoring_itself = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.restore.as_ref())
        .is_some_and(|r| {
            r.source.name == name && r.source.namespace.as_deref().unwrap_or(namespace) == namespace
        });
    if restoring_itself {
        return Verdict::default();
    }
    // Backups recorded before this cluster was created are of an earlier one. (On create the
    // API server has stamped it already; a recorded backup of the same second is earlier too:
    // timestamps have whole seconds, and the cluster's own backups come long after.)
    let created = cluster.creation_timestamp().map(|t| t.0);
    let mut earlier: Vec<String> = in_namespace
        .iter()
        .filter(|b| b.spec.cluster.name == name)
        .filter(|b| match (created, b.creation_timestamp()) {
            (Some(cluster), Some(backup)) => backup.0 <= cluster,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .map(ResourceExt::name_any)
        .collect();
    if earlier.is_empty() {
        return Verdict::default();
    }
    earlier.sort();
    let more = earlier.len().saturating_sub(3);
    earlier.truncate(3);
    let list = earlier.join(", ")
        + &if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
    Verdict::warn(format!(
        "PostgresBackups {list} hold backups of an earlier PostgresCluster {namespace}/{name}. If they are in {}/{namespace}/{name}, pgBackRest will not archive this new database there (another system identifier): restore the earlier one instead (spec.bootstrap.restore with source {name}), or back up to another spec.backup.repository.s3.path",
        backup.repository.s3.location()
    ))
}

/// The Secret a SecretRotation rotates.
pub fn rotated_secret(rotation: &SecretRotation) -> Option<String> {
    let t = &rotation.spec.target;
    match (&t.secret, &t.postgres_role) {
        (Some(s), _) => Some(s.name.clone()),
        (None, Some(r)) => Some(Names::new(&r.cluster).credentials_secret(&r.role)),
        (None, None) => None,
    }
}

/// A rotation's target: a role of a cluster that exists must be one with credentials there
/// (the superuser, the replication user, or a declared login role), and no other
/// SecretRotation may rotate the same Secret. `cluster` is the target cluster as found.
pub fn rotation_target(
    rotation: &SecretRotation,
    namespace: &str,
    cluster: Option<&PostgresCluster>,
    in_namespace: &[SecretRotation],
) -> Verdict {
    let ownership = match rotated_secret(rotation) {
        Some(secret) => {
            let mut owners: Vec<&SecretRotation> = in_namespace
                .iter()
                .filter(|r| r.name_any() != rotation.name_any())
                .filter(|r| rotated_secret(r).as_deref() == Some(secret.as_str()))
                .collect();
            owners.sort_by_key(|r| (r.creation_timestamp().map(|t| t.0), r.name_any()));
            match owners.first() {
                Some(owner) => Verdict::deny(format!(
                    "Secret {secret} is rotated by SecretRotation {}: one SecretRotation per credential",
                    owner.name_any()
                )),
                None => Verdict::default(),
            }
        }
        None => Verdict::default(),
    };
    let Some(target) = &rotation.spec.target.postgres_role else {
        return ownership;
    };
    let role = &target.role;
    let existence = match cluster {
        None => Verdict::warn(format!(
            "PostgresCluster {namespace}/{} does not exist (yet): this rotation waits for it",
            target.cluster
        )),
        Some(_) if role == names::SUPERUSER || role == names::REPLICATION_USER => {
            Verdict::default()
        }
        Some(c) => {
            let declared = c
                .spec
                .roles
                .iter()
                .find(|r| &r.name == role && r.ensure == Ensure::Present);
            match declared {
                Some(r) if r.login => Verdict::default(),
                Some(_) => Verdict::deny(format!(
                    "spec.target.postgresRole: role {role} of PostgresCluster {} cannot log in (login: false), so it has no password to rotate",
                    target.cluster
                )),
                None => Verdict::deny(format!(
                    "spec.target.postgresRole: PostgresCluster {} declares no role {role} (spec.roles); only declared login roles, {} and {} have credentials to rotate",
                    target.cluster,
                    names::SUPERUSER,
                    names::REPLICATION_USER
                )),
            }
        }
    };
    ownership.and(existence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    fn upgrade(name: &str, cluster: &str, phase: Option<&str>, created: &str) -> PostgresUpgrade {
        let mut v = json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"cluster": {"name": cluster}, "targetVersion": 17, "targetImage": "pg:17.2"}
        });
        if let Some(p) = phase {
            v["status"] = json!({"phase": p});
        }
        from(v)
    }

    #[test]
    fn a_second_active_upgrade_of_a_cluster_is_denied_naming_the_first() {
        let new = upgrade("b", "db", None, "2026-12-07T10:00:00Z");
        let others = [
            upgrade("old", "db", Some("Succeeded"), "2026-11-01T10:00:00Z"),
            upgrade(
                "a2",
                "db",
                Some("UpgradingReplicas"),
                "2026-12-06T10:00:00Z",
            ),
            upgrade("a1", "db", None, "2026-12-05T10:00:00Z"),
            upgrade(
                "x",
                "other",
                Some("UpgradingReplicas"),
                "2026-12-01T10:00:00Z",
            ),
        ];
        let v = one_upgrade_at_a_time(&new, &others);
        let reason = v.denied.expect("denied");
        assert!(
            reason.starts_with("PostgresUpgrade a1 is under way for cluster db (phase Pending)"),
            "{reason}"
        );
        assert!(
            reason.contains("kubectl -n ns patch postgresupgrade a1"),
            "{reason}"
        );
    }

    #[test]
    fn an_upgrade_is_admitted_when_the_others_ended_or_are_of_other_clusters() {
        let new = upgrade("b", "db", None, "2026-12-07T10:00:00Z");
        let others = [
            upgrade("b", "db", None, "2026-12-07T10:00:00Z"), // itself (a re-sent create)
            upgrade("f", "db", Some("Failed"), "2026-11-01T10:00:00Z"),
            upgrade("a", "db", Some("Aborted"), "2026-11-02T10:00:00Z"),
            upgrade("x", "other", Some("SwitchingOver"), "2026-12-01T10:00:00Z"),
        ];
        assert_eq!(one_upgrade_at_a_time(&new, &others), Verdict::default());
    }

    fn repository(bucket: &str, path: &str) -> serde_json::Value {
        json!({"s3": {"endpoint": "minio:9000", "bucket": bucket, "path": path,
                      "credentials": {"secretName": "s3"}}})
    }

    fn cluster(
        name: &str,
        spec: serde_json::Value,
        status: Option<serde_json::Value>,
    ) -> PostgresCluster {
        let mut s =
            json!({"instances": 1, "postgresql": {"version": 17}, "storage": {"size": "1Gi"}});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        let mut v = json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": name, "namespace": "ns"}, "spec": s
        });
        if let Some(st) = status {
            v["status"] = st;
        }
        from(v)
    }

    fn restoring(from_bucket: &str) -> PostgresCluster {
        cluster(
            "copy",
            json!({"bootstrap": {"restore": {"source": {"name": "db"}, "repository": repository(from_bucket, "/pgbackrest")}}}),
            None,
        )
    }

    #[test]
    fn a_restore_from_the_repository_the_source_backs_up_to_is_admitted() {
        let source = cluster(
            "db",
            json!({"backup": {"repository": repository("b1", "/pgbackrest/")}}),
            None,
        );
        assert_eq!(
            restore_source(&restoring("b1"), "ns", Some(&source)),
            Verdict::default()
        );
        // Or backed up to before moving: status keeps both.
        let moved = cluster(
            "db",
            json!({"backup": {"repository": repository("b2", "/pgbackrest")}}),
            Some(
                json!({"backup": {"repository": "s3://b2/pgbackrest", "previousRepository": "s3://b1/pgbackrest"}}),
            ),
        );
        assert_eq!(
            restore_source(&restoring("b1"), "ns", Some(&moved)),
            Verdict::default()
        );
    }

    #[test]
    fn a_restore_from_another_repository_than_the_sources_is_denied() {
        let source = cluster(
            "db",
            json!({"backup": {"repository": repository("b2", "/pgbackrest")}}),
            None,
        );
        let reason = restore_source(&restoring("b1"), "ns", Some(&source))
            .denied
            .expect("denied");
        assert_eq!(
            reason,
            "spec.bootstrap.restore.repository is s3://b1/pgbackrest, but PostgresCluster ns/db backs up to s3://b2/pgbackrest: copy its spec.backup.repository"
        );
    }

    #[test]
    fn a_restore_of_a_cluster_that_never_backed_up_is_denied() {
        let source = cluster("db", json!({}), None);
        let reason = restore_source(&restoring("b1"), "ns", Some(&source))
            .denied
            .expect("denied");
        assert!(reason.contains("has never backed up"), "{reason}");
    }

    #[test]
    fn a_restore_of_a_cluster_that_is_gone_is_admitted_with_a_warning() {
        let v = restore_source(&restoring("b1"), "ns", None);
        assert_eq!(v.denied, None);
        assert_eq!(
            v.warnings,
            [
                "PostgresCluster ns/db does not exist: the restore reads the backups it left in s3://b1/pgbackrest/ns/db, and fails with a condition if there are none"
            ]
        );
        let plain = cluster("fresh", json!({}), None);
        assert_eq!(restore_source(&plain, "ns", None), Verdict::default());
    }

    fn backup(name: &str, cluster: &str, phase: &str) -> PostgresBackup {
        from(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"cluster": {"name": cluster}},
            "status": {"phase": phase}
        }))
    }

    #[test]
    fn a_new_cluster_named_like_one_with_recorded_backups_is_warned() {
        let new = cluster(
            "db",
            json!({"backup": {"repository": repository("b1", "/pg")}}),
            None,
        );
        let backups = [
            backup("db-1", "db", "Completed"),
            backup("db-2", "db", "Failed"),
            backup("other-1", "other", "Completed"),
        ];
        let v = earlier_cluster_backups(&new, "ns", &backups);
        assert_eq!(v.denied, None);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].starts_with("PostgresBackups db-1 hold backups of an earlier PostgresCluster ns/db. If they are in s3://b1/pg/ns/db"), "{}", v.warnings[0]);
        // Without backups of its own, or restoring from those very backups: nothing to say.
        assert_eq!(
            earlier_cluster_backups(&cluster("db", json!({}), None), "ns", &backups),
            Verdict::default()
        );
        let itself = cluster(
            "db",
            json!({"backup": {"repository": repository("b1", "/pg")},
                   "bootstrap": {"restore": {"source": {"name": "db"}, "repository": repository("b1", "/pg")}}}),
            None,
        );
        assert_eq!(
            earlier_cluster_backups(&itself, "ns", &backups),
            Verdict::default()
        );
        // An existing cluster given backups again: its own backups, made after it was created,
        // are no one else's.
        let created = |t: &str| Some(Time(t.parse().unwrap()));
        let mut again = new.clone();
        again.metadata.creation_timestamp = created("2026-11-01T00:00:00Z");
        assert_eq!(
            earlier_cluster_backups(&again, "ns", &backups),
            Verdict::default()
        );
        again.metadata.creation_timestamp = created("2026-12-02T00:00:00Z");
        assert_eq!(
            earlier_cluster_backups(&again, "ns", &backups)
                .warnings
                .len(),
            1
        );
    }

    fn rotation(name: &str, target: serde_json::Value) -> SecretRotation {
        from(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "SecretRotation",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"target": target, "rotateEvery": {"interval": "720h"}}
        }))
    }

    fn role(cluster: &str, role: &str) -> serde_json::Value {
        json!({"postgresRole": {"cluster": cluster, "role": role}})
    }

    #[test]
    fn a_second_rotation_of_one_secret_is_denied() {
        let first = rotation("first", role("db", "app_user"));
        let other = rotation(
            "other",
            json!({"secret": {"name": "api-key", "keys": [{"key": "k", "generator": "Characters", "characters": "ab"}]}}),
        );
        // The same Secret by name: db's credentials of app_user.
        let second = rotation(
            "second",
            json!({"secret": {"name": "db-app-user-credentials", "keys": [{"key": "k", "generator": "Characters", "characters": "ab"}]}}),
        );
        let v = rotation_target(&second, "ns", None, &[first.clone(), other, second.clone()]);
        assert_eq!(
            v.denied.as_deref(),
            Some(
                "Secret db-app-user-credentials is rotated by SecretRotation first: one SecretRotation per credential"
            )
        );
        assert_eq!(
            rotation_target(
                &first,
                "ns",
                Some(&app_cluster(true)),
                std::slice::from_ref(&first)
            ),
            Verdict::default()
        );
    }

    fn app_cluster(login: bool) -> PostgresCluster {
        cluster(
            "db",
            json!({"roles": [{"name": "app_user", "login": login}, {"name": "gone", "ensure": "Absent"}]}),
            None,
        )
    }

    #[test]
    fn a_role_target_must_have_credentials_in_its_cluster() {
        let db = app_cluster(true);
        for ok in ["app_user", "postgres", "replicator"] {
            assert_eq!(
                rotation_target(&rotation("r", role("db", ok)), "ns", Some(&db), &[]),
                Verdict::default(),
                "{ok}"
            );
        }
        let reason = rotation_target(&rotation("r", role("db", "gone")), "ns", Some(&db), &[])
            .denied
            .expect("denied");
        assert!(
            reason
                .starts_with("spec.target.postgresRole: PostgresCluster db declares no role gone"),
            "{reason}"
        );
        let reason = rotation_target(
            &rotation("r", role("db", "app_user")),
            "ns",
            Some(&app_cluster(false)),
            &[],
        )
        .denied
        .expect("denied");
        assert!(reason.contains("cannot log in"), "{reason}");
    }

    #[test]
    fn a_role_target_in_a_cluster_not_there_yet_is_admitted_with_a_warning() {
        let v = rotation_target(&rotation("r", role("db", "app_user")), "ns", None, &[]);
        assert_eq!(v.denied, None);
        assert_eq!(
            v.warnings,
            ["PostgresCluster ns/db does not exist (yet): this rotation waits for it"]
        );
    }
}
