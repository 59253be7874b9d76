//! Small Kubernetes helpers: kubectl for exec and logs, polling waits, clean deletion.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// Runs kubectl (the cluster's own, first on PATH after e2e/scripts/env.sh) and returns
/// stdout.
pub async fn kubectl(args: &[&str]) -> Result<String> {
    run(
        "kubectl",
        &[],
        args,
        "running kubectl (source e2e/scripts/env.sh first)",
    )
    .await
}

/// Runs `program` with `fixed` then `args`; its stdout, or its stderr as the error.
async fn run(
    program: &str,
    fixed: &[&str],
    args: &[&str],
    context: &'static str,
) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(fixed)
        .args(args)
        .output()
        .await
        .context(context)?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Creates the namespace (labelled for the `restricted` Pod Security Standard) if missing.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let ns = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pgpilot.io/bench": "true",
        }},
    });
    api.patch(
        name,
        &PatchParams::apply("pgpilot-bench").force(),
        &Patch::Apply(&ns),
    )
    .await
    .with_context(|| format!("applying namespace {name}"))?;
    Ok(())
}

/// Waits until nothing matching `selector` is left of kind `K` in `ns`.
pub async fn wait_gone<K>(
    client: &Client,
    ns: &str,
    selector: &str,
    timeout: Duration,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    poll(
        &format!("{} {selector} to be gone", K::kind(&())),
        timeout,
        Duration::from_millis(250),
        || async {
            let left = api.list_metadata(&lp).await?.items.len();
            Ok((left == 0).then_some(()))
        },
    )
    .await
}

/// Deletes pods and PVCs matching `selector` (pods named `<name>-<n>`) and waits until they and
/// the claims' volumes are gone, so the next sample starts on a quiet node: the pods' processes
/// stopped (a pod object goes only once the kubelet has stopped it) and local-path's clean-up
/// helpers done.
pub async fn delete_pods_and_claims(
    client: &Client,
    ns: &str,
    selector: &str,
    name: &str,
) -> Result<()> {
    let lp = ListParams::default().labels(selector);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.delete_collection(&DeleteParams::default().grace_period(1), &lp)
        .await
        .context("deleting pods")?;
    wait_gone::<Pod>(client, ns, selector, Duration::from_secs(180)).await?;
    delete_claims(client, ns, selector, name).await
}

/// Deletes the PVCs matching `selector` and waits until they and their volumes are gone, and
/// until the node has torn down the pods named `<name>-<n>` and local-path's helpers.
pub async fn delete_claims(client: &Client, ns: &str, selector: &str, name: &str) -> Result<()> {
    let lp = ListParams::default().labels(selector);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let volumes: Vec<String> = pvcs
        .list(&lp)
        .await
        .context("listing claims")?
        .items
        .into_iter()
        .filter_map(|c| c.spec.and_then(|s| s.volume_name))
        .collect();
    pvcs.delete_collection(&DeleteParams::default(), &lp)
        .await
        .context("deleting claims")?;
    wait_gone::<PersistentVolumeClaim>(client, ns, selector, Duration::from_secs(180)).await?;
    let pvs = Api::<PersistentVolume>::all(client.clone());
    poll(
        "the claims' volumes to be deleted",
        Duration::from_secs(180),
        Duration::from_millis(250),
        || async {
            for v in &volumes {
                if pvs.get_metadata_opt(v).await?.is_some() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    // local-path deletes its helper pods once they are done; until the kubelet has torn them
    // down, the next sample's pods would start beside that work.
    let helpers = Api::<Pod>::namespaced(client.clone(), LOCAL_PATH_NAMESPACE);
    poll(
        "local-path's helper pods to be gone",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let left = helpers.list_metadata(&ListParams::default()).await?;
            Ok(left.items.is_empty().then_some(()))
        },
    )
    .await?;
    wait_containers_gone(ns, name).await
}

/// Waits until the node's containerd holds no container of a pod named `<name>-<n>` in `ns` nor
/// of local-path's helper pods. A pod object goes once its containers have stopped, but the
/// kubelet tears down its sandbox (network, cgroups, snapshots) afterwards; a sample started
/// meanwhile shares the node with that work, and measured up to 2 s slower. Skipped without
/// `PGPILOT_CONTAINERD_SOCKET` (set by e2e/scripts/bench-run.sh).
async fn wait_containers_gone(ns: &str, name: &str) -> Result<()> {
    let Ok(socket) = std::env::var("PGPILOT_CONTAINERD_SOCKET") else {
        return Ok(());
    };
    let filters = [
        format!(
            "labels.\"io.kubernetes.pod.namespace\"=={ns},labels.\"io.kubernetes.pod.name\"~=\"^{name}-[0-9]+$\""
        ),
        format!("labels.\"io.kubernetes.pod.namespace\"=={LOCAL_PATH_NAMESPACE}"),
    ];
    poll(
        "the node to tear down the deleted pods' containers",
        // The kubelet removes a deleted pod's containers in its garbage collection, once a minute.
        Duration::from_secs(180),
        Duration::from_millis(250),
        || async {
            for filter in &filters {
                let listed = ctr(&socket, &["containers", "ls", "-q", filter]).await?;
                if !listed.trim().is_empty() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// Runs `ctr` against the node's containerd (Kubernetes' `k8s.io` namespace); its stdout.
pub async fn ctr(socket: &str, args: &[&str]) -> Result<String> {
    run(
        "ctr",
        &["--address", socket, "--namespace", "k8s.io"],
        args,
        "running ctr",
    )
    .await
}

/// Where local-path-provisioner (e2e/scripts/node-up.sh) runs its helper pods.
const LOCAL_PATH_NAMESPACE: &str = "local-path-storage";

/// The machine's load averages (1, 5, 15 min) as written in /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}
