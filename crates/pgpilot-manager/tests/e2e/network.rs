//! The cluster's NetworkPolicy, enforced on the node by kube-router's firewall: who reaches
//! PostgreSQL (5432) and Patroni's API (8008), tried from pods in several namespaces.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use crate::harness::{
    ClusterYaml, Env, OPERATOR_POD_LABELS, connect, eventually, instance_config, pod_ready, role_of,
};

/// Tries a TCP connection from inside a pod: `open`, or `closed <why>`.
const REACH: &str = "import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print('open')
except OSError as e:
    print('closed', e)
";

/// A pod that only sleeps, to connect from: the instances' image (it has Python), restricted.
fn probe_pod(env: &Env, ns: &str, name: &str, labels: &str) -> Result<()> {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": "localhost/pgpilot/postgres:17",
                "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    env.c
        .kubectl(&["apply", "-f", "-"], Some(&pod.to_string()))
        .map(drop)
        .map_err(|e| anyhow!("{e}"))
}

/// Whether `pod` in `ns` (container `container`) opens a TCP connection to `ip:port`.
fn reaches(env: &Env, ns: &str, pod: &str, container: &str, ip: &str, port: u16) -> Result<bool> {
    let port = port.to_string();
    let out = env
        .c
        .kubectl(
            &[
                "exec", "-n", ns, pod, "-c", container, "--", "python3", "-c", REACH, ip, &port,
            ],
            None,
        )
        .map_err(|e| anyhow!("{e}"))?;
    match out.split_whitespace().next() {
        Some("open") => Ok(true),
        Some("closed") => Ok(false),
        _ => bail!("{pod}: unexpected answer {out:?}"),
    }
}

/// Default policy (the namespace may use SQL; Patroni's API only the cluster and pgpilot),
/// a failover under it (members call each other's API, the old primary rejoins), and the
/// policy gone when switched off.
#[tokio::test]
async fn the_network_policy_lets_in_the_namespace_the_cluster_and_pgpilot_only() {
    let mut env = Env::start("netpol").await;
    let result = policy(&mut env).await;
    env.finish(result).await;
}

async fn policy(env: &mut Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(2).yaml())?;
    let ns = env.ns.clone();
    let other = env.extra_namespace("other").await?;
    let operator = env.operator_namespace();
    env.extra_namespace("operator").await?;
    // A client in the cluster's namespace; one elsewhere; one with the manager's labels in
    // the manager's namespace (to the network, that is what pgpilot's pod looks like), and
    // one without them beside it.
    probe_pod(env, &ns, "client", "app=shop")?;
    probe_pod(env, &other, "outsider", "app=shop")?;
    probe_pod(env, &operator, "manager", OPERATOR_POD_LABELS)?;
    probe_pod(env, &operator, "impostor", "app.kubernetes.io/name=pgpilot")?;
    env.wait_ready("db", 2, Duration::from_secs(300)).await?;

    let policy = env
        .api::<NetworkPolicy>()
        .get("db")
        .await
        .context("NetworkPolicy db")?;
    let owner = policy.metadata.owner_references.unwrap_or_default();
    ensure!(
        owner
            .iter()
            .any(|o| o.kind == "PostgresCluster" && o.name == "db"),
        "the NetworkPolicy is not owned by the cluster: {owner:?}"
    );

    let pods = env.pods("db").await?;
    let primary = pods
        .iter()
        .find(|p| role_of(p) == Some("primary"))
        .context("no primary pod")?;
    let ip = primary
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("primary without an IP")?;
    let primary_name = primary.metadata.name.clone().unwrap_or_default();
    let replica = if primary_name == "db-0" {
        "db-1"
    } else {
        "db-0"
    };
    for (namespace, pod) in [
        (&ns, "client"),
        (&other, "outsider"),
        (&operator, "manager"),
        (&operator, "impostor"),
    ] {
        eventually(
            &format!("{pod} running"),
            Duration::from_secs(60),
            || async {
                let p: Pod = kube::Api::namespaced(env.client.clone(), namespace)
                    .get(pod)
                    .await
                    .map_err(|e| e.to_string())?;
                pod_ready(&p)
                    .then_some(())
                    .ok_or_else(|| format!("{:?}", p.status))
            },
        )
        .await?;
    }

    // kube-router writes its rules as events arrive: wait for the outsider to be shut out.
    eventually(
        "the other namespace shut out of 5432 and 8008",
        Duration::from_secs(90),
        || async {
            let sql = reaches(env, &other, "outsider", "probe", &ip, 5432)
                .map_err(|e| format!("{e:#}"))?;
            let api = reaches(env, &other, "outsider", "probe", &ip, 8008)
                .map_err(|e| format!("{e:#}"))?;
            (!sql && !api)
                .then_some(())
                .ok_or(format!("5432 open: {sql}, 8008 open: {api}"))
        },
    )
    .await?;
    let expect =
        |who: &str, ns: &str, pod: &str, container: &str, port: u16, open: bool| -> Result<()> {
            let got = reaches(env, ns, pod, container, &ip, port)?;
            ensure!(
                got == open,
                "{who} ({ns}/{pod}) to {primary_name}:{port}: open {got}, expected {open}"
            );
            Ok(())
        };
    expect(
        "a client of the namespace",
        &ns,
        "client",
        "probe",
        5432,
        true,
    )?;
    expect(
        "a client of the namespace",
        &ns,
        "client",
        "probe",
        8008,
        false,
    )?;
    expect("pgpilot", &operator, "manager", "probe", 5432, true)?;
    expect("pgpilot", &operator, "manager", "probe", 8008, true)?;
    expect(
        "a pod without pgpilot's labels",
        &operator,
        "impostor",
        "probe",
        8008,
        false,
    )?;
    expect(
        "a pod without pgpilot's labels",
        &operator,
        "impostor",
        "probe",
        5432,
        false,
    )?;
    expect("the other member", &ns, replica, "postgres", 8008, true)?;
    expect("the other member", &ns, replica, "postgres", 5432, true)?;

    // The members still work together under the policy: a failover (the replica asks the
    // other member's API before it takes over), the old primary rejoining (pg_rewind or a
    // new clone over 5432), the -rw Service serving writes. A graceful delete: Patroni gives
    // up the leader lock as it stops. (Forced, the pod can be back before the lock expires, and
    // a member that finds the lock its own keeps it: no failover to see.)
    env.kubectl(&["delete", "pod", &primary_name, "--wait=false"])?;
    env.wait_cluster("db", "a new primary", Duration::from_secs(120), |pg| {
        let current = pg.status.as_ref().and_then(|s| s.current_primary.clone());
        (current.as_deref() == Some(replica))
            .then_some(())
            .ok_or(format!("currentPrimary {current:?}"))
    })
    .await?;
    env.wait_ready("db", 2, Duration::from_secs(300)).await?;
    let su = env.superuser("db").await?;
    let client = connect(&instance_config(&env.service_ip("db-rw").await?, &su)).await?;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS netpol(v int); INSERT INTO netpol VALUES (1)")
        .await
        .context("a write through -rw after the failover")?;

    // Switched off: the policy goes, the other namespace gets in.
    env.patch_spec("db", json!({"networkPolicy": {"enabled": false}}))
        .await?;
    eventually(
        "the NetworkPolicy deleted",
        Duration::from_secs(60),
        || async {
            match env.api::<NetworkPolicy>().get_opt("db").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let new_primary_ip = env
        .pods("db")
        .await?
        .into_iter()
        .find(|p| role_of(p) == Some("primary"))
        .and_then(|p| p.status?.pod_ip)
        .context("no primary IP")?;
    eventually(
        "the other namespace let in",
        Duration::from_secs(90),
        || async {
            reaches(env, &other, "outsider", "probe", &new_primary_ip, 5432)
                .map_err(|e| format!("{e:#}"))?
                .then_some(())
                .ok_or("still shut out".to_owned())
        },
    )
    .await?;
    Ok(())
}
