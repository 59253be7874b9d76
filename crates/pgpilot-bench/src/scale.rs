//! `just bench-scale`: many PostgresClusters on one manager, against the real control plane
//! with kwok's fake nodes (e2e/scripts/bench-scale.sh starts a fresh one per size). Each
//! cluster has three instances whose pods run on fake nodes (volumes pre-bound, so they
//! schedule); nothing listens at their addresses, so every Patroni call fails — the cost
//! of that is part of what is measured.
//!
//! Measured: the time until every cluster has its StatefulSet and a status for its
//! generation; the manager's API requests by verb and per cluster, its writes, the API
//! server's 429s; the manager's peak and steady memory and CPU; a steady window (writes
//! must be 0); and a restart with every cluster converged: time until each was reconciled
//! once, and the writes that cost (must be 0). Figures only, nothing asserted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_testkit::{LocalCluster, ManagerProcess, http_get};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const BEGIN: &str = "<!-- scale:begin -->";
pub const END: &str = "<!-- scale:end -->";

/// Label on everything the bench creates.
const LABEL: &str = "pgpilot.io/bench";
/// Clusters per namespace.
const PER_NAMESPACE: usize = 100;
/// Objects created at once.
const PARALLEL: usize = 32;
/// Instances per cluster.
const INSTANCES: usize = 3;

pub struct Options {
    pub clusters: usize,
    pub manager: PathBuf,
    /// Seconds of the steady window after convergence.
    pub steady: u64,
    /// How long to wait for convergence before giving up.
    pub timeout: Duration,
    /// Extra manager flags (`--concurrency=16`, …).
    pub manager_args: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ScaleResults {
    pub runs: Vec<ScaleRun>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ScaleRun {
    pub clusters: usize,
    pub date: String,
    pub cores: usize,
    pub manager_args: Vec<String>,
    /// Client side: the bench creating every PostgresCluster (the floor the API server sets).
    pub create_seconds: f64,
    /// From the first create until every cluster has its StatefulSet and a status for its
    /// generation.
    pub converged_seconds: Option<f64>,
    /// Clusters converged when the bench stopped waiting.
    pub converged: usize,
    /// From the first create until every cluster's status also counts its three instances
    /// ready (kwok makes scheduled pods Ready): the state the steady window starts from.
    #[serde(default)]
    pub settled_seconds: Option<f64>,
    /// The manager's requests until convergence, by verb (watches counted when they start).
    pub requests: BTreeMap<String, u64>,
    pub writes: u64,
    pub reconciles: u64,
    pub reconcile_errors: BTreeMap<String, u64>,
    /// The API server's 429 answers during the run (all clients).
    pub throttled: u64,
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_steady_mib: f64,
    pub cpu_converge_seconds: f64,
    pub steady_seconds: u64,
    pub steady_writes: u64,
    /// The steady window's writes by controller/kind.
    #[serde(default)]
    pub steady_writes_by_kind: BTreeMap<String, u64>,
    pub steady_requests: u64,
    pub steady_cpu_seconds: f64,
    /// After a restart of the manager: until every cluster was reconciled once.
    pub restart_seconds: Option<f64>,
    pub restart_writes: u64,
    #[serde(default)]
    pub restart_writes_by_kind: BTreeMap<String, u64>,
    pub restart_requests: BTreeMap<String, u64>,
    pub restart_rss_mib: f64,
}

/// What the manager's /metrics said.
#[derive(Default, Clone, Debug)]
struct Scrape {
    requests: BTreeMap<String, u64>,
    writes: u64,
    writes_by_kind: BTreeMap<String, u64>,
    reconciles: u64,
    cluster_reconciles: u64,
    cluster_queue: u64,
    errors: BTreeMap<String, u64>,
    rss_bytes: f64,
    cpu_seconds: f64,
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let n = v as u64;
        let name = series.split('{').next().unwrap_or_default();
        match name {
            "pgpilot_api_requests_total" => {
                *s.requests
                    .entry(label(series, "verb").unwrap_or("?").to_owned())
                    .or_default() += n;
            }
            "pgpilot_api_writes_total" => {
                s.writes += n;
                let key = format!(
                    "{}/{}",
                    label(series, "controller").unwrap_or("?"),
                    label(series, "kind").unwrap_or("?")
                );
                *s.writes_by_kind.entry(key).or_default() += n;
            }
            "pgpilot_reconcile_total" => {
                s.reconciles += n;
                if label(series, "controller") == Some("cluster") {
                    s.cluster_reconciles += n;
                }
            }
            "pgpilot_reconcile_queue_depth" if label(series, "controller") == Some("cluster") => {
                s.cluster_queue = n;
            }
            "pgpilot_reconcile_errors_total" => {
                *s.errors
                    .entry(label(series, "reason").unwrap_or("?").to_owned())
                    .or_default() += n;
            }
            "process_resident_memory_bytes" => s.rss_bytes = v,
            "process_cpu_seconds_total" => s.cpu_seconds = v,
            _ => {}
        }
    }
    s
}

async fn scrape(m: &ManagerProcess) -> Result<Scrape> {
    let (status, body) = http_get(m.metrics_port(), "/metrics")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(parse(&body))
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The API server's 429 answers so far (every client).
fn throttled(cluster: &LocalCluster) -> Result<u64> {
    let text = cluster
        .kubectl(&["get", "--raw", "/metrics"], None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("code=\"429\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn namespace(i: usize) -> String {
    format!("scale-{}", i / PER_NAMESPACE)
}

fn cluster_name(i: usize) -> String {
    format!("pg-{i}")
}

/// Fake nodes roomy enough for every instance, a StorageClass nothing provisions, and a
/// volume bound in advance to each claim the StatefulSets will make, so every pod schedules.
async fn prepare(client: &Client, clusters: usize) -> Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let per_node = 5000;
    for n in 0..(clusters * INSTANCES).div_ceil(per_node) {
        let node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("kwok-scale-{n}"),
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": format!("kwok-scale-{n}"), LABEL: "scale"}},
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": per_node.to_string()},
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": per_node.to_string()},
            },
        }))?;
        create_ignoring_conflict(&nodes, &node).await?;
    }
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    let class = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "scale"},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
    }))?;
    create_ignoring_conflict(&classes, &class).await?;
    let spaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in 0..clusters.div_ceil(PER_NAMESPACE) {
        let space = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace(ns * PER_NAMESPACE), "labels": {LABEL: "scale"}},
        }))?;
        create_ignoring_conflict(&spaces, &space).await?;
    }
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter((0..clusters).flat_map(|i| (0..INSTANCES).map(move |o| (i, o))))
        .map(|(i, o)| {
            let volumes = volumes.clone();
            async move {
                let claim = format!("data-{}-{o}", cluster_name(i));
                let pv = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": format!("{}-{claim}", namespace(i)), "labels": {LABEL: "scale"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "scale",
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": "/nonexistent"},
                        "claimRef": {"namespace": namespace(i), "name": claim},
                    },
                }))?;
                create_ignoring_conflict(&volumes, &pv).await
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "prepared {} fake nodes, {} volumes in {:.0} s",
        (clusters * INSTANCES).div_ceil(per_node),
        clusters * INSTANCES,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_ignoring_conflict<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn postgres_cluster(i: usize) -> Result<PostgresCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": cluster_name(i), "namespace": namespace(i), "labels": {LABEL: "scale"}},
        "spec": {
            "instances": INSTANCES,
            "postgresql": {"version": 17},
            "storage": {"size": "1Gi", "storageClassName": "scale"},
            "scheduling": {
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }))?)
}

/// Clusters with their StatefulSet and a status for their generation, and of those the ones
/// whose status counts every instance ready.
fn converged(clusters: &Store<PostgresCluster>, sets: &Store<StatefulSet>) -> (usize, usize) {
    let with_set: std::collections::BTreeSet<(String, String)> = sets
        .state()
        .iter()
        .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
        .collect();
    let done: Vec<_> = clusters
        .state()
        .into_iter()
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.observed_generation == c.metadata.generation && s.phase.is_some()
            }) && with_set.contains(&(c.namespace().unwrap_or_default(), c.name_any()))
        })
        .collect();
    let settled = done
        .iter()
        .filter(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.ready_instances == INSTANCES as i32)
        })
        .count();
    (done.len(), settled)
}

fn spawn(cluster: &LocalCluster, opts: &Options) -> Result<ManagerProcess> {
    let mut args = vec!["--default-image=17=localhost/pgpilot/postgres:17".to_owned()];
    args.extend(opts.manager_args.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // PGPILOT_BENCH_MANAGER_LOG: the manager's RUST_LOG, to look into a run.
    let env: Vec<(String, String)> = std::env::var("PGPILOT_BENCH_MANAGER_LOG")
        .map(|filter| vec![("RUST_LOG".to_owned(), filter)])
        .unwrap_or_default();
    ManagerProcess::spawn_with(
        &opts.manager,
        &cluster.manager_kubeconfig,
        &args,
        "127.0.0.1",
        &env,
    )
    .map_err(|e| anyhow::anyhow!("starting the manager: {e}"))
}

async fn metrics_ready(m: &ManagerProcess) -> Result<Scrape> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if m.metrics_port() != 0
            && let Ok(s) = scrape(m).await
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the manager serves no metrics; log:\n{}", m.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(cluster: &LocalCluster, opts: &Options) -> Result<ScaleRun> {
    let client = cluster.admin().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = opts.clusters;
    prepare(&client, n).await?;

    // The bench's own view, from watches (a list every second would load the API server).
    let (clusters, writer) = reflector::store::<PostgresCluster>();
    let selector = watcher::Config::default().labels(&format!("{LABEL}=scale"));
    let watch_clusters = watcher(Api::<PostgresCluster>::all(client.clone()), selector)
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    let (sets, writer) = reflector::store::<StatefulSet>();
    let watch_sets = watcher(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=pgpilot"),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(watch_clusters);
    tokio::spawn(watch_sets);

    let mut manager = spawn(cluster, opts)?;
    let idle = metrics_ready(&manager).await?;
    let rss_idle_mib = idle.rss_bytes / 1048576.0;
    let throttled_before = throttled(cluster)?;

    println!("creating {n} PostgresClusters, {PARALLEL} at a time");
    let started = Instant::now();
    let api_for = |i: usize| Api::<PostgresCluster>::namespaced(client.clone(), &namespace(i));
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api_for(i);
            async move { create_ignoring_conflict(&api, &postgres_cluster(i)?).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    let create_seconds = started.elapsed().as_secs_f64();
    println!("created in {create_seconds:.1} s");

    let mut converged_seconds = None;
    let mut settled_seconds = None;
    let mut done = 0;
    let mut at_converged = None;
    let mut last_print = Instant::now();
    while started.elapsed() < opts.timeout {
        let settled;
        (done, settled) = converged(&clusters, &sets);
        if done == n && converged_seconds.is_none() {
            converged_seconds = Some(started.elapsed().as_secs_f64());
            at_converged = Some(scrape(&manager).await?);
        }
        if settled == n {
            settled_seconds = Some(started.elapsed().as_secs_f64());
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            let s = scrape(&manager).await.unwrap_or_default();
            println!(
                "{:>6.0} s: {done}/{n} converged, {settled} settled, queue {}, RSS {:.0} MiB",
                started.elapsed().as_secs_f64(),
                s.cluster_queue,
                s.rss_bytes / 1048576.0
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let at_settled = scrape(&manager).await?;
    let at_converged = at_converged.unwrap_or_else(|| at_settled.clone());
    println!("converged: {done}/{n} in {converged_seconds:?} s, settled in {settled_seconds:?} s");

    // Steady, from settled: nothing changes; the manager must write nothing.
    tokio::time::sleep(Duration::from_secs(opts.steady)).await;
    let steady = scrape(&manager).await?;
    let steady_requests = delta(&steady.requests, &at_settled.requests)
        .iter()
        .filter(|(verb, _)| !verb.starts_with("watch"))
        .map(|(_, v)| v)
        .sum();
    let rss_peak_mib = peak_rss_mib(manager.pid());
    let throttled_run = throttled(cluster)?.saturating_sub(throttled_before);

    // Restart with everything converged: each cluster is reconciled once, and none may cost
    // a write.
    manager.signal("TERM").map_err(|e| anyhow::anyhow!("{e}"))?;
    manager
        .wait_exit(Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let restarted = Instant::now();
    let again = spawn(cluster, opts)?;
    metrics_ready(&again).await?;
    let mut restart_seconds = None;
    let mut after_restart = Scrape::default();
    while restarted.elapsed() < opts.timeout {
        after_restart = scrape(&again).await.unwrap_or_default();
        if after_restart.cluster_reconciles >= n as u64 && after_restart.cluster_queue == 0 {
            restart_seconds = Some(restarted.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let restart_rss_mib = after_restart.rss_bytes / 1048576.0;
    drop(again);

    Ok(ScaleRun {
        clusters: n,
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        manager_args: opts.manager_args.clone(),
        create_seconds,
        converged_seconds,
        converged: done,
        settled_seconds,
        requests: at_converged.requests.clone(),
        writes: at_converged.writes,
        reconciles: at_converged.reconciles,
        reconcile_errors: at_converged.errors.clone(),
        throttled: throttled_run,
        rss_idle_mib,
        rss_peak_mib,
        rss_steady_mib: steady.rss_bytes / 1048576.0,
        cpu_converge_seconds: at_converged.cpu_seconds - idle.cpu_seconds,
        steady_seconds: opts.steady,
        steady_writes: steady.writes - at_settled.writes,
        steady_writes_by_kind: delta(&steady.writes_by_kind, &at_settled.writes_by_kind),
        steady_requests,
        steady_cpu_seconds: steady.cpu_seconds - at_settled.cpu_seconds,
        restart_seconds,
        restart_writes: after_restart.writes,
        restart_writes_by_kind: after_restart.writes_by_kind.clone(),
        restart_requests: after_restart.requests,
        restart_rss_mib,
    })
}

/// The scale section of docs/benchmarks.md.
pub fn render(r: &ScaleResults) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{BEGIN}\n## Scale (`just bench-scale`)\n\n\
         One manager (all four controllers, release build) and many PostgresClusters of three\n\
         instances on the real control plane, the instances' pods on kwok's fake nodes (their\n\
         volumes bound in advance; nothing answers at their addresses, so every Patroni call\n\
         fails after its connect timeout: 250 ms, 1 s in runs before 2026-12-07 11:00 UTC). A\n\
         fresh control plane per size, its controller-manager and scheduler at 300 requests a\n\
         second (`PGPILOT_CONTROL_PLANE_QPS`; at their defaults of 20 and 50 they, not the\n\
         operator, set how fast pods got their claims and nodes)\n\
         ([`e2e/scripts/bench-scale.sh`](../e2e/scripts/bench-scale.sh),\n\
         [`crates/pgpilot-bench/src/scale.rs`](../crates/pgpilot-bench/src/scale.rs)). The baseline\n\
         is the API server accepting the bench's own creates of the PostgresClusters ({PARALLEL} at\n\
         a time): the manager cannot converge a cluster before it exists.\n\n\
         *Converged*: every cluster has its StatefulSet and a status for its generation;\n\
         *settled*: every cluster's status also counts its three instances ready; the steady\n\
         window starts there. Requests and writes per cluster count until converged.\n\n\
         Targets on 2 cores: 1,000 converged < 60 s, 10,000 < 10 min, steady state and restart\n\
         0 writes, RSS at 10,000 ≤ 300 MiB. A row with other manager flags (e.g. the client's\n\
         request rate, `--kube-api-qps`, 200 by default) shows their effect beside the defaults'.\n"
    );
    let secs = |s: Option<f64>| s.map_or("not reached".to_owned(), |s| format!("{s:.0} s"));
    let _ = writeln!(
        o,
        "| clusters | created (baseline) | converged | settled | requests / cluster | writes / cluster | 429s | RSS idle → peak → steady | MiB / 1,000 clusters | CPU to converge | steady {{s}}: writes, requests, CPU | restart: all reconciled, writes | manager flags | date |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for run in &r.runs {
        let non_watch: u64 = run
            .requests
            .iter()
            .filter(|(v, _)| !v.starts_with("watch"))
            .map(|(_, v)| v)
            .sum();
        let per = |x: u64| x as f64 / run.clusters.max(1) as f64;
        let _ = writeln!(
            o,
            "| {} | {:.0} s | {} ({}/{}) | {} | {:.1} | {:.1} | {} | {:.0} → {:.0} → {:.0} MiB | {:.0} | {:.0} s | {} s{}: {}, {}, {:.1} s | {}, {} | {} | {} |",
            run.clusters,
            run.create_seconds,
            secs(run.converged_seconds),
            run.converged,
            run.clusters,
            run.settled_seconds
                .map_or("—".to_owned(), |s| format!("{s:.0} s")),
            per(non_watch),
            per(run.writes),
            run.throttled,
            run.rss_idle_mib,
            run.rss_peak_mib,
            run.rss_steady_mib,
            (run.rss_steady_mib - run.rss_idle_mib) * 1000.0 / run.clusters.max(1) as f64,
            run.cpu_converge_seconds,
            run.steady_seconds,
            // Runs before `settled` was measured began the window at `converged`.
            if run.settled_seconds.is_none() {
                " from converged†"
            } else {
                ""
            },
            run.steady_writes,
            run.steady_requests,
            run.steady_cpu_seconds,
            secs(run.restart_seconds),
            run.restart_writes,
            if run.manager_args.is_empty() {
                "defaults".to_owned()
            } else {
                format!("`{}`", run.manager_args.join(" "))
            },
            run.date,
        );
    }
    if r.runs.iter().any(|run| run.settled_seconds.is_none()) {
        let _ = writeln!(
            o,
            "\n† Measured before the bench waited for *settled*: the window began at *converged*, \
             while instances were still becoming ready, so its writes are those clusters' status \
             catching up, not writes of converged clusters."
        );
    }
    for run in &r.runs {
        let _ = writeln!(
            o,
            "\n{} clusters{} — requests by verb until converged: {}; after the restart: {}; reconcile errors by reason: {}; writes in the steady window by controller/kind: {}; after the restart: {}.",
            run.clusters,
            if run.manager_args.is_empty() {
                String::new()
            } else {
                format!(" (`{}`)", run.manager_args.join(" "))
            },
            fmt_map(&run.requests),
            fmt_map(&run.restart_requests),
            fmt_map(&run.reconcile_errors),
            by_kind(&run.steady_writes_by_kind, run.steady_writes),
            by_kind(&run.restart_writes_by_kind, run.restart_writes),
        );
    }
    let _ = writeln!(o, "\n{END}");
    o
}

/// Writes by kind; runs from before the bench recorded the kinds have only the total.
fn by_kind(m: &BTreeMap<String, u64>, total: u64) -> String {
    if m.is_empty() && total > 0 {
        return format!("{total} (kinds not recorded)");
    }
    fmt_map(m)
}

fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn splice(page: &str, section: &str) -> String {
    crate::report::splice(page, section, BEGIN, END)
}

/// Runs keep the latest measurement per size and manager flags (a flag's effect is a row
/// beside the defaults'); the section lists them by size.
pub fn merge(mut results: ScaleResults, run: ScaleRun) -> ScaleResults {
    results
        .runs
        .retain(|r| (r.clusters, &r.manager_args) != (run.clusters, &run.manager_args));
    results.runs.push(run);
    results.runs.sort_by_key(|r| r.clusters);
    results
}

pub fn load(path: &Path) -> ScaleResults {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub fn save(path: &Path, r: &ScaleResults) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_label() {
        let text = "# HELP x\n\
            pgpilot_api_requests_total{controller=\"cluster\",verb=\"get\"} 3\n\
            pgpilot_api_requests_total{controller=\"backup\",verb=\"get\"} 2\n\
            pgpilot_api_writes_total{controller=\"cluster\",kind=\"Secret\"} 5\n\
            pgpilot_reconcile_total{controller=\"cluster\",result=\"success\"} 7\n\
            pgpilot_reconcile_total{controller=\"backup\",result=\"success\"} 1\n\
            pgpilot_reconcile_queue_depth{controller=\"cluster\"} 4\n\
            pgpilot_reconcile_errors_total{controller=\"cluster\",reason=\"api_throttled\"} 2\n\
            process_resident_memory_bytes 1.048576e8\n";
        let s = parse(text);
        assert_eq!(s.requests["get"], 5);
        assert_eq!((s.writes, s.reconciles, s.cluster_reconciles), (5, 8, 7));
        assert_eq!(s.cluster_queue, 4);
        assert_eq!(s.errors["api_throttled"], 2);
        assert_eq!(s.rss_bytes, 104857600.0);
    }

    #[test]
    fn a_size_keeps_its_latest_run_per_manager_flags() {
        let run = |clusters, writes| ScaleRun {
            clusters,
            writes,
            ..ScaleRun::default()
        };
        let r = merge(ScaleResults::default(), run(10000, 1));
        let r = merge(r, run(1000, 2));
        let r = merge(r, run(10000, 3));
        let sizes: Vec<_> = r.runs.iter().map(|r| (r.clusters, r.writes)).collect();
        assert_eq!(sizes, [(1000, 2), (10000, 3)]);
        assert!(render(&r).contains("| 1000 |"));
        // Other manager flags: a row of their own beside the defaults'.
        let flagged = ScaleRun {
            manager_args: vec!["--kube-api-qps=50".into()],
            ..run(1000, 4)
        };
        let r = merge(r, flagged);
        assert_eq!(r.runs.len(), 3);
        assert!(render(&r).contains("`--kube-api-qps=50`"));
    }
}
