//! The instances: one StatefulSet whose pods run Patroni, which runs PostgreSQL.
//!
//! `updateStrategy: OnDelete`: the StatefulSet controller never restarts an instance by
//! itself; restarts and upgrades are orchestrated (replicas first, then a switchover).
//! `podManagementPolicy: Parallel`: all instances start at once; Patroni's DCS decides
//! which one initializes and the others clone from it, which is faster than one by one.

use k8s_openapi::api::apps::v1::StatefulSet;
use pgpilot_api::labels;
use serde_json::{Value, json};

use super::config::{CONFIG_DIR, DATA_MOUNT, PGDATA, SOCKET_DIR};
use super::{Ctx, backup, typed};
use crate::error::Error;
use pgpilot_postgres::names::{EXPORTER_PORT, MONITOR_USER, PATRONI_PORT, POSTGRES_PORT};

/// The image's postgres user (see docs/images.md).
pub const POSTGRES_UID: i64 = 999;

fn env(ctx: &Ctx<'_>) -> Result<Vec<Value>, Error> {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("PATRONI_NAME", "metadata.name"),
        field("POD_IP", "status.podIP"),
        json!({"name": "PATRONI_POSTGRESQL_CONNECT_ADDRESS", "value": format!("$(POD_IP):{POSTGRES_PORT}")}),
        // By name: members call each other over HTTPS and check the certificate's name.
        json!({"name": "PATRONI_RESTAPI_CONNECT_ADDRESS", "value": format!("$(PATRONI_NAME).{}.{}.svc:{PATRONI_PORT}", ctx.names.pods_service(), ctx.namespace)}),
        json!({"name": "PATRONI_KUBERNETES_POD_IP", "value": "$(POD_IP)"}),
        json!({"name": "PGDATA", "value": PGDATA}),
        json!({"name": "PGHOST", "value": SOCKET_DIR}),
        json!({"name": "HOME", "value": "/tmp"}),
    ];
    env.extend(backup::secret_env(ctx)?);
    env.extend(backup::restore_env(ctx)?);
    Ok(env)
}

fn default_affinity(ctx: &Ctx<'_>) -> Value {
    // Prefer different nodes (and zones): a preference, so a small cluster still schedules.
    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": ctx.instance_selector()}}},
        {"weight": 50, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
            "labelSelector": {"matchLabels": ctx.instance_selector()}}},
    ]}})
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(Error::serialize("scheduling"))
}

fn scheduling(ctx: &Ctx<'_>) -> Result<Value, Error> {
    let scheduling = ctx.cluster.spec.scheduling.clone().unwrap_or_default();
    let affinity = match scheduling.affinity {
        Some(a) => to_value(a)?,
        None => default_affinity(ctx),
    };
    let mut spread = Vec::new();
    for mut c in scheduling.topology_spread_constraints {
        if c.label_selector.is_none() {
            c.label_selector = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(ctx.instance_selector()),
                    ..Default::default()
                },
            );
        }
        spread.push(to_value(c)?);
    }
    let tolerations = scheduling
        .tolerations
        .into_iter()
        .map(to_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "affinity": affinity,
        "tolerations": tolerations,
        "topologySpreadConstraints": spread,
        "nodeSelector": scheduling.node_selector,
        "priorityClassName": scheduling.priority_class_name,
    }))
}

/// Where the exporter finds its password (the monitor Secret's `password` key alone).
const MONITOR_CREDENTIALS_DIR: &str = "/etc/pgpilot/monitor";

/// The Prometheus community's exporter beside PostgreSQL: over TCP to this instance (TLS,
/// password auth as the `pg_monitor` role), so it needs neither the socket nor the data.
/// Collectors whose labels grow with the schema (per table, per setting) stay off: series
/// per instance stay bounded.
fn exporter(ctx: &Ctx<'_>, image: &str, restricted: &Value) -> Result<Option<Value>, Error> {
    let spec = &ctx.cluster.spec;
    if !spec.exporter_enabled() {
        return Ok(None);
    }
    let resources = match spec
        .monitoring
        .as_ref()
        .and_then(|m| m.exporter.as_ref())
        .and_then(|e| e.resources.as_ref())
    {
        Some(r) => serde_json::to_value(r).map_err(Error::serialize("exporter resources"))?,
        None => {
            json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
        }
    };
    Ok(Some(json!({
        "name": "exporter",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            format!("--web.listen-address=:{EXPORTER_PORT}"),
            "--disable-settings-metrics",
            "--no-collector.stat_user_tables",
            "--no-collector.statio_user_tables",
            "--collector.stat_checkpointer",
            "--collector.postmaster",
            "--collector.long_running_transactions",
            "--collector.database_wraparound",
        ],
        "env": [
            {"name": "DATA_SOURCE_URI", "value": format!("127.0.0.1:{POSTGRES_PORT}/postgres?sslmode=require")},
            {"name": "DATA_SOURCE_USER", "value": MONITOR_USER},
            {"name": "DATA_SOURCE_PASS_FILE", "value": format!("{MONITOR_CREDENTIALS_DIR}/password")},
        ],
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": restricted,
        "volumeMounts": [{"name": "monitor-credentials", "mountPath": MONITOR_CREDENTIALS_DIR, "readOnly": true}],
    })))
}

pub(super) fn statefulset(
    ctx: &Ctx<'_>,
    image: &str,
    exporter_image: &str,
) -> Result<StatefulSet, Error> {
    let spec = &ctx.cluster.spec;
    let n = &ctx.names;
    let mut pod_labels = ctx.labels();
    pod_labels.extend(ctx.instance_selector());
    if spec.patroni_metrics_enabled() {
        pod_labels.insert(labels::PATRONI_METRICS.to_owned(), "true".to_owned());
    }
    let resources = match &spec.resources {
        Some(r) => serde_json::to_value(r).map_err(Error::serialize("resources"))?,
        None => json!({}),
    };
    let sched = scheduling(ctx)?;
    let probe = |path: &str, period: i32, failures: i32| {
        json!({"httpGet": {"path": path, "port": "patroni", "scheme": "HTTPS"}, "periodSeconds": period,
               "timeoutSeconds": 2, "failureThreshold": failures})
    };
    let restricted = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let pgbackrest = backup::pod_parts(ctx, image, &restricted)?;
    let mut volume_mounts = vec![
        json!({"name": "data", "mountPath": DATA_MOUNT}),
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "run", "mountPath": SOCKET_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
        json!({"name": "shm", "mountPath": "/dev/shm"}),
    ];
    volume_mounts.extend(pgbackrest.postgres_mounts);
    let mut containers = vec![json!({
        "name": "postgres",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        // The directory: patroni.yaml and auth.yaml (the credentials), read again on reload.
        "command": ["patroni", CONFIG_DIR],
        "env": env(ctx)?,
        "ports": [
            {"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"},
            {"name": "patroni", "containerPort": PATRONI_PORT, "protocol": "TCP"},
        ],
        // Ready: running and (primary, or replica streaming without too much lag). Every
        // second: readiness moves the -rw/-ro endpoints, and a probe is one cheap GET.
        "readinessProbe": probe("/readiness", 1, 3),
        // Alive: Patroni's loop is running. Generous, a restart costs a failover.
        "livenessProbe": probe("/liveness", 10, 6),
        // Crash recovery or a long clone may take a while before Patroni answers.
        "startupProbe": probe("/liveness", 1, 1800),
        "resources": resources,
        "securityContext": restricted,
        "volumeMounts": volume_mounts,
        // A failed start leaves its last log lines where the cluster's status finds them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })];
    containers.extend(pgbackrest.server);
    let exporter = exporter(ctx, exporter_image, &restricted)?;
    let mut volumes = vec![
        // patroni.yaml, the credentials' auth.yaml and the server certificate (tls.crt,
        // tls.key, ca.crt) in one directory, updated together; group-readable only (the group
        // is the pod's fsGroup, postgres: PostgreSQL accepts a root-owned key readable by its
        // group).
        json!({"name": "config", "projected": {"defaultMode": 0o440, "sources": [
            {"configMap": {"name": n.patroni_config()}},
            {"secret": {"name": n.patroni_auth()}},
            {"secret": {"name": n.tls_secret()}},
        ]}}),
        json!({"name": "run", "emptyDir": {}}),
        json!({"name": "tmp", "emptyDir": {}}),
        json!({"name": "shm", "emptyDir": {"medium": "Memory"}}),
    ];
    volumes.extend(pgbackrest.volumes);
    if let Some(exporter) = exporter {
        containers.push(exporter);
        volumes.push(json!({"name": "monitor-credentials", "secret": {
            "secretName": n.role_secret(MONITOR_USER), "defaultMode": 0o440,
            "items": [{"key": "password", "path": "password"}],
        }}));
    }
    let mut pod_spec = json!({
        "serviceAccountName": n.instance_identity(),
        "enableServiceLinks": false,
        // Patroni stops PostgreSQL (fast) on SIGTERM: a shutdown checkpoint, then the archiver
        // pushes the last WAL (pgBackRest waits up to its archive-timeout, 60 s, on a slow
        // store). Killed before the end, the data directory needs crash recovery, which a
        // major upgrade's pg_upgrade refuses ("in production"): 60 s was seen to be too short
        // under load. A clean stop ends the wait at once.
        "terminationGracePeriodSeconds": 300,
        // A primary cut off from the network asks the other members, by name, whether it may
        // keep its role (Patroni's failsafe mode) before it demotes. With the resolver's
        // defaults (5 s × 2 attempts per search domain) an unreachable DNS kept it primary
        // 45 s, past the ttl and the promotion of another member; one 1 s try each bounds
        // that to seconds. A resolver that answers is unaffected.
        "dnsConfig": {"options": [
            {"name": "timeout", "value": "1"},
            {"name": "attempts", "value": "1"},
        ]},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": POSTGRES_UID, "runAsGroup": POSTGRES_UID,
            "fsGroup": POSTGRES_UID, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": sched["affinity"],
        "containers": containers,
        "volumes": volumes,
    });
    // Only set what the spec asks for, so the live object does not differ by empty fields.
    for key in ["tolerations", "topologySpreadConstraints", "nodeSelector"] {
        if sched[key].as_array().is_some_and(|a| !a.is_empty())
            || sched[key].as_object().is_some_and(|o| !o.is_empty())
        {
            pod_spec[key] = sched[key].clone();
        }
    }
    if sched["priorityClassName"].is_string() {
        pod_spec["priorityClassName"] = sched["priorityClassName"].clone();
    }
    let mut claim = json!({
        "metadata": {"name": "data", "labels": ctx.labels()},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.storage.size}}},
    });
    if let Some(class) = &spec.storage.storage_class_name {
        claim["spec"]["storageClassName"] = Value::from(class.as_str());
    }
    let mut meta = ctx.meta(&n.statefulset());
    meta["annotations"] = json!({labels::POSTGRES_VERSION: spec.postgresql.version.to_string()});
    typed(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta,
            "spec": {
                "replicas": spec.instances,
                "serviceName": n.pods_service(),
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "OnDelete"},
                "selector": {"matchLabels": ctx.instance_selector()},
                // The controller carries out spec.persistentVolumeClaimRetentionPolicy itself
                // (storage.rs): with a Delete here, the StatefulSet controller updates each new
                // claim while the scheduler binds it, and the pod waits out a back-off.
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": {labels::COMPONENT: "instance"}},
                    "spec": pod_spec,
                },
                "volumeClaimTemplates": [claim],
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{BACKED_UP, THREE, cluster};
    use std::collections::BTreeMap;

    const EXPORTER: &str = "localhost/pgpilot/postgres-exporter:0.17.1";

    fn sts(spec: &str) -> StatefulSet {
        let c = cluster(spec);
        statefulset(
            &Ctx::new(&c).unwrap(),
            "localhost/pgpilot/postgres:17",
            EXPORTER,
        )
        .unwrap()
    }

    #[test]
    fn instances_storage_and_update_strategy() {
        let s = sts(THREE).spec.unwrap();
        assert_eq!(s.replicas, Some(3));
        assert_eq!(
            s.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(s.service_name.as_deref(), Some("db-pods"));
        let claim = &s.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.clone().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec.resources.unwrap().requests.unwrap()["storage"].0,
            "10Gi"
        );
        let retention = s.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(
            (
                retention.when_deleted.as_deref(),
                retention.when_scaled.as_deref()
            ),
            (Some("Retain"), Some("Retain")),
            "the controller applies the spec's policy itself"
        );
    }

    #[test]
    fn pods_run_patroni_as_postgres_under_the_restricted_profile() {
        let s = sts(THREE).spec.unwrap();
        let pod = s.template.spec.unwrap();
        let sc = pod.security_context.unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.run_as_user),
            (Some(true), Some(999))
        );
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("localhost/pgpilot/postgres:17"));
        assert_eq!(c.command.as_deref().unwrap()[0], "patroni");
        let csc = c.security_context.clone().unwrap();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert_eq!(csc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        let readiness = c.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readiness"));
        assert_eq!(readiness.scheme.as_deref(), Some("HTTPS"));
        let connect = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "PATRONI_RESTAPI_CONNECT_ADDRESS")
            .and_then(|e| e.value.clone());
        assert_eq!(
            connect.as_deref(),
            Some("$(PATRONI_NAME).db-pods.prod.svc:8008"),
            "members reach each other by the name their certificate carries"
        );
        let dns = pod.dns_config.clone().unwrap().options.unwrap();
        assert_eq!(
            dns.iter()
                .map(|o| (o.name.clone().unwrap(), o.value.clone().unwrap()))
                .collect::<Vec<_>>(),
            [
                ("timeout".into(), "1".into()),
                ("attempts".into(), "1".into())
            ],
            "a partitioned primary's name lookups fail fast"
        );
        // Passwords are in no environment variable (a running Patroni never reads its
        // environment again): auth.yaml, from a Secret, sits beside patroni.yaml.
        let env = c.env.clone().unwrap();
        assert!(!env.iter().any(|e| e.name.contains("PASSWORD")), "{env:?}");
        assert_eq!(c.command.as_deref().unwrap(), ["patroni", "/etc/patroni"]);
        let config = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "config")
            .unwrap();
        let sources: Vec<String> = config
            .projected
            .clone()
            .unwrap()
            .sources
            .unwrap()
            .into_iter()
            .map(|s| match (s.config_map, s.secret) {
                (Some(m), None) => format!("configMap/{}", m.name),
                (None, Some(s)) => format!("secret/{}", s.name),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(
            sources,
            [
                "configMap/db-patroni",
                "secret/db-patroni-auth",
                "secret/db-tls"
            ]
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("db-instance"));
    }

    #[test]
    fn a_backed_up_cluster_runs_the_pgbackrest_server_beside_postgres() {
        let pod = sts(BACKED_UP).spec.unwrap().template.spec.unwrap();
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["postgres", "pgbackrest", "exporter"]);
        let server = &pod.containers[1];
        assert_eq!(server.command.as_deref().unwrap(), ["pgbackrest", "server"]);
        assert_eq!(server.ports.as_deref().unwrap()[0].container_port, 8432);
        let sc = server.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        let mounts = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
            c.volume_mounts
                .clone()
                .unwrap()
                .into_iter()
                .map(|m| m.mount_path)
                .collect()
        };
        assert!(mounts(server).contains(&"/etc/pgbackrest-tls".to_owned()));
        let postgres = &pod.containers[0];
        assert!(mounts(postgres).contains(&"/etc/pgbackrest".to_owned()));
        assert!(mounts(postgres).contains(&"/etc/pgbackrest-repo-ca".to_owned()));
        assert!(!mounts(postgres).contains(&"/etc/pgbackrest-tls".to_owned()));
        let env = postgres.env.clone().unwrap();
        let key = env
            .iter()
            .find(|e| e.name == "PGBACKREST_REPO1_S3_KEY_SECRET")
            .unwrap();
        assert!(key.value.is_none(), "from the Secret, never inline");
        let tls = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "pgbackrest-tls")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(
            (tls.secret_name.as_deref(), tls.default_mode),
            (Some("db-pgbackrest-tls"), Some(0o440))
        );
    }

    #[test]
    fn patroni_metrics_label_the_pods_for_their_pod_monitor() {
        let labels = |spec: &str| {
            sts(spec)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .labels
                .unwrap()
        };
        assert!(!labels(THREE).contains_key("pgpilot.io/patroni-metrics"));
        let on = labels(&format!(
            "{THREE}monitoring: {{patroni: {{enabled: true}}}}\n"
        ));
        assert_eq!(on["pgpilot.io/patroni-metrics"], "true");
    }

    #[test]
    fn without_backups_the_pod_is_as_before() {
        let pod = sts(&format!(
            "{THREE}monitoring: {{exporter: {{enabled: false}}}}\n"
        ))
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.volumes.unwrap().len(), 4);
    }

    #[test]
    fn the_exporter_reads_this_instance_as_the_monitor_role_with_its_password_file_only() {
        let pod = sts(THREE).spec.unwrap().template.spec.unwrap();
        let exporter = pod
            .containers
            .iter()
            .find(|c| c.name == "exporter")
            .unwrap();
        assert_eq!(exporter.image.as_deref(), Some(EXPORTER));
        let env: BTreeMap<String, String> = exporter
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(
            env,
            BTreeMap::from([
                (
                    "DATA_SOURCE_URI".into(),
                    "127.0.0.1:5432/postgres?sslmode=require".into()
                ),
                ("DATA_SOURCE_USER".into(), "pgpilot_monitor".into()),
                (
                    "DATA_SOURCE_PASS_FILE".into(),
                    "/etc/pgpilot/monitor/password".into()
                ),
            ]),
            "no password in the environment"
        );
        let args = exporter.args.clone().unwrap();
        assert!(
            args.contains(&"--no-collector.stat_user_tables".to_owned()),
            "{args:?}"
        );
        assert_eq!(exporter.ports.as_deref().unwrap()[0].container_port, 9187);
        let mounts = exporter.volume_mounts.clone().unwrap();
        assert_eq!(
            mounts.len(),
            1,
            "neither the data nor the socket: {mounts:?}"
        );
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == mounts[0].name)
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(
            volume.secret_name.as_deref(),
            Some("db-pgpilot-monitor-credentials")
        );
        let items = volume.items.unwrap();
        assert_eq!((items.len(), items[0].key.as_str()), (1, "password"));
        let sc = exporter.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let limits = exporter.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["memory"].0, "128Mi");

        let sized = sts(&format!(
            "{THREE}monitoring: {{exporter: {{resources: {{limits: {{memory: 64Mi}}}}}}}}\n"
        ));
        let pod = sized.spec.unwrap().template.spec.unwrap();
        let exporter = pod
            .containers
            .iter()
            .find(|c| c.name == "exporter")
            .unwrap();
        let resources = exporter.resources.clone().unwrap();
        assert_eq!(resources.limits.unwrap()["memory"].0, "64Mi");
        assert!(resources.requests.is_none(), "the spec's, not merged");
    }

    #[test]
    fn default_affinity_spreads_and_the_spec_replaces_it() {
        let s = sts(THREE).spec.unwrap();
        let anti = s
            .template
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap();
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            2
        );

        let s = sts(
            "instances: 2\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nscheduling:\n  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]}}}\n  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}]\n  nodeSelector: {pool: db}",
        )
        .spec
        .unwrap();
        let pod = s.template.spec.unwrap();
        let affinity = pod.affinity.unwrap();
        assert!(affinity.pod_anti_affinity.is_none() && affinity.node_affinity.is_some());
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        let spread = &pod.topology_spread_constraints.unwrap()[0];
        assert_eq!(
            spread.label_selector.clone().unwrap().match_labels.unwrap()["pgpilot.io/cluster"],
            "db",
            "an empty selector is filled with the instances'"
        );
        assert_eq!(pod.node_selector.unwrap()["pool"], "db");
    }
}
