//! Baseline (b): the same steps as plain pods on the same node, without Patroni or the
//! operator. One pod runs initdb and starts PostgreSQL; the replica pods wait for it through
//! a ClusterIP Service, clone it with pg_basebackup and start streaming. Same image
//! (imagePullPolicy Never), the restricted security context (uid 999, read-only root),
//! the same resources and one PVC each from the default StorageClass, all created at once
//! (as the operator's StatefulSet does with `podManagementPolicy: Parallel`). Timed from
//! the first create until `pg_stat_replication` on the primary shows every replica streaming
//! (one instance: until the primary answers a query).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::kube_util::{delete_pods_and_claims, kubectl, poll};
use crate::milestones::Milestones;

pub const IMAGE: &str = "localhost/pgpilot/postgres:17";
const LABEL: &str = "pgpilot.io/bench-baseline";
const DATA: &str = "/var/lib/postgresql/data/pgdata";

const PRIMARY_SCRIPT: &str = r#"set -e
printf '%s' "$PGPASSWORD" > /tmp/pwfile
initdb -D "$D" --username=postgres --pwfile=/tmp/pwfile --auth-local=peer --auth-host=scram-sha-256 \
  --encoding=UTF8 --locale=C.UTF-8 --data-checksums
printf 'host all all all scram-sha-256\nhost replication all all scram-sha-256\n' >> "$D/pg_hba.conf"
exec postgres -D "$D" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql -c wal_keep_size=128MB
"#;

const REPLICA_SCRIPT: &str = r#"set -e
until pg_isready -q -h "$PRIMARY" -p 5432; do sleep 0.1; done
pg_basebackup -h "$PRIMARY" -U postgres -D "$D" -X stream -c fast -R
exec postgres -D "$D" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
"#;

fn secret_name(run: &str) -> String {
    format!("{run}-password")
}

fn pod(run: &str, i: usize, secret: &str) -> Result<Pod> {
    let name = format!("{run}-{i}");
    let (role, script) = if i == 0 {
        ("primary", PRIMARY_SCRIPT)
    } else {
        ("replica", REPLICA_SCRIPT)
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: run, "pgpilot.io/bench-role": role}},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "postgres",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "env": [
                    {"name": "D", "value": DATA},
                    {"name": "PRIMARY", "value": format!("{run}-primary")},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
                ],
                "ports": [{"name": "postgres", "containerPort": 5432}],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                    {"name": "run", "mountPath": "/run/postgresql"},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
            }],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": name}},
                {"name": "run", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "shm", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }))?)
}

fn claim(run: &str, i: usize) -> Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{run}-{i}"), "labels": {LABEL: run}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?)
}

fn service(run: &str) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{run}-primary"), "labels": {LABEL: run}},
        "spec": {"selector": {LABEL: run, "pgpilot.io/bench-role": "primary"},
                 "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}]},
    }))?)
}

/// One run: `instances` pods named `<run>-<i>`; returns the time from the first create to
/// every replica streaming, then deletes everything and waits until it is gone.
pub async fn run_once(
    client: &Client,
    ns: &str,
    run: &str,
    instances: usize,
) -> Result<(Duration, BTreeMap<String, f64>)> {
    let password = format!(
        "bench{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name(run), "labels": {LABEL: run}},
        "stringData": {"password": password},
    }))?;
    let _ = secrets
        .delete(&secret_name(run), &DeleteParams::default())
        .await;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the baseline's password Secret")?;
    let result = measure(client, ns, run, instances, &password).await;
    let selector = format!("{LABEL}={run}");
    let cleanup = async {
        let services = Api::<Service>::namespaced(client.clone(), ns);
        let _ = services
            .delete(&format!("{run}-primary"), &DeleteParams::default())
            .await;
        let _ = secrets
            .delete(&secret_name(run), &DeleteParams::default())
            .await;
        delete_pods_and_claims(client, ns, &selector, run).await
    };
    let cleaned = cleanup.await;
    let elapsed = result?;
    cleaned?;
    Ok(elapsed)
}

async fn measure(
    client: &Client,
    ns: &str,
    run: &str,
    instances: usize,
    password: &str,
) -> Result<(Duration, BTreeMap<String, f64>)> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    let t0 = Instant::now();
    let steps = Milestones::start(client, ns, &format!("{LABEL}={run}"), instances, None, t0);
    services.create(&pp, &service(run)?).await?;
    for i in 0..instances {
        claims.create(&pp, &claim(run, i)?).await?;
        pods.create(&pp, &pod(run, i, &secret_name(run))?).await?;
    }
    let primary = format!("{run}-0");
    let want = (instances - 1) as i64;
    let done = poll(
        "baseline pods streaming",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || async {
            let failed = pods
                .list(&ListParams::default().labels(&format!("{LABEL}={run}")))
                .await?
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
            if let Some(p) = failed {
                let name = p.metadata.name.unwrap_or_default();
                return Ok(Some(Err(anyhow::anyhow!(
                    "pod {name} failed: {}",
                    kubectl(&["-n", ns, "logs", &name, "--tail=3"])
                        .await
                        .unwrap_or_default()
                        .trim()
                ))));
            }
            let p = pods.get(&primary).await?;
            let Some(ip) = p.status.and_then(|s| s.pod_ip) else {
                return Ok(None);
            };
            Ok((crate::host::streaming(&ip, 5432, password).await? >= want).then_some(Ok(())))
        },
    )
    .await
    .and_then(|r| r);
    let elapsed = t0.elapsed();
    let mut steps = steps.stop();
    done?;
    steps.insert("replicas streaming".to_owned(), elapsed.as_secs_f64());
    Ok((elapsed, steps))
}
