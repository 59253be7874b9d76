//! The Jobs of a major upgrade, pure. Each mounts the volume of the primary (ordinal 0, where
//! the instance limit leaves it) and runs a script of `scripts/`:
//!
//! - **prepare**, while the old primary still serves (on its node): an init container in the
//!   *old* image copies its PostgreSQL and the shared libraries it loads beside the data
//!   directory (`pgbin.<old major>`, `copy-old.sh`); the *new* image then links in only the
//!   libraries it lacks, checks the old binaries with `ldd` and initializes the new cluster in
//!   `pgdata.new` (`prepare.sh`). No Debian suite ships both majors, so this is how one pod has
//!   both; done ahead, none of it is downtime.
//! - **pg-upgrade**, once the instances are stopped: `pg_upgrade` (link or copy; its checks
//!   first) on the prepared directories, then the data directories swapped (`pg-upgrade.sh`).
//!   Not retried: a failure leaves the old cluster as it was and says why in its termination
//!   message.
//! - **revert**: an abort after pg_upgrade, before the new primary started, puts the old data
//!   directory back (`revert.sh`).
//! - **finish**: with the new primary up, extensions updated, statistics rebuilt, the old data
//!   directory removed (`finish.sh`); next to the primary (its volume), as the superuser.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use kube::{Resource, ResourceExt};
use pgpilot_api::cluster::SchedulingSpec;
use pgpilot_api::{PostgresUpgrade, labels};
use pgpilot_postgres::names::{DATA_MOUNT, Names};
use serde_json::{Value, json};

const COPY_OLD: &str = include_str!("../scripts/copy-old.sh");
const PREPARE: &str = include_str!("../scripts/prepare.sh");
const PG_UPGRADE: &str = include_str!("../scripts/pg-upgrade.sh");
const REVERT: &str = include_str!("../scripts/revert.sh");
const FINISH: &str = include_str!("../scripts/finish.sh");

/// `pgpilot.io/component` of the Jobs and their pods.
pub const COMPONENT: &str = "upgrade";
/// The image's postgres user.
const POSTGRES_UID: i64 = 999;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prepare,
    PgUpgrade,
    Revert,
    Finish,
}

impl Kind {
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Prepare => "prepare",
            Kind::PgUpgrade => "pg-upgrade",
            Kind::Revert => "revert",
            Kind::Finish => "finish",
        }
    }
}

/// `pg_upgrade --link` or `--copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Link,
    Copy,
}

/// `<upgrade>-<suffix>`, in at most 63 characters (a Job's name becomes a label value): a
/// longer upgrade name is cut and a digest of the whole name added, to keep it unique.
pub fn job_name(upgrade: &str, kind: Kind) -> String {
    use sha2::{Digest, Sha256};
    const MAX: usize = 63;
    let suffix = kind.suffix();
    if upgrade.len() + 1 + suffix.len() <= MAX {
        return format!("{upgrade}-{suffix}");
    }
    let digest: String = Sha256::digest(upgrade.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Names are ASCII (DNS subdomains), so any byte index is a character boundary.
    let cut = &upgrade[..MAX - suffix.len() - digest.len() - 2];
    format!("{}-{digest}-{suffix}", cut.trim_end_matches(['-', '.']))
}

/// What the Jobs are made from.
pub struct Inputs<'a> {
    pub upgrade: &'a PostgresUpgrade,
    pub from_version: i32,
    pub from_image: &'a str,
    pub to_version: i32,
    pub to_image: &'a str,
    pub method: Method,
    /// The cluster's placement: the Jobs run where its instances may (tolerations, node
    /// labels, priority), not its affinity (whose anti-affinity would keep a Job off the
    /// node of the primary whose volume it needs).
    pub scheduling: Option<&'a SchedulingSpec>,
}

/// The volume claim of ordinal 0 of the cluster's StatefulSet.
pub fn primary_claim(cluster: &str) -> String {
    format!("data-{}-0", Names::new(cluster).statefulset())
}

pub fn job(i: &Inputs<'_>, kind: Kind) -> Option<Job> {
    let upgrade = i.upgrade;
    let ns = upgrade.namespace()?;
    let owner = upgrade.controller_owner_ref(&())?;
    let cluster = &upgrade.spec.cluster.name;
    let names = Names::new(cluster);
    let pod_labels = json!({
        labels::CLUSTER: cluster,
        labels::COMPONENT: COMPONENT,
        labels::MANAGED_BY: labels::MANAGED_BY_VALUE,
    });
    let restricted = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let mut env = vec![
        json!({"name": "OLD_MAJOR", "value": i.from_version.to_string()}),
        json!({"name": "NEW_MAJOR", "value": i.to_version.to_string()}),
    ];
    let mounts = vec![
        json!({"name": "data", "mountPath": DATA_MOUNT}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let volumes = vec![
        json!({"name": "data", "persistentVolumeClaim": {"claimName": primary_claim(cluster)}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut init = vec![];
    // The volume is the primary's: on its node (it may be attached there only).
    let beside_the_primary = || {
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {
                "statefulset.kubernetes.io/pod-name": format!("{}-0", names.statefulset())}},
            "topologyKey": "kubernetes.io/hostname",
        }]}})
    };
    let mut affinity = Value::Null;
    let script = match kind {
        Kind::Prepare => {
            init.push(json!({
                "name": "copy-old",
                "image": i.from_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", COPY_OLD],
                "env": [{"name": "OLD_MAJOR", "value": i.from_version.to_string()}],
                "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
                "securityContext": restricted,
            }));
            affinity = beside_the_primary();
            PREPARE
        }
        Kind::PgUpgrade => {
            let method = match i.method {
                Method::Link => "link",
                Method::Copy => "copy",
            };
            env.push(json!({"name": "METHOD", "value": method}));
            PG_UPGRADE
        }
        Kind::Revert => REVERT,
        Kind::Finish => {
            env.push(json!({"name": "PGHOST", "value": names.rw_host(&ns)}));
            env.push(json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                "name": names.superuser_secret(), "key": "password"}}}));
            affinity = beside_the_primary();
            FINISH
        }
    };
    let mut pod = json!({
        "restartPolicy": "Never",
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": POSTGRES_UID, "runAsGroup": POSTGRES_UID,
            "fsGroup": POSTGRES_UID, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init,
        "containers": [{
            "name": kind.suffix(),
            "image": i.to_image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/bash", "-c", script],
            "env": env,
            "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": restricted,
        }],
        "volumes": volumes,
    });
    if !affinity.is_null() {
        pod["affinity"] = affinity;
    }
    if let Some(s) = i.scheduling {
        if !s.tolerations.is_empty() {
            pod["tolerations"] = serde_json::to_value(&s.tolerations).ok()?;
        }
        if !s.node_selector.is_empty() {
            pod["nodeSelector"] = json!(s.node_selector);
        }
        if let Some(class) = &s.priority_class_name {
            pod["priorityClassName"] = json!(class);
        }
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(&upgrade.name_any(), kind),
            "namespace": ns,
            "labels": pod_labels,
            "ownerReferences": [owner],
        },
        "spec": {
            // pg_upgrade is not run twice by itself: its failure needs a look (the old cluster
            // is intact). Preparing, reverting and finishing are safe to repeat.
            "backoffLimit": if kind == Kind::PgUpgrade { 0 } else { 3 },
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    });
    serde_json::from_value(job).ok()
}

/// The annotations a running major upgrade puts on the cluster besides its name: the
/// instance limit, and the target once the data is upgraded.
pub fn limit(n: i32) -> BTreeMap<String, String> {
    BTreeMap::from([(labels::INSTANCE_LIMIT.to_owned(), n.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_in_a_label_value_and_stay_distinct() {
        assert_eq!(
            job_name("db-upgrade-1", Kind::Finish),
            "db-upgrade-1-finish"
        );
        // The longest cluster name, with the upgrade the cluster controller names after it.
        let long = format!("{}-upgrade-0123abcd", "a".repeat(49));
        let other = format!("{}-upgrade-4567ef01", "a".repeat(49));
        for kind in [Kind::Prepare, Kind::PgUpgrade, Kind::Revert, Kind::Finish] {
            let (a, b) = (job_name(&long, kind), job_name(&other, kind));
            assert!(a.len() <= 63, "{a}");
            assert!(a.ends_with(kind.suffix()) && !a.contains("--"), "{a}");
            assert_ne!(a, b);
        }
    }

    fn upgrade() -> PostgresUpgrade {
        serde_json::from_value(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
            "metadata": {"name": "db-upgrade-1", "namespace": "prod", "uid": "u-1"},
            "spec": {"cluster": {"name": "db"}, "targetVersion": 17, "targetImage": "pg:17"},
        }))
        .unwrap()
    }

    fn inputs(u: &PostgresUpgrade) -> Inputs<'_> {
        Inputs {
            upgrade: u,
            from_version: 15,
            from_image: "pg:15.20",
            to_version: 17,
            to_image: "pg:17",
            method: Method::Link,
            scheduling: None,
        }
    }

    fn env(c: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, String> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    fn restricted(c: &k8s_openapi::api::core::v1::Container) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
    }

    fn claim(pod: &k8s_openapi::api::core::v1::PodSpec) -> &str {
        &pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name
    }

    #[test]
    fn preparing_copies_the_old_binaries_beside_the_primary_and_runs_the_new_image_there() {
        let u = upgrade();
        let j = job(&inputs(&u), Kind::Prepare).unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("db-upgrade-1-prepare"));
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        let pod = spec.template.spec.unwrap();
        assert_eq!(claim(&pod), "data-db-0");
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("pg:15.20"));
        assert_eq!(env(init)["OLD_MAJOR"], "15");
        // The old binaries go on the data volume, where the pg_upgrade Job finds them.
        assert_eq!(
            init.volume_mounts.as_ref().unwrap()[0].mount_path,
            DATA_MOUNT
        );
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("pg:17"));
        let e = env(main);
        assert_eq!((&*e["OLD_MAJOR"], &*e["NEW_MAJOR"]), ("15", "17"));
        let term = &pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            term.label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["statefulset.kubernetes.io/pod-name"],
            "db-0"
        );
        // Restricted, no API token.
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        restricted(init);
        restricted(main);
    }

    #[test]
    fn pg_upgrade_runs_the_new_image_alone_on_the_stopped_primary_volume() {
        let u = upgrade();
        let j = job(&inputs(&u), Kind::PgUpgrade).unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("db-upgrade-1-pg-upgrade"));
        assert_eq!(
            j.metadata.owner_references.as_ref().unwrap()[0].name,
            "db-upgrade-1"
        );
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        // Prepared ahead: nothing to copy now, one container to start.
        assert!(pod.init_containers.as_ref().is_none_or(Vec::is_empty));
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("pg:17"));
        let e = env(main);
        assert_eq!((&*e["OLD_MAJOR"], &*e["NEW_MAJOR"]), ("15", "17"));
        assert_eq!(e["METHOD"], "link");
        assert_eq!(claim(&pod), "data-db-0");
        assert_eq!(pod.automount_service_account_token, Some(false));
        restricted(main);
    }

    #[test]
    fn finishing_runs_beside_the_primary_as_the_superuser_whose_password_stays_in_its_secret() {
        let u = upgrade();
        let mut i = inputs(&u);
        i.method = Method::Copy;
        let j = job(&i, Kind::Finish).unwrap();
        let pod = j.spec.unwrap().template.spec.unwrap();
        let main = &pod.containers[0];
        assert_eq!(env(main)["PGHOST"], "db-rw.prod.svc");
        let pw = main
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "PGPASSWORD")
            .unwrap();
        assert!(pw.value.is_none());
        assert_eq!(
            pw.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "db-superuser"
        );
        assert!(pod.affinity.unwrap().pod_affinity.is_some());
        assert!(pod.init_containers.unwrap_or_default().is_empty());
        let revert = job(&i, Kind::Revert).unwrap();
        assert_eq!(revert.spec.unwrap().backoff_limit, Some(3));
    }

    #[test]
    fn the_jobs_go_where_the_instances_may_but_without_their_anti_affinity() {
        let u = upgrade();
        let scheduling: SchedulingSpec = serde_json::from_value(json!({
            "tolerations": [{"key": "dedicated", "value": "postgres", "effect": "NoSchedule"}],
            "nodeSelector": {"pool": "db"},
            "priorityClassName": "databases",
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"pgpilot.io/cluster": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        }))
        .unwrap();
        let mut i = inputs(&u);
        i.scheduling = Some(&scheduling);
        for kind in [Kind::Prepare, Kind::PgUpgrade, Kind::Revert, Kind::Finish] {
            let pod = job(&i, kind).unwrap().spec.unwrap().template.spec.unwrap();
            let tolerations = pod.tolerations.unwrap();
            assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"), "{kind:?}");
            assert_eq!(pod.node_selector.unwrap()["pool"], "db");
            assert_eq!(pod.priority_class_name.as_deref(), Some("databases"));
            assert!(
                pod.affinity.is_none_or(|a| a.pod_anti_affinity.is_none()),
                "{kind:?}"
            );
        }
        let bare = job(&inputs(&u), Kind::PgUpgrade).unwrap();
        let pod = bare.spec.unwrap().template.spec.unwrap();
        assert!(pod.tolerations.is_none() && pod.node_selector.is_none());
    }
}
