//! Chaos (issue #20): faults injected while a sequence writer runs, and nothing acknowledged
//! may be lost. Every test adds rows to the chaos report ([`record`]): the fault, where it
//! hit, how long until writes were accepted again, and how many acknowledged writes are
//! missing afterwards. `just chaos` runs them all (the node-wide faults included) and writes
//! docs/reliability.md; CI runs the quick faults that stay inside a test's own namespace
//! (the `#[ignore]`d ones are node-wide or slow).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::{PostgresBackup, PostgresCluster, SecretRotation, labels};
use pgpilot_testkit::writer::{WriteLog, Writer};
use pgpilot_toolkit::exec::exec;
use rand::RngExt;
use serde::Serialize;

use crate::cluster::{another_primary, labelled_primary};
use crate::harness::{ClusterYaml, Env, eventually, last_failures, lost_writes};
use crate::minio::Minio;

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// A fault's effects settling: a new primary, the old one back as a replica, Ready again.
const SETTLE: Duration = Duration::from_secs(240);
/// Patroni's ttl in [`ClusterYaml`]: the longest a primary that lost the DCS keeps its role.
const TTL: Duration = Duration::from_secs(20);

/// One line of the chaos report.
#[derive(Debug, Serialize)]
struct Row {
    fault: String,
    injected: String,
    /// Seconds from the fault until the cluster accepted writes again (through `-rw`), or
    /// until it was converged again where writes never stopped.
    recovered_secs: f64,
    acknowledged: usize,
    lost: usize,
    note: String,
}

/// Appends `row` to the report (`PGPILOT_CHAOS_REPORT`, else `chaos.jsonl` in cargo's
/// scratch directory) and prints it.
fn record(row: &Row) -> Result<()> {
    let path = std::env::var_os("PGPILOT_CHAOS_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos.jsonl"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = serde_json::to_string(row)?;
    eprintln!("chaos: {line}");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// A writer through `<cluster>-rw` that tolerates a loaded node and a failover.
async fn writer(env: &Env, cluster: &str) -> Result<Writer> {
    let mut config = env.rw_writer(cluster).await?;
    config.statement_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(2);
    config.interval = Duration::from_millis(20);
    let writer = Writer::start(config);
    if !writer
        .wait_until(Duration::from_secs(60), |acks| acks.len() >= 20)
        .await
    {
        let log = writer.stop().await;
        bail!(
            "only {} inserts acknowledged through {cluster}-rw; last failures: {:?}",
            log.acks.len(),
            last_failures(&log)
        );
    }
    Ok(writer)
}

/// Stops `writer` and reads every acknowledged id back through `<cluster>-rw`.
async fn stop_and_count_lost(
    env: &Env,
    cluster: &str,
    writer: Writer,
) -> Result<(WriteLog, usize)> {
    let log = writer.stop().await;
    let su = env.superuser(cluster).await?;
    let client = env.connect(&format!("{cluster}-rw"), &su, SETTLE).await?;
    let lost = lost_writes(&client, &log).await?;
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged ids are missing: {:?}",
        lost.len(),
        log.acks.len(),
        &lost[..lost.len().min(20)]
    );
    Ok((log, lost.len()))
}

/// A Ready cluster `db` of three instances with required quorum replication, and its
/// primary's name.
async fn quorum_cluster(env: &Env) -> Result<(PostgresCluster, String)> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(3)
            .sync_required("Quorum")
            .yaml(),
    )?;
    let pg = env.wait_ready("db", 3, CREATE).await?;
    let primary = pg
        .status
        .as_ref()
        .and_then(|s| s.current_primary.clone())
        .context("no currentPrimary")?;
    Ok((pg, primary))
}

// ---------------------------------------------------------------------------------------
// The primary cut off the network
// ---------------------------------------------------------------------------------------

/// Every packet from or to a pod IP dropped on the node, in an nftables table of its own
/// whose chains run before iptables' (kube-router keeps its NetworkPolicy jumps, which accept,
/// first in the filter chains); bridged traffic passes these hooks too. The pod keeps
/// running, and the API server still reaches its containers through the kubelet, but it talks
/// to nobody. Healed when dropped.
struct Partition {
    table: Option<String>,
}

impl Partition {
    fn isolate(ip: &str, tag: &str) -> Result<Self> {
        let table = format!("pgpilot_chaos_{}", tag.replace('-', "_"));
        let script = format!(
            "table ip {table} {{
  chain input {{ type filter hook input priority -10; ip saddr {ip} drop; }}
  chain output {{ type filter hook output priority -10; ip daddr {ip} drop; }}
  chain forward {{ type filter hook forward priority -10; ip saddr {ip} drop; ip daddr {ip} drop; }}
}}
"
        );
        nft(&["-f", "-"], Some(&script))?;
        Ok(Partition { table: Some(table) })
    }

    fn heal(&mut self) -> Result<()> {
        match self.table.take() {
            Some(table) => nft(&["delete", "table", "ip", &table], None),
            None => Ok(()),
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::process::Stdio;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (the chaos tests run as root on the node)")?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Whether `pod`'s PostgreSQL runs as a primary, by its own account (asked through the
/// container runtime, which a network partition does not cut). A stopped server is no
/// primary; `Err` when the question did not get through.
async fn runs_as_primary(env: &Env, pod: &str) -> Result<bool, String> {
    let out = exec(
        &env.api::<Pod>(),
        pod,
        "postgres",
        &["psql", "-XAtc", "select pg_is_in_recovery()"],
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(out.success() && out.stdout.trim() == "f")
}

#[tokio::test]
async fn a_partitioned_primary_gives_up_within_the_ttl_and_no_acknowledged_write_is_lost() {
    let env = Env::start("chaos-partition").await;
    let result = partitioned_primary(&env).await;
    env.finish(result).await;
}

async fn partitioned_primary(env: &Env) -> Result<()> {
    let (_, old) = quorum_cluster(env).await?;
    let old_ip = env
        .api::<Pod>()
        .get(&old)
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .context("the primary has no pod IP")?;
    ensure!(
        runs_as_primary(env, &old).await.map_err(|e| anyhow!(e))?,
        "{old} does not run as a primary by its own account before the partition"
    );
    let writer = writer(env, "db").await?;

    let mut cut = Partition::isolate(&old_ip, &format!("pgpilot-chaos-{}", env.ns))?;
    let cut_at = Instant::now();
    // The old primary's own view, sampled until it gives up the role (Patroni demotes it
    // when it cannot renew the leader lock).
    let mut last_primary = cut_at;
    let fenced = loop {
        match runs_as_primary(env, &old).await {
            Ok(true) => last_primary = Instant::now(),
            Ok(false) => break Instant::now(),
            Err(_) => {} // the exec did not get through: ask again
        }
        if cut_at.elapsed() > SETTLE {
            let log = writer.stop().await;
            bail!(
                "{old}, cut off the network, still ran as a primary {SETTLE:?} later; writer: {} acks by {:?}",
                log.acks.len(),
                log.servers()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let new = match another_primary(env, "db", &old, SETTLE).await {
        Ok(p) => p,
        Err(e) => {
            let log = writer.stop().await;
            return Err(e.context(format!(
                "writer: {} acks by {:?}; last failures {:?}",
                log.acks.len(),
                log.servers(),
                last_failures(&log)
            )));
        }
    };
    let new_ip = new
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("the new primary has no pod IP")?;
    let resumed = writer
        .wait_until(SETTLE, |acks| {
            acks.last().is_some_and(|a| a.server == new_ip)
        })
        .await;
    ensure!(
        resumed,
        "no write acknowledged by the new primary {} ({new_ip})",
        new.name_any()
    );
    cut.heal()?;

    // The old primary comes back as a replica of the new one (pg_rewind where it wrote
    // WAL nobody acknowledged), and every acknowledged write is on the new primary.
    env.wait_ready("db", 3, SETTLE).await?;
    let (log, lost) = stop_and_count_lost(env, "db", writer).await?;
    let first_new = log
        .acks
        .iter()
        .find(|a| a.server == new_ip)
        .context("no ack by the new primary in the log")?;
    // Two primaries at once would show as the old one answering `primary` after the new one
    // acknowledged a write.
    ensure!(
        last_primary < first_new.at,
        "split brain: {old} still ran as a primary {:?} after {} acknowledged its first write",
        last_primary.duration_since(first_new.at),
        new.name_any()
    );
    let gave_up = fenced.duration_since(cut_at);
    ensure!(
        gave_up <= TTL,
        "{old} gave up the primary role {gave_up:?} after losing the network, later than Patroni's ttl {TTL:?}"
    );
    record(&Row {
        fault: "primary's network partitioned".into(),
        injected: format!("{old} of 3, synchronous Quorum, under writes"),
        recovered_secs: first_new.at.duration_since(cut_at).as_secs_f64(),
        acknowledged: log.acks.len(),
        lost,
        note: format!(
            "{old} stopped serving as primary after {:.1} s (ttl {} s); {} took over",
            gave_up.as_secs_f64(),
            TTL.as_secs(),
            new.name_any()
        ),
    })
}

// ---------------------------------------------------------------------------------------
// The manager killed at random points
// ---------------------------------------------------------------------------------------

/// What the manager is doing when it is killed.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// A new cluster, from `kubectl apply` on.
    Create,
    /// The writer's cluster scaled between 2 and 3 instances.
    Scale,
    /// The writer's cluster losing its primary pod.
    Failover,
    /// A new password for role `app` of the writer's cluster, in place (`rotate-now`).
    Rotate,
}

impl Action {
    /// In this order, so that CI's two kills interrupt a failover and a rotation.
    const ALL: [Action; 4] = [
        Action::Failover,
        Action::Rotate,
        Action::Create,
        Action::Scale,
    ];

    /// The window the kill falls in, from the start of the action.
    fn window(self) -> Duration {
        match self {
            Action::Create => Duration::from_secs(15),
            Action::Scale => Duration::from_secs(10),
            Action::Failover => Duration::from_secs(8),
            Action::Rotate => Duration::from_secs(8),
        }
    }
}

/// Kills per run: `PGPILOT_CHAOS_KILLS`, else two (CI's subset: a failover and a rotation).
fn kills() -> usize {
    std::env::var("PGPILOT_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[tokio::test]
async fn the_manager_killed_at_random_points_converges_every_cluster_with_nothing_twice() {
    let mut env = Env::start_controllers("chaos-kill", "cluster,secret-rotation").await;
    let result = killed_manager(&mut env).await;
    env.finish(result).await;
}

async fn killed_manager(env: &mut Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(3)
            .sync_required("Quorum")
            .spec("roles: [{name: app}]")
            .yaml(),
    )?;
    env.wait_ready("db", 3, CREATE).await?;
    rotate(env, "first").await?;
    wait_rotations(env, 1).await?;
    let reference = children(env, "db").await?;
    under_writes(
        env,
        "converged; children as an undisturbed cluster's",
        async |env| kill_at_random_points(env, &reference).await,
    )
    .await
}

/// One kill: what it interrupted, how far in, and when everything had converged again.
struct Kill {
    /// What it interrupted.
    what: String,
    after: Duration,
    started: Instant,
    converged: Instant,
}

/// Runs `kills` under a writer on `db`, then reads every acknowledged write back: one row per
/// kill, counting the writes acknowledged while it played out and those of them missing.
async fn under_writes(
    env: &mut Env,
    note: &str,
    kills: impl AsyncFnOnce(&mut Env) -> Result<Vec<Kill>>,
) -> Result<()> {
    let writer = writer(env, "db").await?;
    let result = kills(env).await;
    let log = writer.stop().await;
    let done = result.with_context(|| {
        format!(
            "writer: {} acks by {:?}; last failures {:?}",
            log.acks.len(),
            log.servers(),
            last_failures(&log)
        )
    })?;
    let su = env.superuser("db").await?;
    let client = env.connect("db-rw", &su, SETTLE).await?;
    let missing: HashSet<i64> = lost_writes(&client, &log).await?.into_iter().collect();
    for kill in &done {
        let acks: Vec<_> = log
            .acks
            .iter()
            .filter(|a| a.at >= kill.started && a.at <= kill.converged)
            .collect();
        record(&Row {
            fault: "manager SIGKILLed".into(),
            injected: format!("{:.1} s into {}", kill.after.as_secs_f64(), kill.what),
            recovered_secs: kill.converged.duration_since(kill.started).as_secs_f64(),
            acknowledged: acks.len(),
            lost: acks.iter().filter(|a| missing.contains(&a.id)).count(),
            note: note.to_owned(),
        })?;
    }
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged ids are missing",
        missing.len(),
        log.acks.len()
    );
    Ok(())
}

async fn kill_at_random_points(env: &mut Env, reference: &[String]) -> Result<Vec<Kill>> {
    let mut done = Vec::new();
    let mut instances = 3;
    let mut deleted = None;
    let mut rotations = 1;
    for n in 0..kills() {
        let action = Action::ALL[n % Action::ALL.len()];
        let after =
            Duration::from_millis(rand::rng().random_range(0..action.window().as_millis() as u64));
        let started = Instant::now();
        let fresh = format!("c{n}");
        match action {
            Action::Create => env.apply(
                &ClusterYaml::new(&fresh)
                    .instances(2)
                    .spec("roles: [{name: app}]")
                    .yaml(),
            )?,
            Action::Scale => {
                instances = if instances == 3 { 2 } else { 3 };
                env.patch_spec("db", serde_json::json!({ "instances": instances }))
                    .await?;
            }
            Action::Failover => {
                let primary = labelled_primary(env, "db").await.map_err(|e| anyhow!(e))?;
                env.api::<Pod>()
                    .delete(&primary.name_any(), &DeleteParams::default())
                    .await?;
                deleted = Some(primary.name_any());
            }
            Action::Rotate => {
                rotate(env, &format!("r{n}")).await?;
                rotations += 1;
            }
        }
        tokio::time::sleep(after.saturating_sub(started.elapsed())).await;
        let context = || format!("the manager killed {after:?} into {action:?}");
        env.restart_manager().await.with_context(context)?;
        // Until the new manager leads, the status is the dead one's: no proof of anything.
        env.wait_leading(SETTLE).await.with_context(context)?;
        if let Some(old) = deleted.take() {
            env.wait_cluster("db", "a new primary in status", SETTLE, |pg| {
                match pg
                    .status
                    .as_ref()
                    .and_then(|s| s.current_primary.as_deref())
                {
                    Some(p) if p != old => Ok(()),
                    p => Err(format!("currentPrimary {p:?}, the deleted pod was {old}")),
                }
            })
            .await
            .with_context(context)?;
        }

        if let Action::Create = action {
            env.wait_ready(&fresh, 2, CREATE)
                .await
                .with_context(context)?;
            let got = children(env, &fresh).await?;
            let want = renamed(reference, "db", &fresh);
            ensure!(
                got == want,
                "{}: {fresh}'s children differ from an undisturbed cluster's:\n got {got:?}\nwant {want:?}",
                context()
            );
            // Its credentials are the ones its database was initialised with.
            let su = env.superuser(&fresh).await?;
            env.connect(&format!("{fresh}-rw"), &su, SETTLE)
                .await
                .with_context(context)?;
        }
        if let Action::Rotate = action {
            // One rotation per request, and the Secret holds the password PostgreSQL has.
            wait_rotations(env, rotations).await.with_context(context)?;
            let app = env.credentials("db-app-credentials").await?;
            env.connect("db-rw", &app, SETTLE)
                .await
                .with_context(|| format!("{}: role app with its Secret's password", context()))?;
        }
        env.wait_ready("db", instances, SETTLE)
            .await
            .with_context(context)?;
        ensure!(
            children(env, "db").await? == reference,
            "{}: db's children changed",
            context()
        );
        done.push(Kill {
            what: format!("{action:?}"),
            after,
            started,
            converged: Instant::now(),
        });
        if let Action::Create = action {
            env.kubectl(&["delete", "postgrescluster", &fresh, "--wait=false"])?;
        }
    }
    Ok(done)
}

/// Asks SecretRotation `app` (role `app` of `db`, in place) for a rotation, naming the
/// request `request`; creates it the first time.
async fn rotate(env: &Env, request: &str) -> Result<()> {
    env.apply(&format!(
        "apiVersion: pgpilot.io/v1alpha1
kind: SecretRotation
metadata: {{name: app, annotations: {{{}: {request}}}}}
spec:
  target: {{postgresRole: {{cluster: db, role: app}}}}
  rotateEvery: {{interval: 720h}}
",
        labels::ROTATE_NOW
    ))
}

/// Waits until SecretRotation `app` has done exactly `n` rotations and rests.
async fn wait_rotations(env: &Env, n: i64) -> Result<()> {
    let api = env.api::<SecretRotation>();
    eventually(
        &format!("rotation {n} of app, then idle"),
        SETTLE,
        || async {
            let r = api.get("app").await.map_err(|e| e.to_string())?;
            let st = r.status.as_ref().ok_or("no status")?;
            let idle = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.reason == "Idle");
            if st.rotations > n {
                return Err(format!("{} rotations for {n} requests", st.rotations));
            }
            (st.rotations == n && idle)
                .then_some(())
                .ok_or(format!("rotations {}, idle {idle}", st.rotations))
        },
    )
    .await
}

/// `cluster`'s children by kind, as sorted names: what an undisturbed cluster has, and what
/// a kill must not duplicate.
async fn children(env: &Env, cluster: &str) -> Result<Vec<String>> {
    let lp = ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER));
    let mut all = names::<StatefulSet>(env, &lp, "statefulset").await?;
    all.extend(names::<Service>(env, &lp, "service").await?);
    all.extend(names::<Secret>(env, &lp, "secret").await?);
    all.sort();
    Ok(all)
}

/// `kind/name` of every `K` that `lp` selects.
async fn names<K>(env: &Env, lp: &ListParams, kind: &str) -> Result<Vec<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let list = env.api::<K>().list(lp).await?;
    Ok(list
        .iter()
        .map(|o| format!("{kind}/{}", o.name_any()))
        .collect())
}

fn renamed(children: &[String], from: &str, to: &str) -> Vec<String> {
    let mut out: Vec<String> = children
        .iter()
        .map(|c| {
            let (kind, name) = c.split_once('/').unwrap_or(("", c));
            format!("{kind}/{}", name.replacen(from, to, 1))
        })
        .collect();
    out.sort();
    out
}

/// Backups taken under kills per run: a quarter of [`kills`], at least one.
fn backup_kills() -> usize {
    (kills() / Action::ALL.len()).max(1)
}

#[tokio::test]
#[ignore = "MinIO, archiving and backups take minutes: `just chaos` runs it"]
async fn the_manager_killed_during_backups_takes_each_requested_backup_exactly_once() {
    let mut env = Env::start_controllers("chaos-kill-backup", "cluster,backup").await;
    let result = killed_during_backups(&mut env).await;
    env.finish(result).await;
}

async fn killed_during_backups(env: &mut Env) -> Result<()> {
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new("db")
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;
    let pg = env
        .wait_cluster("db", "ContinuousArchiving=True", SETTLE, |pg| {
            crate::harness::condition_is(pg, "ContinuousArchiving", "True")
        })
        .await?;
    let stanza = pg
        .status
        .and_then(|s| s.backup?.stanza)
        .context("no stanza in status.backup")?;
    under_writes(
        env,
        "completed; one Job, one new backup in the repository",
        async |env| backups_under_kills(env, &stanza).await,
    )
    .await
}

async fn backups_under_kills(env: &mut Env, stanza: &str) -> Result<Vec<Kill>> {
    let mut done = Vec::new();
    for k in 0..backup_kills() {
        let before = repository_backups(env, stanza).await?;
        let name = format!("b{k}");
        let after = Duration::from_millis(rand::rng().random_range(0..20_000));
        let started = Instant::now();
        env.apply(&format!(
            "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresBackup\nmetadata: {{name: {name}}}\nspec: {{cluster: {{name: db}}, type: Full}}\n"
        ))?;
        tokio::time::sleep(after).await;
        let context = || format!("the manager killed {after:?} into backup {name}");
        env.restart_manager().await.with_context(context)?;
        env.wait_leading(SETTLE).await.with_context(context)?;
        let api = env.api::<PostgresBackup>();
        let backup = eventually(&format!("{name} Completed"), SETTLE, || async {
            let b = api.get(&name).await.map_err(|e| e.to_string())?;
            match b.status.as_ref().and_then(|s| s.phase) {
                Some(BackupPhase::Completed) => Ok(b),
                other => Err(format!("phase {other:?}")),
            }
        })
        .await
        .with_context(context)?;
        let uid = backup.uid().context("no uid")?;
        let jobs: Vec<String> = env
            .api::<Job>()
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|j| j.owner_references().iter().any(|o| o.uid == uid))
            .map(|j| j.name_any())
            .collect();
        ensure!(
            jobs.len() == 1,
            "{}: {name} ran these Jobs: {jobs:?}",
            context()
        );
        let now = repository_backups(env, stanza).await?;
        let new: Vec<&String> = now.difference(&before).collect();
        ensure!(
            new.len() == 1,
            "{}: the repository gained {new:?} for one request",
            context()
        );
        done.push(Kill {
            what: format!("full backup {name}"),
            after,
            started,
            converged: Instant::now(),
        });
    }
    Ok(done)
}

/// The labels of the backups in the repository, as pgBackRest lists them from the primary.
async fn repository_backups(env: &Env, stanza: &str) -> Result<std::collections::BTreeSet<String>> {
    let primary = labelled_primary(env, "db").await.map_err(|e| anyhow!(e))?;
    let out = exec(
        &env.api::<Pod>(),
        &primary.name_any(),
        "postgres",
        &[
            "pgbackrest",
            &format!("--stanza={stanza}"),
            "--output=json",
            "info",
        ],
    )
    .await?;
    ensure!(out.success(), "pgbackrest info: {}", out.stderr);
    let info: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(info
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["backup"].as_array().into_iter().flatten())
        .filter_map(|b| b["label"].as_str().map(str::to_owned))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Node-wide faults: every test's cluster feels them, so `just chaos` runs them alone
// ---------------------------------------------------------------------------------------

/// How long the API server and etcd stay down: longer than Patroni's ttl here, so without
/// failsafe mode the primary would have given up its role.
const OUTAGE: Duration = Duration::from_secs(30);

/// `e2e/scripts/restart.sh` with `args`: components of the node cluster killed and started
/// again with the same command line.
async fn restart_components(args: &[&str]) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/scripts/restart.sh");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(script).args(&args).output())
        .await?
        .context("running e2e/scripts/restart.sh")?;
    ensure!(
        out.status.success(),
        "e2e/scripts/restart.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Restart counts of `cluster`'s containers, summed: a fault that only hits the node's agents
/// must not restart PostgreSQL.
async fn restarts(env: &Env, cluster: &str) -> Result<i32> {
    Ok(env
        .pods(cluster)
        .await?
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum())
}

#[tokio::test]
#[ignore = "stops the shared control plane: `just chaos` runs it alone"]
async fn an_api_server_and_etcd_outage_keeps_the_primary_writing_and_loses_nothing() {
    let mut env = Env::start("chaos-apiserver").await;
    let result = control_plane_outage(&mut env).await;
    env.finish(result).await;
}

async fn control_plane_outage(env: &mut Env) -> Result<()> {
    let (pg, primary) = quorum_cluster(env).await?;
    let timeline = crate::harness::timeline(&pg);
    let writer = writer(env, "db").await?;

    let down_at = Instant::now();
    let outage = format!("{}", OUTAGE.as_secs());
    let restarted = restart_components(&["--down", &outage, "etcd", "kube-apiserver"]).await;
    let back_at = Instant::now();
    if let Err(e) = restarted {
        let log = writer.stop().await;
        return Err(e.context(format!("writer: {} acks", log.acks.len())));
    }
    // Past Patroni's retry timeout the primary would have demoted itself without failsafe
    // mode; with it, it asks the other members and keeps writing.
    let late = down_at + OUTAGE / 2;
    let during = writer
        .acks()
        .iter()
        .filter(|a| a.at > late && a.at < down_at + OUTAGE)
        .count();
    ensure!(
        during > 0,
        "no write acknowledged in the second half of the API server's {OUTAGE:?} outage: the primary gave up its role"
    );
    // The manager could not renew its Lease for longer than its duration: it must have
    // stepped down (and exited, for Kubernetes to restart it), since a standby could have
    // taken the Lease once the API server was back.
    let revived = env.revive_manager().await?;
    ensure!(
        revived,
        "the manager still led after {OUTAGE:?} without renewing its Lease"
    );
    let pg = env.wait_ready("db", 3, SETTLE).await?;
    let converged = down_at.elapsed();
    ensure!(
        pg.status
            .as_ref()
            .and_then(|s| s.current_primary.as_deref())
            == Some(primary.as_str())
            && crate::harness::timeline(&pg) == timeline,
        "the primary changed over the outage: {primary} on timeline {timeline:?} before, {:?} on {:?} after",
        pg.status.as_ref().and_then(|s| s.current_primary.clone()),
        crate::harness::timeline(&pg)
    );
    let (log, lost) = stop_and_count_lost(env, "db", writer).await?;
    let pause = log
        .longest_gap(down_at)
        .map_or(0.0, |g| g.duration().as_secs_f64());
    record(&Row {
        fault: "kube-apiserver and etcd killed".into(),
        injected: format!(
            "down {} s, 3 instances, synchronous Quorum, failsafe mode on",
            OUTAGE.as_secs()
        ),
        recovered_secs: converged.as_secs_f64(),
        acknowledged: log.acks.len(),
        lost,
        note: format!(
            "{primary} kept the role on timeline {}; longest write pause {pause:.1} s; \
             API back after {:.0} s; the manager stepped down (it could not renew its Lease) \
             and was restarted",
            timeline.map_or("?".to_owned(), |t| t.to_string()),
            back_at.duration_since(down_at).as_secs_f64(),
        ),
    })
}

#[tokio::test]
#[ignore = "restarts the shared node's kubelet and containerd: `just chaos` runs it alone"]
async fn a_kubelet_and_containerd_restart_leaves_postgres_running_and_loses_nothing() {
    let env = Env::start("chaos-node-agents").await;
    let result = node_agents_restart(&env).await;
    env.finish(result).await;
}

async fn node_agents_restart(env: &Env) -> Result<()> {
    let (_, primary) = quorum_cluster(env).await?;
    let before = restarts(env, "db").await?;
    let writer = writer(env, "db").await?;

    let down_at = Instant::now();
    if let Err(e) = restart_components(&["--down", "5", "containerd", "kubelet"]).await {
        let log = writer.stop().await;
        return Err(e.context(format!("writer: {} acks", log.acks.len())));
    }
    // The new kubelet runs: it renews its node's Lease (the Ready condition would still be
    // the dead one's for 40 s).
    let restarted = k8s_openapi::jiff::Timestamp::now();
    let node = env
        .pods("db")
        .await?
        .first()
        .and_then(|p| p.spec.as_ref()?.node_name.clone())
        .context("no node for db's pods")?;
    let leases: kube::Api<Lease> = kube::Api::namespaced(env.client.clone(), "kube-node-lease");
    eventually(&format!("node {node}'s Lease renewed"), SETTLE, || async {
        let lease = leases.get(&node).await.map_err(|e| e.to_string())?;
        match lease.spec.and_then(|s| s.renew_time) {
            Some(t) if t.0 > restarted => Ok(()),
            other => Err(format!("renewTime {other:?}, restarted at {restarted}")),
        }
    })
    .await?;
    let pg = env.wait_ready("db", 3, SETTLE).await?;
    let converged = down_at.elapsed();
    let after = restarts(env, "db").await?;
    ensure!(
        after == before,
        "containers restarted: {before} restarts before, {after} after"
    );
    ensure!(
        pg.status
            .as_ref()
            .and_then(|s| s.current_primary.as_deref())
            == Some(primary.as_str()),
        "the primary moved from {primary}"
    );
    let (log, lost) = stop_and_count_lost(env, "db", writer).await?;
    let pause = log
        .longest_gap(down_at)
        .map_or(0.0, |g| g.duration().as_secs_f64());
    record(&Row {
        fault: "kubelet and containerd killed".into(),
        injected: "down 5 s, 3 instances, synchronous Quorum".into(),
        recovered_secs: converged.as_secs_f64(),
        acknowledged: log.acks.len(),
        lost,
        note: format!(
            "no container restarted, {primary} kept the role; longest write pause {pause:.1} s"
        ),
    })
}
