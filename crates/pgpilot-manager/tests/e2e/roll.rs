//! Changes the cluster controller rolls through a Ready cluster under a steady writer: a new
//! pod template replaces the instances, a parameter that needs a restart restarts them in
//! place. Either way replicas go first, one at a time, the primary last after a switchover,
//! and no acknowledged write is lost.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_testkit::writer::Writer;
use tokio::task::JoinHandle;

use crate::harness::{
    ClusterYaml, Env, condition_is, connect, eventually, instance_config, last_failures,
    lost_writes, pod_ready, role_of, summary,
};

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// The controller carrying a spec change into the StatefulSet.
const APPLY: Duration = Duration::from_secs(60);
/// A whole roll of 3 instances: three restarts or replacements and a switchover.
const ROLL: Duration = Duration::from_secs(300);
/// The writer getting going, or writes resuming on the primary once the roll is done.
const WRITES: Duration = Duration::from_secs(60);
/// Pod label with the StatefulSet revision the pod was created from.
const REVISION: &str = "controller-revision-hash";
/// `spec.resources.requests.cpu` after the change (the fixture asks for 50m).
const NEW_CPU: &str = "60m";
/// `max_connections` after the change (PostgreSQL's default is 100).
const MAX_CONNECTIONS: &str = "150";

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// A Ready 3-instance cluster with required quorum replication (as in the failover test)
/// and a sequence writer on `db-rw`. Returns the writer and the primary.
async fn ready_under_writes(env: &Env) -> Result<(Writer, String)> {
    ready_under_writes_of(env, ClusterYaml::new("db")).await
}

/// [`ready_under_writes`] of cluster `db` as `cluster` (3 instances, quorum) describes it.
pub(crate) async fn ready_under_writes_of(
    env: &Env,
    cluster: ClusterYaml,
) -> Result<(Writer, String)> {
    env.apply(&cluster.instances(3).sync_required("Quorum").yaml())?;
    let pg = env.wait_ready("db", 3, CREATE).await?;
    let primary = pg
        .status
        .and_then(|s| s.current_primary)
        .context("no currentPrimary")?;
    // One connection, an insert every 50 ms; 1 s connect and statement timeouts (the
    // defaults), a reconnection after any error.
    let mut config = env.rw_writer("db").await?;
    config.interval = Duration::from_millis(50);
    let writer = Writer::start(config);
    if !writer.wait_until(WRITES, |acks| acks.len() >= 20).await {
        let log = writer.stop().await;
        bail!(
            "only {} inserts acknowledged through db-rw before the change; last failures: {:?}",
            log.acks.len(),
            last_failures(&log)
        );
    }
    Ok((writer, primary))
}

/// Stops the writer once an insert is acknowledged again after the change settled, reads the
/// table back through `db-rw` and fails on any acknowledged id missing; reports the longest
/// pause between acknowledgements since `changed`.
pub(crate) async fn no_acknowledged_write_lost(
    env: &Env,
    writer: Writer,
    what: &str,
    changed: Instant,
) -> Result<()> {
    let settled = Instant::now();
    let resumed = writer
        .wait_until(WRITES, |acks| acks.last().is_some_and(|a| a.at > settled))
        .await;
    let log = writer.stop().await;
    ensure!(
        resumed,
        "no insert through db-rw acknowledged within {WRITES:?} after the {what}; last \
         failures: {:?}",
        last_failures(&log)
    );
    let su = env.superuser("db").await?;
    let lost = lost_writes(&env.connect("db-rw", &su, WRITES).await?, &log).await?;
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged ids are missing after the {what}: {:?}",
        lost.len(),
        log.acks.len(),
        &lost[..lost.len().min(20)]
    );
    let gap = log
        .longest_gap(changed)
        .map(|g| g.duration())
        .unwrap_or_default();
    eprintln!(
        "{what}: {} inserts acknowledged by {:?}, {} failed attempts, none lost; longest write \
         gap {:.2} s",
        log.acks.len(),
        log.servers(),
        log.failures.len(),
        gap.as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. A pod-template change replaces the instances
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_resources_change_replaces_replicas_one_at_a_time_then_the_primary_after_a_switchover() {
    let env = Env::start("roll").await;
    let result = pod_roll(&env).await;
    env.finish(result).await;
}

/// What the watch of the pods saw during the roll, independently of what the controller
/// reports.
#[derive(Debug, Default)]
struct Seen {
    /// Pods in the order they were deleted, each with its role label on the update that
    /// marked it for deletion (or, deleted at once, its last one).
    replaced: Vec<(String, Option<String>)>,
    /// The most instances at once that were missing, terminating or not Ready.
    most_down: usize,
    /// Whether the cluster said Progressing=True, reason RollingUpdate.
    rolling_update: bool,
    /// The pods as the watch last saw them, by name.
    pods: BTreeMap<String, Pod>,
    /// While the watch lists (at start, and again after a lost connection): what it listed.
    listing: Option<BTreeMap<String, Pod>>,
    /// UIDs already counted in `replaced`.
    gone: HashSet<String>,
}

impl Seen {
    fn observe(&mut self, event: watcher::Event<Pod>, instances: usize) {
        match event {
            watcher::Event::Init => self.listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(p) => {
                self.listing.get_or_insert_default().insert(p.name_any(), p);
                return;
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let uids: HashSet<String> = listed.values().filter_map(|p| p.uid()).collect();
                // Deleted while the watch was away: gone from the list, or a new UID.
                let before = std::mem::replace(&mut self.pods, listed);
                for p in before
                    .values()
                    .filter(|p| p.uid().is_some_and(|u| !uids.contains(&u)))
                {
                    self.replaced_once(p);
                }
                for p in self.pods.clone().values().filter(|p| terminating(p)) {
                    self.replaced_once(p);
                }
            }
            watcher::Event::Apply(p) => {
                if terminating(&p) {
                    self.replaced_once(&p);
                }
                self.pods.insert(p.name_any(), p);
            }
            watcher::Event::Delete(p) => {
                self.replaced_once(&p);
                self.pods.remove(&p.name_any());
            }
        }
        if self.listing.is_some() {
            return;
        }
        let up = self
            .pods
            .values()
            .filter(|p| !terminating(p) && pod_ready(p))
            .count();
        self.most_down = self.most_down.max(instances.saturating_sub(up));
    }

    fn replaced_once(&mut self, pod: &Pod) {
        if let Some(uid) = pod.uid()
            && self.gone.insert(uid)
        {
            self.replaced
                .push((pod.name_any(), role_of(pod).map(str::to_owned)));
        }
    }
}

/// Watches the pods of cluster `db`, and polls the cluster every 100 ms, until stopped.
struct RollWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Seen>,
}

impl RollWatch {
    /// Starts once the watch has listed the pods (the baseline).
    async fn start(env: &Env, instances: usize) -> Result<RollWatch> {
        let pods: Api<Pod> = env.api();
        let clusters: Api<PostgresCluster> = env.api();
        let config = watcher::Config::default().labels(&format!("{}=db", labels::CLUSTER));
        let mut events = watcher::watcher(pods, config).boxed();
        let mut seen = Seen::default();
        while let Some(event) = events.try_next().await? {
            let listed = matches!(event, watcher::Event::InitDone);
            seen.observe(event, instances);
            if listed {
                break;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        event = events.try_next() => {
                            if let Ok(Some(event)) = event {
                                seen.observe(event, instances);
                            }
                        }
                        _ = tick.tick() => {
                            if let Ok(pg) = clusters.get("db").await {
                                seen.rolling_update |=
                                    pg.status.iter().flat_map(|s| &s.conditions).any(|c| {
                                        c.type_ == "Progressing"
                                            && c.status == "True"
                                            && c.reason == "RollingUpdate"
                                    });
                            }
                        }
                    }
                }
                seen
            }
        });
        Ok(RollWatch { stop, task })
    }

    async fn stop(self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

fn update_revision(sts: &StatefulSet) -> Option<String> {
    sts.status.as_ref()?.update_revision.clone()
}

async fn pod_roll(env: &Env) -> Result<()> {
    let (writer, old_primary) = ready_under_writes(env).await?;
    let statefulsets: Api<StatefulSet> = env.api();
    let old_revision = update_revision(&statefulsets.get("db").await?);
    let watch = RollWatch::start(env, 3).await?;

    let changed = Instant::now();
    env.patch_spec(
        "db",
        serde_json::json!({"resources": {"requests": {"cpu": NEW_CPU}}}),
    )
    .await?;
    let rolled = async {
        let revision = eventually("a new updateRevision of StatefulSet db", APPLY, || async {
            let sts = statefulsets.get("db").await.map_err(|e| e.to_string())?;
            match update_revision(&sts) {
                Some(r) if Some(&r) != old_revision.as_ref() => Ok(r),
                r => Err(format!("updateRevision {r:?}")),
            }
        })
        .await?;
        eventually(
            &format!("db Ready, not Progressing, 3 Ready pods of revision {revision}"),
            ROLL,
            || async {
                let pg = env.cluster("db").await.map_err(|e| format!("{e:#}"))?;
                condition_is(&pg, "Ready", "True")
                    .and_then(|()| condition_is(&pg, "Progressing", "False"))
                    .map_err(|why| format!("{why}\n{}", summary(&pg)))?;
                let pods = env.pods("db").await.map_err(|e| format!("{e:#}"))?;
                let behind: Vec<String> = pods
                    .iter()
                    .filter(|p| !pod_ready(p) || p.labels().get(REVISION) != Some(&revision))
                    .map(|p| format!("{} ({:?})", p.name_any(), p.labels().get(REVISION)))
                    .collect();
                if pods.len() != 3 || !behind.is_empty() {
                    return Err(format!(
                        "{} pods; not Ready or stale: {behind:?}",
                        pods.len()
                    ));
                }
                Ok(pods)
            },
        )
        .await
    }
    .await;
    let seen = watch.stop().await?;
    let pods = rolled?;

    // The order, as the poller saw it: replicas, then the old primary, no longer primary.
    let names: HashSet<&str> = seen.replaced.iter().map(|(p, _)| p.as_str()).collect();
    ensure!(
        seen.replaced.len() == 3 && names.len() == 3,
        "want each of the 3 pods replaced once, saw {:?}",
        seen.replaced
    );
    ensure!(
        seen.replaced[..2]
            .iter()
            .all(|(_, role)| role.as_deref() == Some(labels::ROLE_REPLICA)),
        "the first two pods replaced must be replicas: {:?}",
        seen.replaced
    );
    let (last, role) = &seen.replaced[2];
    ensure!(
        *last == old_primary,
        "the last pod replaced must be {old_primary}, the primary when the roll started: {:?}",
        seen.replaced
    );
    ensure!(
        role.as_deref() == Some(labels::ROLE_REPLICA),
        "{old_primary} was deleted while labelled {role:?}: a switchover must come first"
    );
    ensure!(
        seen.most_down <= 1,
        "{} instances were missing or not Ready at once during the roll; at most 1",
        seen.most_down
    );
    ensure!(
        seen.rolling_update,
        "Progressing=True with reason RollingUpdate never seen during the roll"
    );

    for p in &pods {
        let cpu = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == "postgres"))
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| q.0.as_str());
        ensure!(
            cpu == Some(NEW_CPU),
            "{}: the postgres container requests cpu {cpu:?}, want {NEW_CPU}",
            p.name_any()
        );
    }
    let back = pods.iter().find(|p| p.name_any() == old_primary);
    ensure!(
        back.and_then(role_of) == Some(labels::ROLE_REPLICA),
        "{old_primary} did not come back as a replica: role {:?}",
        back.and_then(role_of)
    );

    // The controller's account: an InstanceReplaced per pod naming its role then, and a
    // Switchover before the old primary went.
    let events: Vec<Event> = env
        .api::<Event>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("PostgresCluster"))
        })
        .collect();
    let of = |reason: &str, pod: &str| {
        events.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| n.contains(pod))
        })
    };
    for (pod, role) in &seen.replaced {
        let note = of("InstanceReplaced", pod).and_then(|e| e.note.as_deref());
        ensure!(
            note.zip(role.as_deref())
                .is_some_and(|(n, r)| n.contains(r)),
            "want an InstanceReplaced Event naming {pod} and its role {role:?}, got {note:?}"
        );
    }
    let switchover = of("Switchover", &old_primary)
        .and_then(|e| e.event_time.clone())
        .with_context(|| format!("no Switchover Event naming {old_primary}"))?;
    let replaced = of("InstanceReplaced", &old_primary).and_then(|e| e.event_time.clone());
    ensure!(
        replaced.as_ref().is_some_and(|t| &switchover <= t),
        "the Switchover from {old_primary} ({switchover:?}) must come before its replacement \
         ({replaced:?})"
    );

    no_acknowledged_write_lost(env, writer, "roll", changed).await
}

// ---------------------------------------------------------------------------------------
// 2. A parameter that needs a restart restarts the instances in place
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_restart_parameter_restarts_replicas_in_place_then_the_primary_after_a_switchover() {
    let env = Env::start("restart").await;
    let result = rolling_restart(&env).await;
    env.finish(result).await;
}

async fn rolling_restart(env: &Env) -> Result<()> {
    let (writer, old_primary) = ready_under_writes(env).await?;
    let su = env.superuser("db").await?;
    let uids = |pods: &[Pod]| -> BTreeMap<String, Option<String>> {
        pods.iter().map(|p| (p.name_any(), p.uid())).collect()
    };
    let before = uids(&env.pods("db").await?);

    let changed = Instant::now();
    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"parameters": {"max_connections": MAX_CONNECTIONS}}}),
    )
    .await?;
    // Seconds each postmaster has been up, once all of them restarted since the change.
    let (uptimes, after) = eventually(
        &format!(
            "db Ready with a new primary, max_connections {MAX_CONNECTIONS} live on every \
             instance restarted since the change, none pending restart"
        ),
        ROLL,
        || async {
            let pg = env.cluster("db").await.map_err(|e| format!("{e:#}"))?;
            condition_is(&pg, "Ready", "True").map_err(|why| format!("{why}\n{}", summary(&pg)))?;
            let primary = pg
                .status
                .as_ref()
                .and_then(|s| s.current_primary.as_deref());
            if primary == Some(old_primary.as_str()) {
                return Err(format!("{old_primary} is still the primary"));
            }
            let pods = env.pods("db").await.map_err(|e| format!("{e:#}"))?;
            if pods.len() != 3 {
                return Err(format!("{} pods", pods.len()));
            }
            let mut uptimes = BTreeMap::new();
            for p in &pods {
                let name = p.name_any();
                let ip = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .ok_or_else(|| format!("{name} has no pod IP"))?;
                let client = connect(&instance_config(ip, &su))
                    .await
                    .map_err(|e| format!("{name}: {e:#}"))?;
                let row = client
                    .query_one(
                        "select current_setting('max_connections'),
                                exists (select from pg_settings where pending_restart),
                                extract(epoch from now() - pg_postmaster_start_time())::float8",
                        &[],
                    )
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let (value, pending, up): (String, bool, f64) =
                    (row.get(0), row.get(1), row.get(2));
                if value != MAX_CONNECTIONS || pending || up > changed.elapsed().as_secs_f64() {
                    return Err(format!(
                        "{name}: max_connections {value}, pending restart {pending}, up {up:.0} s"
                    ));
                }
                uptimes.insert(name, up);
            }
            Ok((uptimes, uids(&pods)))
        },
    )
    .await?;

    ensure!(
        after == before,
        "pods were replaced, not restarted in place: {before:?} became {after:?}"
    );
    let last = uptimes
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(name, _)| name.as_str());
    ensure!(
        last == Some(old_primary.as_str()),
        "{old_primary}, the primary when the change came, must restart last (as a replica); \
         uptimes in seconds: {uptimes:?}"
    );

    no_acknowledged_write_lost(env, writer, "rolling restart", changed).await
}
