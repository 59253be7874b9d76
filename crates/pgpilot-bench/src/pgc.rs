//! Measurements of pgpilot's own clusters: time to Ready, and the write gap of failovers
//! and switchovers seen by a sequence writer through the `<name>-rw` Service.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pgpilot_api::cluster::ClusterPhase;
use pgpilot_api::{PostgresCluster, labels};
use pgpilot_postgres::patroni::{Access, Patroni, PatroniApi};
use pgpilot_testkit::writer::{WriteLog, Writer, WriterConfig};
use pgpilot_toolkit::Sensitive;
use serde_json::{Value, json};

use crate::kube_util::{kubectl, load1, poll, wait_gone};
use crate::milestones::{self, Milestones};
use crate::model::EventSample;

/// The spec every measured cluster gets: the example's (examples/cluster.yaml) without roles
/// and databases. The volumes keep the default retention (`whenDeleted: Retain`);
/// [`delete_cluster`] deletes the claims itself.
pub fn spec(instances: usize) -> Result<Value> {
    let example: Value = serde_yaml::from_str(include_str!("../../../examples/cluster.yaml"))
        .context("parsing examples/cluster.yaml")?;
    let mut spec = example
        .get("spec")
        .cloned()
        .context("examples/cluster.yaml has no spec")?;
    let fields = spec
        .as_object_mut()
        .context("examples/cluster.yaml: spec is not a map")?;
    fields.remove("roles");
    fields.remove("databases");
    fields.insert("instances".into(), json!(instances));
    Ok(spec)
}

fn cluster_object(name: &str, instances: usize) -> Result<PostgresCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": spec(instances)?,
    }))?)
}

/// Ready as the brief defines it: phase Ready, condition Ready=True for the current
/// generation, every instance ready.
pub fn is_ready(c: &PostgresCluster) -> bool {
    let Some(s) = &c.status else { return false };
    s.phase == Some(ClusterPhase::Ready)
        && s.observed_generation == c.metadata.generation
        && s.ready_instances == c.spec.instances
        && s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Waits for Ready with a watch (events arrive at once, unlike a poll).
pub async fn wait_ready(api: &Api<PostgresCluster>, name: &str, timeout: Duration) -> Result<()> {
    let cond = |c: Option<&PostgresCluster>| c.is_some_and(is_ready);
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(r) => {
            r.with_context(|| format!("watching PostgresCluster {name}"))?;
            Ok(())
        }
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            let status = now
                .and_then(|c| c.status)
                .map(|s| serde_json::to_string(&s).unwrap_or_default())
                .unwrap_or_default();
            bail!("PostgresCluster {name} not Ready after {timeout:?}; status: {status}")
        }
    }
}

/// Creates a cluster, times apply → Ready, and (unless `keep`) deletes it and waits until
/// its pods and volumes are gone.
pub async fn time_to_ready(
    client: &Client,
    ns: &str,
    name: &str,
    instances: usize,
) -> Result<(Duration, BTreeMap<String, f64>)> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    delete_cluster(client, ns, name).await?;
    let obj = cluster_object(name, instances)?;
    let t0 = Instant::now();
    let steps = Milestones::start(
        client,
        ns,
        &format!("{}={name}", labels::CLUSTER),
        instances,
        Some(format!("{name}-sync")),
        t0,
    );
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating PostgresCluster {name}"))?;
    let ready = wait_ready(&api, name, Duration::from_secs(300)).await;
    let elapsed = t0.elapsed();
    // The pods' own Ready may be seen by the poller a little after the cluster's.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut steps = steps.stop();
    steps.insert("cluster Ready".to_owned(), elapsed.as_secs_f64());
    let deleted = delete_cluster(client, ns, name).await;
    ready?;
    deleted?;
    Ok((elapsed, steps))
}

/// Creates the cluster unless it exists, and waits for Ready.
pub async fn ensure_cluster(client: &Client, ns: &str, name: &str, instances: usize) -> Result<()> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    if api.get_opt(name).await?.is_none() {
        delete_cluster(client, ns, name).await?;
        api.create(&PostParams::default(), &cluster_object(name, instances)?)
            .await
            .with_context(|| format!("creating PostgresCluster {name}"))?;
    }
    wait_ready(&api, name, Duration::from_secs(300)).await
}

/// Deletes the cluster (if any) and waits until it, its pods and its volumes are gone.
pub async fn delete_cluster(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
        poll(
            &format!("PostgresCluster {name} to be deleted"),
            Duration::from_secs(180),
            Duration::from_millis(250),
            || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
        )
        .await?;
    }
    let selector = format!("{}={name}", labels::CLUSTER);
    wait_gone::<Pod>(client, ns, &selector, Duration::from_secs(180)).await?;
    // Patroni's DCS ConfigMaps (`<name>-leader`, `-config`, `-sync`, `-failover`) are owned by
    // the cluster, but garbage collection is asynchronous: a new cluster of the same name that
    // found `initialize` still set would never bootstrap.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    for suffix in ["leader", "config", "sync", "failover"] {
        let _ = configmaps
            .delete(&format!("{name}-{suffix}"), &DeleteParams::default())
            .await;
    }
    // The claims, and the credential Secrets with them, are retained with the cluster (the
    // default): delete them, so a later cluster of this name starts from nothing.
    let _ = Api::<Secret>::namespaced(client.clone(), ns)
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await;
    crate::kube_util::delete_claims(client, ns, &selector, name).await
}

/// Step names of the writer's side of a disruption.
pub const LAST_OLD_ACK: &str = "last write acknowledged by the old primary";
pub const FIRST_NEW_ACK: &str = "first write acknowledged after the gap";

/// How the primary is disrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Disruption {
    /// `kubectl delete pod <primary>`: SIGTERM, Patroni stops PostgreSQL and releases the
    /// leader lock, the pod is recreated by the StatefulSet.
    DeletePod,
    /// SIGKILL to every process of the primary's container from the node
    /// (`ctr tasks kill --all --signal SIGKILL`), as an OOM kill or a crash would: no
    /// Patroni left to release the lock; the kubelet restarts the container.
    KillContainer,
    /// `kubectl exec <primary> -- kill -9 <postmaster pid>`: PostgreSQL dies, Patroni lives.
    KillPostmaster,
    /// Patroni REST `POST /switchover` on the leader's port 8008.
    Switchover,
}

impl Disruption {
    pub fn label(self) -> &'static str {
        match self {
            Self::DeletePod => "delete the primary pod",
            Self::KillContainer => "SIGKILL the primary's container (all its processes)",
            Self::KillPostmaster => "SIGKILL the primary's postmaster",
            Self::Switchover => "switchover (Patroni REST POST /switchover)",
        }
    }
}

pub struct Target {
    pub host: String,
    pub password: String,
}

pub async fn rw_target(client: &Client, ns: &str, name: &str) -> Result<Target> {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{name}-rw"))
        .await
        .with_context(|| format!("Service {name}-rw"))?;
    let host = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the -rw Service has no ClusterIP")?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{name}-superuser"))
        .await
        .with_context(|| format!("Secret {name}-superuser"))?;
    let data = secret.data.unwrap_or_default();
    let password = data
        .get("password")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .context("the superuser Secret has no password")?;
    Ok(Target { host, password })
}

/// Pod names by IP, and the primary (labelled by Patroni).
async fn pods_by_ip(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(BTreeMap<String, String>, Option<Pod>)> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}={name}", labels::CLUSTER)))
        .await?;
    let mut by_ip = BTreeMap::new();
    let mut primary = None;
    for p in pods.items {
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            by_ip.insert(ip, pod_name);
        }
        let is_primary = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::ROLE))
            .is_some_and(|r| r == labels::ROLE_PRIMARY);
        if is_primary && p.metadata.deletion_timestamp.is_none() {
            primary = Some(p);
        }
    }
    Ok((by_ip, primary))
}

/// pgpilot's client of the cluster's REST APIs, as the operator has it: HTTPS checked
/// against the cluster's CA, the API's password.
async fn patroni_api(client: &Client, ns: &str, name: &str, leader: &Pod) -> Result<PatroniApi> {
    let ca = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&format!("{name}-ca-cert"))
        .await?
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .context("no ca.crt in the CA ConfigMap")?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{name}-patroni-api"))
        .await?;
    let password = secret
        .data
        .and_then(|d| d.get("password").cloned())
        .context("no password in the API Secret")?;
    let access = Access {
        ca: Some(ca),
        domain: format!("{name}-pods.{ns}.svc"),
        password: Some(Sensitive::new(String::from_utf8(password.0)?)),
        https: [leader.metadata.name.clone().unwrap_or_default()].into(),
    };
    Ok(Patroni::new()?.api(access)?)
}

async fn disrupt(
    mode: Disruption,
    ns: &str,
    primary: &Pod,
    candidate: Option<&str>,
    containerd: &str,
    patroni: Option<&PatroniApi>,
) -> Result<()> {
    let name = primary.metadata.name.clone().unwrap_or_default();
    match mode {
        Disruption::DeletePod => {
            kubectl(&["-n", ns, "delete", "pod", &name, "--wait=false"]).await?;
        }
        Disruption::KillPostmaster => {
            kubectl(&[
                "-n",
                ns,
                "exec",
                &name,
                "-c",
                "postgres",
                "--",
                "sh",
                "-c",
                "kill -9 $(head -1 /var/lib/postgresql/data/pgdata/postmaster.pid)",
            ])
            .await?;
        }
        Disruption::KillContainer => {
            let id = primary
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == "postgres"))
                .and_then(|c| c.container_id.clone())
                .context("the primary has no container id")?;
            let id = id.trim_start_matches("containerd://");
            crate::kube_util::ctr(
                containerd,
                &["tasks", "kill", "--all", "--signal", "SIGKILL", id],
            )
            .await?;
        }
        Disruption::Switchover => {
            let ip = primary
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .context("the primary has no IP")?;
            let patroni = patroni.context("no Patroni client")?;
            patroni.switchover(&name, &ip, candidate).await?;
        }
    }
    Ok(())
}

/// Reads back every id of `table` through the -rw Service.
async fn read_back(target: &Target, table: &str) -> Result<HashSet<i64>> {
    let (c, conn) = tokio_postgres::Config::new()
        .host(&target.host)
        .port(5432)
        .user("postgres")
        .password(&target.password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    let rows = c.query(&format!("select id from {table}"), &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
}

/// Patroni's lines about leadership since the event, from every pod of the cluster.
async fn patroni_log(client: &Client, ns: &str, name: &str, since_secs: u64) -> Vec<String> {
    let Ok((by_ip, _)) = pods_by_ip(client, ns, name).await else {
        return vec![];
    };
    let mut lines = vec![];
    for pod in by_ip.values() {
        let since = format!("--since={since_secs}s");
        let Ok(log) = kubectl(&["-n", ns, "logs", pod, "-c", "postgres", &since]).await else {
            continue;
        };
        for l in log.lines().filter(|l| is_leadership_line(l)) {
            lines.push(format!("{pod}: {}", l.trim()));
        }
    }
    lines.sort_by(|a, b| timestamp(a).cmp(timestamp(b)));
    lines.dedup();
    lines.truncate(10);
    lines
}

/// A line of Patroni's own log (`2026-11-22 02:29:34,490 INFO: ...`, not PostgreSQL's)
/// about leadership: promotion, demotion, the lock, crash recovery, failover, switchover.
fn is_leadership_line(line: &str) -> bool {
    let patroni = line.len() > 25
        && line.as_bytes().get(19) == Some(&b',')
        && ["INFO:", "WARNING:", "ERROR:", "CRITICAL:"]
            .iter()
            .any(|lvl| line.get(24..).is_some_and(|r| r.starts_with(lvl)));
    let lower = line.to_lowercase();
    patroni
        && [
            "promot",
            "leader",
            "lock",
            "demot",
            "crash",
            "starting",
            "failover",
            "switchover",
            "following",
            "shut",
            "restart",
            "recover",
        ]
        .iter()
        .any(|k| lower.contains(k))
        && !lower.contains("no action")
        && !lower.contains("lock owner:")
}

fn timestamp(line: &str) -> &str {
    // "<pod>: 2026-01-01 10:00:00,123 INFO: ..." → the timestamp part.
    line.split_once(": ")
        .map(|(_, r)| r.get(..23).unwrap_or(r))
        .unwrap_or(line)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or_default()
}

/// Makes sure the primary's container never restarted: a container killed again soon is
/// restarted only after the kubelet's back-off (10 s, 20 s, …), which would be measured
/// instead of Patroni. A primary whose container restarted is deleted (a clean failover;
/// the StatefulSet recreates the pod with fresh counters) until one that never did leads.
async fn fresh_primary_container(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    for _ in 0..3 {
        let (_, primary) = pods_by_ip(client, ns, name).await?;
        let primary = primary.context("no pod is labelled primary")?;
        if restarts(&primary) == 0 {
            return Ok(());
        }
        let pod = primary.metadata.name.clone().unwrap_or_default();
        eprintln!("  {pod}'s container restarted before: deleting the pod for a fresh one");
        kubectl(&["-n", ns, "delete", "pod", &pod]).await?;
        wait_ready(&api, name, Duration::from_secs(300)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    bail!("no primary with a fresh container after three pod deletions")
}

/// One disruption of the Ready cluster `name` under a running writer.
pub async fn disruption_once(
    client: &Client,
    ns: &str,
    name: &str,
    mode: Disruption,
    sample: usize,
    containerd: &str,
) -> Result<EventSample> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    wait_ready(&api, name, Duration::from_secs(300)).await?;
    // Let replication settle (sync standby chosen) before disrupting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if mode == Disruption::KillContainer {
        fresh_primary_container(client, ns, name).await?;
    }
    let mut candidate = None;
    if mode == Disruption::Switchover {
        // In synchronous mode Patroni switches over only to a quorum voter or the named
        // synchronous standby (412 "can not find sync_standby" otherwise), which it records
        // a loop or two after a replica rejoins: wait for one, and name it, as pgpilot does
        // (a race among equal replicas can give two of them the leader lock: patroni#3718).
        candidate = Some(
            poll(
                "a synchronous standby",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || async {
                    let c = api.get(name).await?;
                    let sync = c.status.and_then(|s| {
                        s.instances.into_iter().find_map(|i| {
                            i.role
                                .as_deref()
                                .is_some_and(pgpilot_api::cluster::is_synchronous_standby)
                                .then_some(i.name)
                        })
                    });
                    Ok(sync)
                },
            )
            .await?,
        );
    }
    let target = rw_target(client, ns, name).await?;
    let (by_ip, primary) = pods_by_ip(client, ns, name).await?;
    let primary = primary.context("no pod is labelled primary")?;
    let primary_ip = primary
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let table = format!(
        "bench_{}_{sample}_{}",
        format!("{mode:?}").to_lowercase(),
        std::process::id()
    );
    let mut config =
        WriterConfig::new(&target.host, 5432, "postgres", &target.password, "postgres");
    config.table = table.clone();
    let mut outside = config.clone();
    outside.table = format!("{table}_outside");
    outside.interval = Duration::from_millis(50);
    let writer = Writer::start(config);
    let outside = Writer::start(outside);
    let warm = writer
        .wait_until(Duration::from_secs(30), |acks| {
            acks.len() >= 100 && acks.last().is_some_and(|a| a.server == primary_ip)
        })
        .await;
    if !warm {
        let log = writer.stop().await;
        bail!(
            "the writer did not get 100 writes acknowledged by the primary {primary_ip} through {}:5432 in 30 s; last failures: {:?}",
            target.host,
            log.failures
                .iter()
                .rev()
                .take(3)
                .map(|f| &f.message)
                .collect::<Vec<_>>()
        );
    }
    // Ready before the clock starts: the switchover is one HTTPS request.
    let patroni = match mode {
        Disruption::Switchover => Some(patroni_api(client, ns, name, &primary).await?),
        _ => None,
    };
    let load = load1();
    let event = Instant::now();
    let watch = milestones::start_event(client, ns, name, &primary_ip, event);
    disrupt(
        mode,
        ns,
        &primary,
        candidate.as_deref(),
        containerd,
        patroni.as_ref(),
    )
    .await?;
    // Writes resume: on another server, or (kills) on the same one after a pause.
    let resumed = writer
        .wait_until(Duration::from_secs(120), |acks| {
            let after: Vec<_> = acks.iter().filter(|a| a.at > event).collect();
            let moved = after.iter().any(|a| a.server != primary_ip);
            let paused_and_back = acks.windows(2).any(|w| {
                w[1].at > event && w[1].at.duration_since(w[0].at) > Duration::from_millis(500)
            });
            (moved || paused_and_back)
                && after
                    .last()
                    .is_some_and(|a| a.at.elapsed() < Duration::from_millis(200))
                && after.len() > 50
        })
        .await;
    // Back to Ready: every instance, including the old primary, serving again.
    let back = wait_ready(&api, name, Duration::from_secs(300)).await;
    let back_to_ready = back.is_ok().then(|| event.elapsed().as_secs_f64());
    let mut steps = watch.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log: WriteLog = writer.stop().await;
    let outside_gap = outside
        .stop()
        .await
        .longest_gap(event)
        .map(|g| g.duration().as_secs_f64());
    if !resumed {
        bail!(
            "writes did not resume within 120 s of: {}; last failures: {:?}",
            mode.label(),
            log.failures
                .iter()
                .rev()
                .take(3)
                .map(|f| &f.message)
                .collect::<Vec<_>>()
        );
    }
    back?;
    let (by_ip_after, _) = pods_by_ip(client, ns, name).await?;
    let pod_of = |ip: &str| {
        by_ip
            .get(ip)
            .or_else(|| by_ip_after.get(ip))
            .cloned()
            .unwrap_or_else(|| ip.to_owned())
    };
    let failover = log.failover();
    let (gap, changed, new_server) = match &failover {
        Some(g) => (g.duration(), true, g.first_after.server.clone()),
        None => {
            let g = log
                .longest_gap(event)
                .context("no writes around the event")?;
            (g.duration(), false, g.first_after.server.clone())
        }
    };
    let rel = |at: Instant| {
        if at >= event {
            at.duration_since(event).as_secs_f64()
        } else {
            -event.duration_since(at).as_secs_f64()
        }
    };
    if let Some(g) = failover.as_ref().or(log.longest_gap(event).as_ref()) {
        steps.insert(LAST_OLD_ACK.to_owned(), rel(g.last_before.at));
        steps.insert(FIRST_NEW_ACK.to_owned(), rel(g.first_after.at));
    }
    let present = read_back(&target, &table)
        .await
        .context("reading the writes back")?;
    let missing = log.missing(&present);
    if !missing.is_empty() {
        eprintln!(
            "  {} acknowledged writes missing, e.g. ids {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    let since = event.elapsed().as_secs() + 5;
    Ok(EventSample {
        gap_seconds: gap.as_secs_f64(),
        outside_gap_seconds: outside_gap,
        primary_changed: changed,
        old_primary: pod_of(&primary_ip),
        new_primary: pod_of(&new_server),
        acked: log.acks.len(),
        missing: missing.len(),
        failed_attempts: log.failures.iter().filter(|f| f.at > event).count(),
        back_to_ready_seconds: back_to_ready,
        load1: load,
        steps,
        patroni_log: patroni_log(client, ns, name, since).await,
        writer_failures: crate::model::failure_runs(
            log.failures
                .iter()
                .filter(|f| f.at > event)
                .map(|f| (rel(f.at), f.message.clone())),
        ),
    })
}

/// Patroni's version in the cluster's pods.
pub async fn patroni_version(ns: &str, pod: &str) -> String {
    kubectl(&[
        "-n",
        ns,
        "exec",
        pod,
        "-c",
        "postgres",
        "--",
        "patroni",
        "--version",
    ])
    .await
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The PostgreSQL version the cluster's status reports.
pub async fn image_postgres(client: &Client, ns: &str, name: &str) -> String {
    Api::<PostgresCluster>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()
        .and_then(|c| c.status)
        .and_then(|s| s.instances.into_iter().find_map(|i| i.postgres_version))
        .map(|v| format!("PostgreSQL {v}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_lines_are_patronis_own_about_the_lock_or_roles() {
        assert!(is_leadership_line(
            "2026-11-22 02:28:56,695 INFO: promoted self to leader by acquiring session lock"
        ));
        assert!(is_leadership_line(
            "2026-11-22 02:29:34,490 INFO: doing crash recovery in a single user mode"
        ));
        assert!(!is_leadership_line(
            "2026-11-22 02:29:35.670 UTC [44] LOG:  starting PostgreSQL 17.12"
        ));
        assert!(!is_leadership_line(
            "2026-11-22 02:29:36,003 INFO: no action. I am (bench-ha-2), the leader with the lock"
        ));
        assert!(!is_leadership_line(
            "2026-11-22 02:29:36,003 INFO: Lock owner: bench-ha-2; I am bench-ha-0"
        ));
    }
}
