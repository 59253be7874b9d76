//! Upgrade benchmarks (`just bench-upgrade`), on the node cluster with the cluster and upgrade
//! controllers:
//!
//! - **minor** (15.18 → 15.20) of the three-instance example cluster under a writer: the
//!   longest time without an acknowledged write, beside a switchover of the same cluster in
//!   the same run (the target: under 3 s, a switchover's);
//! - **major** (15.20 → 17, `--link`) of a pgbench database of ≥ 1 GiB: the total time and
//!   the write downtime under a writer, each step's time; beside, on the same data in the same
//!   images, `initdb` + `pg_upgrade --link` run by hand in a pod, and a restart of a
//!   one-instance cluster (pod deleted → writable): the target is a downtime of at most
//!   1.5 × the raw pg_upgrade plus one restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pgpilot_api::upgrade::UpgradePhase;
use pgpilot_api::{PostgresCluster, PostgresUpgrade, labels};
use pgpilot_testkit::writer::{Writer, WriterConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kube_util::{kubectl, load1, loadavg, poll};
use crate::pgc::{self, Disruption};

pub const MINOR: &str = "bench-minor";
pub const MAJOR: &str = "bench-major";
pub const RAW: &str = "bench-raw";
const IMAGE_15_18: &str = "localhost/pgpilot/postgres:15.18";
const IMAGE_15_20: &str = "localhost/pgpilot/postgres:15.20";
const IMAGE_17: &str = "localhost/pgpilot/postgres:17";
/// The init container of pgpilot's prepare Job: the old image's PostgreSQL and the libraries
/// it needs beside the data directory (the only way to have both majors in one pod with these
/// images).
const COPY_OLD: &str = include_str!("../../pgpilot-upgrade/scripts/copy-old.sh");
/// `initdb` and `pg_upgrade --link` by hand on the stopped cluster's volume, each timed.
const RAW_SCRIPT: &str = r#"set -euo pipefail
D=/var/lib/postgresql/data
OLD=$D/pgbin.15
mkdir -p "$OLD/missing"
have=$(ldconfig -p)
for lib in "$OLD"/lib/*; do
  grep -q "^[[:space:]]*${lib##*/} " <<<"$have" || ln -sf "$lib" "$OLD/missing/"
done
export LD_LIBRARY_PATH=$OLD/missing
cd /tmp
rm -rf "$D/raw17"
t0=$(date +%s.%N)
initdb -D "$D/raw17" -U postgres -E UTF8 --locale=C.UTF-8 --data-checksums >/tmp/initdb.log
t1=$(date +%s.%N)
echo "local all all trust" >/tmp/hba.conf
: >/tmp/old.conf
pg_upgrade -b "$OLD/usr/lib/postgresql/15/bin" -B /usr/lib/postgresql/17/bin -d "$D/pgdata" \
  -D "$D/raw17" -U postgres -s /tmp -j 2 --link \
  -o "-c config_file=/tmp/old.conf -c hba_file=/tmp/hba.conf -c jit=off" >/tmp/pg_upgrade.log 2>&1 ||
  { cat /tmp/pg_upgrade.log; exit 1; }
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "initdb=%.3f pg_upgrade=%.3f\n", b - a, c - b }'
"#;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MinorRun {
    /// The cluster's synchronous replication method (`Quorum`, the example's, or `Priority`).
    #[serde(default)]
    pub method: String,
    /// Spec changed → PostgresUpgrade Succeeded.
    pub total_seconds: f64,
    /// The longest time without an acknowledged write from the spec change on.
    pub write_gap_seconds: f64,
    /// A switchover of the same cluster just before (the baseline).
    pub switchover_gap_seconds: f64,
    /// Seconds after the spec changed: the write gap's ends, each step's start and end.
    #[serde(default)]
    pub timeline: BTreeMap<String, f64>,
    pub load1: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MajorRun {
    pub total_seconds: f64,
    pub write_downtime_seconds: f64,
    /// Each step's start → end, from the PostgresUpgrade's status (whole seconds).
    pub steps: BTreeMap<String, f64>,
    /// Seconds after the spec changed: the write gap's ends, each step's start and end
    /// (whole seconds), the pg_upgrade Job's containers (whole seconds).
    #[serde(default)]
    pub timeline: BTreeMap<String, f64>,
    pub load1: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RawRun {
    pub initdb_seconds: f64,
    pub pg_upgrade_seconds: f64,
    /// A one-instance cluster's pod deleted → a write acknowledged again.
    pub restart_seconds: f64,
    pub load1: f64,
}

impl RawRun {
    /// What the target allows for the write downtime.
    pub fn allowance(&self) -> f64 {
        1.5 * (self.initdb_seconds + self.pg_upgrade_seconds) + self.restart_seconds
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpgradeResults {
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    pub scale: u32,
    pub instances: usize,
    pub database_bytes: u64,
    pub minor: Vec<MinorRun>,
    pub major: Vec<MajorRun>,
    pub raw: Vec<RawRun>,
    pub errors: Vec<String>,
}

pub struct Options {
    pub scale: u32,
    pub instances: usize,
    pub repeat: usize,
    pub minor: bool,
    pub major: bool,
}

pub async fn run(client: &Client, ns: &str, opts: &Options) -> UpgradeResults {
    let mut r = UpgradeResults {
        date: chrono_now(),
        load_start: loadavg(),
        scale: opts.scale,
        instances: opts.instances,
        ..Default::default()
    };
    for k in 0..opts.repeat {
        for method in MINOR_METHODS.iter().filter(|_| opts.minor) {
            match minor_once(client, ns, k, method).await {
                Ok(m) => {
                    println!(
                        "minor {k} ({method}): {:.1} s, write gap {:.2} s (switchover {:.2} s)",
                        m.total_seconds, m.write_gap_seconds, m.switchover_gap_seconds
                    );
                    print_timeline(&m.timeline);
                    r.minor.push(m);
                }
                Err(e) => error(&mut r.errors, &format!("minor upgrade ({method})"), &e),
            }
            let _ = pgc::delete_cluster(client, ns, MINOR).await;
        }
        if opts.major {
            match major_once(client, ns, opts, &mut r.database_bytes).await {
                Ok(m) => {
                    println!(
                        "major {k}: {:.1} s, write downtime {:.1} s, steps {:?}",
                        m.total_seconds, m.write_downtime_seconds, m.steps
                    );
                    print_timeline(&m.timeline);
                    r.major.push(m);
                }
                Err(e) => error(&mut r.errors, "major upgrade", &e),
            }
            let _ = pgc::delete_cluster(client, ns, MAJOR).await;
            match raw_once(client, ns, opts).await {
                Ok(raw) => {
                    println!(
                        "raw {k}: initdb {:.1} s, pg_upgrade --link {:.1} s, restart {:.1} s",
                        raw.initdb_seconds, raw.pg_upgrade_seconds, raw.restart_seconds
                    );
                    r.raw.push(raw);
                }
                Err(e) => error(&mut r.errors, "raw pg_upgrade", &e),
            }
            let _ = kubectl(&[
                "-n",
                ns,
                "delete",
                "pod",
                &format!("{RAW}-pg-upgrade"),
                "--ignore-not-found",
            ])
            .await;
            let _ = pgc::delete_cluster(client, ns, RAW).await;
        }
    }
    r.load_end = loadavg();
    r
}

fn print_timeline(timeline: &BTreeMap<String, f64>) {
    let mut events: Vec<_> = timeline.iter().collect();
    events.sort_by(|a, b| a.1.total_cmp(b.1));
    for (what, t) in events {
        println!("  +{t:6.1} s  {what}");
    }
}

fn chrono_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}

fn error(errors: &mut Vec<String>, what: &str, e: &anyhow::Error) {
    eprintln!("FAILED {what}: {e:#}");
    errors.push(format!("{what}: {e:#}"));
}

async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<Api<PostgresCluster>> {
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    pgc::delete_cluster(client, ns, name).await?;
    let object: PostgresCluster = serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": name}, "spec": spec,
    }))?;
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {name}"))?;
    pgc::wait_ready(&api, name, Duration::from_secs(600)).await?;
    Ok(api)
}

/// A writer on `name`-rw (an insert every 50 ms), going.
async fn writer(client: &Client, ns: &str, name: &str, table: &str) -> Result<Writer> {
    let target = pgc::rw_target(client, ns, name).await?;
    let mut config =
        WriterConfig::new(&target.host, 5432, "postgres", &target.password, "postgres");
    config.table = table.to_owned();
    config.interval = Duration::from_millis(50);
    let w = Writer::start(config);
    if !w
        .wait_until(Duration::from_secs(60), |acks| acks.len() >= 20)
        .await
    {
        w.stop().await;
        bail!("the writer on {name}-rw did not get going");
    }
    Ok(w)
}

/// Waits for the cluster's (one) PostgresUpgrade to succeed; its status.
async fn succeeded(
    client: &Client,
    ns: &str,
    cluster: &str,
    timeout: Duration,
) -> Result<pgpilot_api::upgrade::PostgresUpgradeStatus> {
    let api = Api::<PostgresUpgrade>::namespaced(client.clone(), ns);
    poll(
        &format!("{cluster}'s upgrade Succeeded"),
        timeout,
        Duration::from_millis(200),
        || async {
            let list = api
                .list(&ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER)))
                .await?;
            for u in list.items.iter().filter(|u| u.spec.cluster.name == cluster) {
                let st = u.status.clone().unwrap_or_default();
                match st.phase {
                    Some(UpgradePhase::Succeeded) => return Ok(Some(st)),
                    Some(UpgradePhase::Failed | UpgradePhase::Aborted | UpgradePhase::Paused) => {
                        bail!(
                            "upgrade {:?} is {:?}: {:?}",
                            u.metadata.name,
                            st.phase,
                            st.conditions
                        )
                    }
                    _ => {}
                }
            }
            Ok(None)
        },
    )
    .await
}

/// The synchronous replication methods a minor upgrade is measured with: the example's, and
/// the one under which a switchover's first commits need no standby (see the report).
pub const MINOR_METHODS: [&str; 2] = ["Quorum", "Priority"];

async fn minor_once(client: &Client, ns: &str, sample: usize, method: &str) -> Result<MinorRun> {
    let mut spec = pgc::spec(3)?;
    spec["replication"]["synchronous"]["method"] = json!(method);
    spec["postgresql"]["version"] = json!(15);
    spec["postgresql"]["image"] = json!(IMAGE_15_18);
    let api = create(client, ns, MINOR, spec).await?;
    let switchover = pgc::disruption_once(client, ns, MINOR, Disruption::Switchover, sample, "")
        .await
        .context("the baseline switchover")?;
    // Where the baseline's time went, beside the upgrade's timeline.
    let mut steps: Vec<_> = switchover.steps.iter().collect();
    steps.sort_by(|a, b| a.1.total_cmp(b.1));
    for (step, at) in steps {
        println!("  switchover +{at:6.2} s  {step}");
    }
    for f in &switchover.writer_failures {
        println!(
            "  switchover {:.2}-{:.2} s ×{} {}",
            f.from, f.to, f.count, f.message
        );
    }
    for line in &switchover.patroni_log {
        println!("  {line}");
    }
    pgc::wait_ready(&api, MINOR, Duration::from_secs(300)).await?;
    let w = writer(client, ns, MINOR, &format!("bench_minor_{sample}")).await?;
    let load = load1();
    let event = Instant::now();
    let wall = k8s_openapi::jiff::Timestamp::now();
    api.patch(
        MINOR,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"postgresql": {"image": IMAGE_15_20}}})),
    )
    .await?;
    let done = succeeded(client, ns, MINOR, Duration::from_secs(900)).await;
    let total = event.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = w.stop().await;
    let done = done?;
    let gap = log
        .longest_gap(event)
        .context("no acknowledged write during the upgrade")?;
    Ok(MinorRun {
        method: method.to_owned(),
        total_seconds: total,
        write_gap_seconds: gap.duration().as_secs_f64(),
        switchover_gap_seconds: switchover.gap_seconds,
        timeline: timeline(&done, &gap, event, wall),
        load1: load,
    })
}

async fn exec(ns: &str, pod: &str, command: &[&str]) -> Result<String> {
    let mut args = vec!["-n", ns, "exec", pod, "-c", "postgres", "--"];
    args.extend_from_slice(command);
    kubectl(&args).await
}

/// A cluster of `instances` on 15.20 with a pgbench database of `scale`; its primary pod.
async fn with_data(
    client: &Client,
    ns: &str,
    name: &str,
    instances: usize,
    scale: u32,
) -> Result<(Api<PostgresCluster>, String)> {
    let mut spec = pgc::spec(instances)?;
    spec["postgresql"]["version"] = json!(15);
    spec["postgresql"]["image"] = json!(IMAGE_15_20);
    spec["storage"]["size"] = json!("8Gi");
    let api = create(client, ns, name, spec).await?;
    let primary = api
        .get(name)
        .await?
        .status
        .and_then(|s| s.current_primary)
        .context("no primary")?;
    println!("{name}: pgbench -i -s {scale}…");
    exec(
        ns,
        &primary,
        &[
            "pgbench",
            "-h",
            "/run/postgresql",
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "postgres",
        ],
    )
    .await?;
    Ok((api, primary))
}

async fn major_once(
    client: &Client,
    ns: &str,
    opts: &Options,
    database_bytes: &mut u64,
) -> Result<MajorRun> {
    let (api, primary) = with_data(client, ns, MAJOR, opts.instances, opts.scale).await?;
    let size = exec(
        ns,
        &primary,
        &[
            "psql",
            "-h",
            "/run/postgresql",
            "-U",
            "postgres",
            "-Atc",
            "SELECT sum(pg_database_size(oid)) FROM pg_database",
        ],
    )
    .await?;
    *database_bytes = size.trim().parse().unwrap_or_default();
    // Created by hand before the spec changes (the controller adopts it), to ask for --link
    // without a backup repository; owned by the cluster, so that it goes with it.
    let upgrades = Api::<PostgresUpgrade>::namespaced(client.clone(), ns);
    let owner = kube::Resource::controller_owner_ref(&api.get(MAJOR).await?, &())
        .context("the cluster has no uid")?;
    let upgrade: PostgresUpgrade = serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
        "metadata": {"name": format!("{MAJOR}-to-17"), "labels": {labels::CLUSTER: MAJOR},
            "ownerReferences": [owner]},
        "spec": {"cluster": {"name": MAJOR}, "targetVersion": 17, "targetImage": IMAGE_17,
            "majorUpgradeMethod": "Link", "backupBeforeUpgrade": false},
    }))?;
    upgrades.create(&PostParams::default(), &upgrade).await?;
    let w = writer(client, ns, MAJOR, "bench_major").await?;
    let load = load1();
    let event = Instant::now();
    let wall = k8s_openapi::jiff::Timestamp::now();
    api.patch(
        MAJOR,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"postgresql": {"version": 17, "image": IMAGE_17}}})),
    )
    .await?;
    let done = succeeded(client, ns, MAJOR, Duration::from_secs(1800)).await;
    let total = event.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = w.stop().await;
    let done = done?;
    let gap = log
        .longest_gap(event)
        .context("no acknowledged write during the upgrade")?;
    let steps = done
        .steps
        .iter()
        .filter_map(|s| {
            let (a, b) = (s.start_time.as_ref()?, s.end_time.as_ref()?);
            Some((s.name.clone(), (b.0.as_second() - a.0.as_second()) as f64))
        })
        .collect();
    let since = |t: k8s_openapi::jiff::Timestamp| {
        (t.as_millisecond() - wall.as_millisecond()) as f64 / 1000.0
    };
    let mut timeline = timeline(&done, &gap, event, wall);
    // The prepare and pg_upgrade Jobs' pods: their containers' start and end.
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    if let Ok(list) = pods
        .list(&ListParams::default().labels(&format!(
            "{}={MAJOR},{}=upgrade",
            labels::CLUSTER,
            labels::COMPONENT
        )))
        .await
    {
        for p in list.items.iter().filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains("-pg-upgrade-") || n.contains("-prepare-"))
        }) {
            let Some(st) = &p.status else { continue };
            for c in st
                .init_container_statuses
                .iter()
                .flatten()
                .chain(st.container_statuses.iter().flatten())
            {
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    if let Some(a) = &t.started_at {
                        timeline.insert(format!("job {} start", c.name), since(a.0));
                    }
                    if let Some(b) = &t.finished_at {
                        timeline.insert(format!("job {} end", c.name), since(b.0));
                    }
                }
            }
        }
    }
    Ok(MajorRun {
        total_seconds: total,
        write_downtime_seconds: gap.duration().as_secs_f64(),
        steps,
        timeline,
        load1: load,
    })
}

/// Seconds after the spec changed (`event`, `wall`): the write gap's ends, and each step's
/// start and end (whole seconds).
fn timeline(
    done: &pgpilot_api::upgrade::PostgresUpgradeStatus,
    gap: &pgpilot_testkit::writer::Gap,
    event: Instant,
    wall: k8s_openapi::jiff::Timestamp,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert(
        "write gap: last ack before".to_owned(),
        gap.last_before.at.duration_since(event).as_secs_f64(),
    );
    out.insert(
        "write gap: first ack after".to_owned(),
        gap.first_after.at.duration_since(event).as_secs_f64(),
    );
    for s in &done.steps {
        for (edge, t) in [("start", &s.start_time), ("end", &s.end_time)] {
            if let Some(t) = t {
                let after = (t.0.as_millisecond() - wall.as_millisecond()) as f64 / 1000.0;
                out.insert(format!("step {} {edge}", s.name), after);
            }
        }
    }
    out
}

/// The baseline: a restart of a one-instance cluster, then `initdb` + `pg_upgrade --link` by
/// hand on its volume once it is stopped.
async fn raw_once(client: &Client, ns: &str, opts: &Options) -> Result<RawRun> {
    let (api, primary) = with_data(client, ns, RAW, 1, opts.scale).await?;
    // Restart: the pod deleted → a write acknowledged.
    let w = writer(client, ns, RAW, "bench_raw").await?;
    let load = load1();
    let event = Instant::now();
    kubectl(&["-n", ns, "delete", "pod", &primary, "--wait=false"]).await?;
    let back = w
        .wait_until(Duration::from_secs(300), |acks| {
            acks.iter()
                .any(|a| a.at > event + Duration::from_millis(500))
                && acks.windows(2).any(|x| {
                    x[1].at > event && x[1].at.duration_since(x[0].at) > Duration::from_millis(500)
                })
        })
        .await;
    let log = w.stop().await;
    if !back {
        bail!("{RAW} took no write within 300 s of its pod's deletion");
    }
    let restart = log
        .longest_gap(event)
        .context("no write after the restart")?
        .duration()
        .as_secs_f64();
    pgc::wait_ready(&api, RAW, Duration::from_secs(300)).await?;
    // Stopped cleanly, by the same annotation the upgrade controller uses.
    kubectl(&[
        "-n",
        ns,
        "annotate",
        "postgrescluster",
        RAW,
        &format!("{}=0", labels::INSTANCE_LIMIT),
        "--overwrite",
    ])
    .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    poll(
        "bench-raw stopped",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!(
                    "{}={RAW},{}=instance",
                    labels::CLUSTER,
                    labels::COMPONENT
                )))
                .await?;
            Ok(list.items.is_empty().then_some(()))
        },
    )
    .await?;
    let name = format!("{RAW}-pg-upgrade");
    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}});
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999,
                "fsGroup": 999, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "copy-old", "image": IMAGE_15_20,
                "command": ["/bin/sh", "-c", COPY_OLD],
                "env": [{"name": "OLD_MAJOR", "value": "15"}],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                "securityContext": restricted}],
            "containers": [{"name": "pg-upgrade", "image": IMAGE_17,
                "command": ["/bin/bash", "-c", RAW_SCRIPT],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                    {"name": "tmp", "mountPath": "/tmp"}],
                "securityContext": restricted}],
            "volumes": [{"name": "tmp", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{RAW}-0")}}],
        },
    }))?;
    let _ = kubectl(&["-n", ns, "delete", "pod", &name, "--ignore-not-found"]).await;
    pods.create(&PostParams::default(), &pod).await?;
    let phase = poll(
        &format!("pod {name} done"),
        Duration::from_secs(900),
        Duration::from_secs(1),
        || async {
            let p = pods.get(&name).await?;
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
        },
    )
    .await?;
    let out = kubectl(&["-n", ns, "logs", &name, "-c", "pg-upgrade"]).await?;
    if phase != "Succeeded" {
        bail!("the raw pg_upgrade failed: {out}");
    }
    let field = |key: &str| -> Result<f64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.parse().ok())
            .with_context(|| format!("no {key} in {out:?}"))
    };
    Ok(RawRun {
        initdb_seconds: field("initdb=")?,
        pg_upgrade_seconds: field("pg_upgrade=")?,
        restart_seconds: restart,
        load1: load,
    })
}
