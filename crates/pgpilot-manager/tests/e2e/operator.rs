//! The operator as platform teams run it: the chart's Deployment in the cluster (two
//! replicas, one leader, restricted pod security, the operator's NetworkPolicy) managing a
//! cluster, a `helm upgrade` from the previous chart release that leaves the cluster serving
//! without a failover, its admission webhooks served through their Service (and, with no
//! operator left, only the restore webhook refusing), and the standby taking over from a
//! deleted leader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use crate::harness::{ClusterYaml, Env, eventually, timeline};

/// The previous chart release, as published (`helm package` of the chart it replaces).
const PREVIOUS_CHART: &str = "charts/fixtures/pgpilot-0.1.0.tgz";
/// The operator image e2e-build.sh builds from this checkout.
const IMAGE_TAG: &str = "e2e";
const READY: Duration = Duration::from_secs(300);

#[tokio::test]
async fn the_chart_runs_the_operator_in_the_cluster_and_an_upgrade_keeps_the_cluster_serving() {
    let mut env = Env::start_without_manager("operator").await;
    let result = in_cluster(&mut env).await;
    env.finish(result).await;
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// helm as admin; `helm uninstall` of its release when dropped (cluster-scoped objects
/// outlive the test's namespaces otherwise).
struct Helm {
    bin: String,
    kubeconfig: PathBuf,
    release: String,
    namespace: String,
}

impl Helm {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.namespace])
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Helm {
    /// `helm <verb> <release> <chart> -f <values> --wait`: install or upgrade.
    fn deploy(&self, verb: &str, chart: &Path, values: &str) -> Result<()> {
        let chart = chart.display().to_string();
        self.run(&[
            verb,
            &self.release,
            &chart,
            "-f",
            values,
            "--wait",
            "--timeout",
            "5m",
        ])
        .map(drop)
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = self.run(&["uninstall", &self.release, "--wait=false"]);
    }
}

/// The holder of the operator's Lease, once there is one.
async fn leader(env: &Env, namespace: &str) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), namespace);
    eventually("an operator leading", Duration::from_secs(60), || async {
        leases
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .find_map(|l| l.spec.as_ref()?.holder_identity.clone())
            .filter(|h| !h.is_empty())
            .ok_or("no holder".to_owned())
    })
    .await
}

async fn operator_pods(env: &Env, namespace: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    Ok(pods.list(&ListParams::default()).await?.items)
}

async fn in_cluster(env: &mut Env) -> Result<()> {
    let opns = env.extra_namespace("operator").await?;
    ensure!(opns == env.operator_namespace(), "{opns}");
    env.c
        .kubectl(
            &[
                "label",
                "namespace",
                &opns,
                "pod-security.kubernetes.io/enforce=restricted",
            ],
            None,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let bin = std::process::Command::new(repo().join("e2e/scripts/build-helm.sh")).output()?;
    ensure!(bin.status.success(), "build-helm.sh failed");
    let helm = Helm {
        bin: String::from_utf8(bin.stdout)?.trim().to_owned(),
        kubeconfig: env.c.admin_kubeconfig.clone(),
        release: format!("pgpilot-{}", env.ns.rsplit('-').next().unwrap_or("e2e")),
        namespace: opns.clone(),
    };
    let values = std::env::temp_dir().join(format!("{}-values.yaml", env.ns));
    std::fs::write(
        &values,
        format!(
            "image: {{tag: {IMAGE_TAG}}}\ncontrollers: [cluster]\nwatchNamespaces: [{}]\n\
             replicaCount: 2\nlogFormat: text\n",
            env.ns
        ),
    )?;
    let values = values.display().to_string();

    // The previous release of the chart, its pods admitted under `restricted`.
    helm.deploy("install", &repo().join(PREVIOUS_CHART), &values)?;
    let before_upgrade = leader(env, &opns).await?;

    // It manages a cluster from inside: its NetworkPolicy lets it reach Patroni.
    env.apply(&ClusterYaml::new("db").instances(2).yaml())?;
    let pg = env.wait_ready("db", 2, READY).await?;
    let primary = pg.status.as_ref().and_then(|s| s.current_primary.clone());
    let tl = timeline(&pg);
    let instance_uids = |pods: Vec<Pod>| {
        let mut uids: Vec<_> = pods
            .iter()
            .filter(|p| p.name_any().starts_with("db-"))
            .map(|p| (p.name_any(), p.metadata.uid.clone()))
            .collect();
        uids.sort();
        uids
    };
    let instances_before = instance_uids(env.pods("db").await?);

    // helm upgrade to this chart: new operator pods, the same cluster serving.
    helm.deploy("upgrade", &repo().join("charts/pgpilot"), &values)?;
    // The release's pods now (helm's wait may leave the old ones terminating).
    let names: Vec<String> = operator_pods(env, &opns)
        .await?
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect();
    let holder_pod = |holder: &str| {
        names
            .iter()
            .find(|n| holder.starts_with(n.as_str()))
            .cloned()
    };
    let leader_pod = eventually(
        "the Lease held by a pod of the upgrade",
        Duration::from_secs(60),
        || async {
            let holder = leader(env, &opns).await.map_err(|e| e.to_string())?;
            holder_pod(&holder).ok_or(format!(
                "holder {holder}, pods {names:?} (was {before_upgrade})"
            ))
        },
    )
    .await?;
    env.c
        .kubectl(&["get", "networkpolicy", "-n", &opns, &helm.release], None)
        .map_err(|e| anyhow!("the upgrade's NetworkPolicy: {e}"))?;
    let pg = env.wait_ready("db", 2, READY).await?;
    ensure!(
        pg.status.as_ref().and_then(|s| s.current_primary.clone()) == primary
            && timeline(&pg) == tl,
        "a failover during the upgrade: primary {primary:?} → {:?}, timeline {tl:?} → {:?}",
        pg.status.as_ref().and_then(|s| s.current_primary.clone()),
        timeline(&pg)
    );
    ensure!(
        instance_uids(env.pods("db").await?) == instances_before,
        "instance pods replaced by the operator's upgrade"
    );
    // The upgraded operator acts.
    env.patch_spec("db", serde_json::json!({"instances": 3}))
        .await?;
    env.wait_ready("db", 3, READY).await?;

    // Its admission webhooks, reached by the API server through their Service with the
    // certificate the operator issued itself.
    let create = |yaml: &str| {
        env.c
            .kubectl(&["create", "-n", &env.ns, "-f", "-"], Some(yaml))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    create(&upgrade_yaml("first")).map_err(|e| anyhow!("{e}"))?;
    let second = create(&upgrade_yaml("second"));
    ensure!(
        second.as_ref().is_err_and(|e| e.contains(
            "admission webhook \"postgresupgrades.pgpilot.io\" denied the request: PostgresUpgrade first is under way for cluster db"
        )),
        "a second upgrade of db: {second:?}"
    );
    let restore = create(&restore_yaml("copy"));
    ensure!(
        restore
            .as_ref()
            .is_err_and(|e| e.contains("restores.postgresclusters.pgpilot.io")
                && e.contains("has never backed up")),
        "a restore of a cluster without backups: {restore:?}"
    );

    // The leader's pod deleted: the standby leads and acts.
    Api::<Pod>::namespaced(env.client.clone(), &opns)
        .delete(&leader_pod, &DeleteParams::default())
        .await?;
    eventually("the standby leading", Duration::from_secs(90), || async {
        let holder = leader(env, &opns).await.map_err(|e| e.to_string())?;
        holder_pod(&holder)
            .filter(|pod| *pod != leader_pod)
            .map(drop)
            .ok_or(format!("held by {holder}, was {leader_pod}"))
    })
    .await?;
    env.patch_spec("db", serde_json::json!({"instances": 2}))
        .await?;
    env.wait_ready("db", 2, READY).await?;

    // No operator at all: a restore (the one webhook that fails closed) is refused with the
    // webhook's name, and nothing else waits for it.
    env.c
        .kubectl(
            &[
                "scale",
                "deployment",
                "-n",
                &opns,
                &helm.release,
                "--replicas=0",
            ],
            None,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let refused = eventually(
        "restores refused without the operator",
        Duration::from_secs(60),
        || async {
            match create(&restore_yaml("while-down")) {
                Err(e)
                    if e.contains(
                        "failed calling webhook \"restores.postgresclusters.pgpilot.io\"",
                    ) =>
                {
                    Ok(e)
                }
                other => {
                    let _ = env.kubectl(&["delete", "pgc", "while-down", "--ignore-not-found"]);
                    Err(format!("{other:?}"))
                }
            }
        },
    )
    .await?;
    tracing::info!(%refused, "with the operator down");
    create(&upgrade_yaml("while-down"))
        .map_err(|e| anyhow!("an upgrade with the operator down: {e}"))?;
    env.kubectl(&["delete", "postgresupgrade", "first", "while-down"])?;
    Ok(())
}

fn upgrade_yaml(name: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresUpgrade\nmetadata: {{name: {name}}}\n\
         spec: {{cluster: {{name: db}}, targetVersion: 17, targetImage: 'localhost/pgpilot/postgres:17'}}\n"
    )
}

fn restore_yaml(name: &str) -> String {
    ClusterYaml::new(name)
        .spec("bootstrap: {restore: {source: {name: db}, repository: {s3: {endpoint: 'minio:9000', bucket: backups, credentials: {secretName: s3}}}}}")
        .yaml()
}
