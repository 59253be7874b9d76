//! Secret-rotation benchmark (`just bench-rotation`), on the node cluster with the cluster and
//! secret-rotation controllers: a one-instance cluster `rot` with the role `app`, a Deployment
//! of client pods that open a new connection for every insert (every 200 ms) with the
//! credentials of the role's Secret, and a SecretRotation (AlternatingUsers) rotating it on
//! request. For each rotation, the time from the request (`pgpilot.io/rotate-now`) to the
//! Secret updated, the clients rolled, the previous login revoked and the rotation complete;
//! the logins PostgreSQL refused meanwhile (target 0); the load the rotation adds, against a
//! window of the same length without one; and, beside the roll, a bare
//! `kubectl rollout restart` of the same Deployment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pgpilot_api::rotation::RolloutState;
use pgpilot_api::{PostgresCluster, SecretRotation, labels};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kube_util::{kubectl, load1, loadavg, poll, wait_gone};
use crate::pgc;

pub const CLUSTER: &str = "rot";
const ROLE: &str = "app";
const DATABASE: &str = "shop";
const SECRET: &str = "rot-app-credentials";
const ROTATION: &str = "app";
const DEPLOYMENT: &str = "client";
const CLIENT_SELECTOR: &str = "app=client";
const CLIENT_IMAGE: &str = "localhost/pgpilot/pgclient:17";
/// The annotation `kubectl rollout restart` sets on the pod template.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// What PostgreSQL logs (after `FATAL:`) when it refuses a login.
const REFUSED: [&str; 3] = [
    "password authentication failed",
    "is not permitted to log in",
    "does not exist",
];
/// How often the milestones are looked at (the figures' resolution).
const TICK: Duration = Duration::from_millis(100);
/// A rotation that has not completed by then failed.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(600);

/// What PostgreSQL did in one window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Window {
    pub seconds: f64,
    /// New sessions (`pg_stat_database.sessions`, all databases).
    pub sessions: i64,
    /// Transactions committed (`pg_stat_database.xact_commit`, all databases).
    pub commits: i64,
    /// Rows the clients inserted.
    pub inserts: i64,
    /// CPU time of the postgres container (cgroup; PostgreSQL and Patroni), when readable.
    pub cpu_seconds: Option<f64>,
    /// Client backends (`pg_stat_activity`) at most, sampled every 100 ms.
    pub max_backends: i64,
    /// The longest time between two inserts of any client pod.
    pub longest_insert_gap_seconds: f64,
}

impl Window {
    pub fn per_second(&self, count: f64) -> f64 {
        if self.seconds > 0.0 {
            count / self.seconds
        } else {
            f64::NAN
        }
    }
}

/// One rotation: seconds after its request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RotationRun {
    pub from_user: String,
    pub to_user: String,
    /// The Secret carries the new credentials (`pgpilot.io/rotation-count` +1).
    pub secret_updated_seconds: f64,
    /// The Deployment has rolled to the new Secret: its template has the new
    /// `rotation.pgpilot.io/app` hash, every replica updated and available, no old pod left.
    pub consumers_rolled_seconds: f64,
    /// The SecretRotation's status says every consumer Rolled.
    pub status_rolled_seconds: Option<f64>,
    /// The previous login has no password left (`pg_authid`).
    pub login_revoked_seconds: f64,
    /// `status.rotations` +1 and Progressing reason Idle.
    pub complete_seconds: f64,
    /// Logins PostgreSQL refused from the request to the end of the window.
    pub refused_logins: usize,
    /// The same Deployment, just before: `kubectl rollout restart` → rolled.
    pub restart_seconds: Option<f64>,
    /// From the request until complete and at least as long as the baseline.
    pub window: Window,
    /// A window of the same length just before the request, without a rotation.
    pub baseline: Option<Window>,
    pub load1: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RotationResults {
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    pub postgres: String,
    pub clients: u32,
    pub grace_seconds: u64,
    pub runs: Vec<RotationRun>,
    /// A login with a wrong password, made on purpose before the rotations, was found in the
    /// log: the refused logins are counted from where they are written.
    pub canary_seen: bool,
    /// Logins PostgreSQL refused from the canary on to the end: the baseline, the restarts
    /// and the rotations.
    pub refused_logins: usize,
    /// Their lines in its log (at most 10).
    pub refused_lines: Vec<String>,
    /// Client pods whose logs were read, and their `FAILED` lines (at most 10 kept).
    pub client_pods_read: usize,
    pub client_failed: usize,
    pub client_failed_lines: Vec<String>,
    pub errors: Vec<String>,
}

pub struct Options {
    pub repeat: usize,
    pub clients: u32,
    pub grace: u64,
}

impl Options {
    /// Each rotation's window, and the baseline's: the grace period plus the roll and the
    /// revocation with room to spare.
    fn window(&self) -> Duration {
        Duration::from_secs(self.grace + 30)
    }
}

pub async fn run(client: &Client, ns: &str, opts: &Options) -> RotationResults {
    let mut r = RotationResults {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        load_start: loadavg(),
        clients: opts.clients,
        grace_seconds: opts.grace,
        ..Default::default()
    };
    if let Err(e) = measure(client, ns, opts, &mut r).await {
        error(&mut r.errors, "rotation benchmark", &e);
    }
    if let Err(e) = cleanup(client, ns).await {
        error(&mut r.errors, "cleaning up", &e);
    }
    r.load_end = loadavg();
    r
}

fn error(errors: &mut Vec<String>, what: &str, e: &anyhow::Error) {
    eprintln!("FAILED {what}: {e:#}");
    errors.push(format!("{what}: {e:#}"));
}

async fn measure(client: &Client, ns: &str, opts: &Options, r: &mut RotationResults) -> Result<()> {
    cleanup(client, ns).await?;
    let mut pg = setup(client, ns, opts).await?;
    r.postgres = pg
        .get()
        .await?
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    // A refused login of our own, so that a count of 0 below means none rather than a log
    // that says nothing.
    let creds = credentials(client, ns).await?;
    let canary = connect(&pg.host, &creds.username, "not-the-password", DATABASE).await;
    let line = format!("for user \"{}\"", creds.username);
    r.canary_seen = canary.is_err()
        && poll(
            "the refused login in the instance's log",
            Duration::from_secs(10),
            Duration::from_millis(500),
            || async {
                let log = refused_logins(ns).await?;
                Ok(log.iter().any(|l| l.contains(&line)).then_some(()))
            },
        )
        .await
        .is_ok();
    let refused_before = refused_logins(ns).await?.len();
    let mut client_logs = BTreeMap::new();
    read_client_logs(client, ns, &mut client_logs).await;

    let window = opts.window();
    for k in 0..opts.repeat {
        let restart = match rollout_restart(client, ns).await {
            Ok(t) => Some(t),
            Err(e) => {
                error(&mut r.errors, &format!("rollout restart #{k}"), &e);
                None
            }
        };
        // The restart's old pods gone and the clients inserting again before the baseline.
        tokio::time::sleep(Duration::from_secs(5)).await;
        read_client_logs(client, ns, &mut client_logs).await;
        // Beside each rotation, so that a change of the machine's load hits both alike.
        let baseline = match baseline_once(client, ns, &mut pg, window).await {
            Ok(w) => {
                println!("baseline {k}: {}", describe(&w));
                Some(w)
            }
            Err(e) => {
                error(&mut r.errors, &format!("baseline #{k}"), &e);
                None
            }
        };
        let refused_at = refused_logins(ns).await.map(|l| l.len()).unwrap_or(0);
        match rotation_once(client, ns, &mut pg, k, window).await {
            Ok(mut run) => {
                run.restart_seconds = restart;
                run.baseline = baseline;
                run.refused_logins = refused_logins(ns)
                    .await
                    .map(|l| l.len().saturating_sub(refused_at))
                    .unwrap_or(0);
                println!(
                    "rotation {k} ({} → {}): Secret {:.2} s, consumers rolled {:.2} s (status {}), \
                     revoked {:.2} s, complete {:.2} s; restart baseline {}; refused logins {} (load {:.2})",
                    run.from_user,
                    run.to_user,
                    run.secret_updated_seconds,
                    run.consumers_rolled_seconds,
                    run.status_rolled_seconds
                        .map_or("-".into(), |s| format!("{s:.2} s")),
                    run.login_revoked_seconds,
                    run.complete_seconds,
                    restart.map_or("-".into(), |s| format!("{s:.2} s")),
                    run.refused_logins,
                    run.load1,
                );
                println!("  {}", describe(&run.window));
                r.runs.push(run);
            }
            Err(e) => error(&mut r.errors, &format!("rotation #{k}"), &e),
        }
        read_client_logs(client, ns, &mut client_logs).await;
    }

    let during: Vec<String> = refused_logins(ns)
        .await?
        .into_iter()
        .skip(refused_before)
        .collect();
    r.refused_logins = during.len();
    r.refused_lines = during.iter().take(10).cloned().collect();
    read_client_logs(client, ns, &mut client_logs).await;
    r.client_pods_read = client_logs.len();
    r.client_failed = client_logs
        .values()
        .map(|log| log.lines().filter(|l| l.contains("FAILED")).count())
        .sum();
    r.client_failed_lines = client_logs
        .iter()
        .flat_map(|(pod, log)| {
            log.lines()
                .filter(|l| l.contains("FAILED"))
                .map(move |l| format!("{pod}: {l}"))
        })
        .take(10)
        .collect();
    println!(
        "refused logins during the rotations: {} (canary seen: {}); FAILED lines in {} client pods: {}",
        during.len(),
        r.canary_seen,
        r.client_pods_read,
        r.client_failed
    );
    Ok(())
}

fn describe(w: &Window) -> String {
    format!(
        "{:.1} s: {:.1} sessions/s, {:.1} commits/s, {:.1} inserts/s, CPU {}, ≤ {} client backends, longest insert gap {:.2} s",
        w.seconds,
        w.per_second(w.sessions as f64),
        w.per_second(w.commits as f64),
        w.per_second(w.inserts as f64),
        w.cpu_seconds.map_or("-".into(), |c| format!("{c:.2} s")),
        w.max_backends,
        w.longest_insert_gap_seconds,
    )
}

/// `length` of the clients alone, with the same look-ups as a rotation's.
async fn baseline_once(
    client: &Client,
    ns: &str,
    pg: &mut Superuser,
    length: Duration,
) -> Result<Window> {
    let start = snapshot(client, ns, pg).await?;
    Ok(observe(client, ns, pg, start, None, length).await?.window)
}

/// Deletes what an earlier run may have left: the SecretRotation, the clients, the cluster.
async fn cleanup(client: &Client, ns: &str) -> Result<()> {
    let rotations = Api::<SecretRotation>::namespaced(client.clone(), ns);
    if rotations.get_opt(ROTATION).await?.is_some() {
        rotations.delete(ROTATION, &DeleteParams::default()).await?;
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    if deployments.get_opt(DEPLOYMENT).await?.is_some() {
        deployments
            .delete(DEPLOYMENT, &DeleteParams::default().grace_period(1))
            .await?;
    }
    wait_gone::<Pod>(client, ns, CLIENT_SELECTOR, Duration::from_secs(120)).await?;
    pgc::delete_cluster(client, ns, CLUSTER).await
}

/// The cluster, the table, the clients Ready, the SecretRotation idle and its consumers
/// rolled; a superuser connection.
async fn setup(client: &Client, ns: &str, opts: &Options) -> Result<Superuser> {
    let mut spec = pgc::spec(1)?;
    spec["roles"] = json!([{"name": ROLE}]);
    spec["databases"] = json!([{"name": DATABASE, "owner": ROLE}]);
    let object: PostgresCluster = serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": CLUSTER}, "spec": spec,
    }))?;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    clusters
        .create(&PostParams::default(), &object)
        .await
        .context("creating PostgresCluster rot")?;
    pgc::wait_ready(&clusters, CLUSTER, Duration::from_secs(600)).await?;
    let target = pgc::rw_target(client, ns, CLUSTER).await?;
    // The table belongs to the role, so that each login in turn may insert.
    let app = poll(
        "the app role's login",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let creds = credentials(client, ns).await?;
            Ok(Some(
                connect(&target.host, &creds.username, &creds.password, DATABASE).await?,
            ))
        },
    )
    .await?;
    app.batch_execute(
        "CREATE TABLE ticks (pod text NOT NULL, login text NOT NULL DEFAULT session_user, \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .await
    .context("creating the table ticks")?;
    drop(app);

    let deployment: Deployment = serde_yaml::from_str(&client_yaml(opts.clients))?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .context("creating the client Deployment")?;
    poll(
        "the client pods Ready",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || async { Ok(rolled(&deployments.get(DEPLOYMENT).await?).then_some(())) },
    )
    .await?;

    let rotation: SecretRotation = serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "SecretRotation",
        "metadata": {"name": ROTATION},
        "spec": {
            "target": {"postgresRole": {"cluster": CLUSTER, "role": ROLE}},
            "rotateEvery": {"interval": "720h"},
            "strategy": {"type": "AlternatingUsers", "gracePeriod": format!("{}s", opts.grace)},
            "consumers": [{"kind": "Deployment", "name": DEPLOYMENT}],
        },
    }))?;
    let rotations = Api::<SecretRotation>::namespaced(client.clone(), ns);
    rotations
        .create(&PostParams::default(), &rotation)
        .await
        .context("creating the SecretRotation")?;
    poll(
        "the SecretRotation idle",
        Duration::from_secs(opts.grace + 300),
        Duration::from_millis(500),
        || async {
            let r = rotations.get(ROTATION).await?;
            let current =
                r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation;
            Ok((current && idle(&r)).then_some(()))
        },
    )
    .await?;
    // Whatever the SecretRotation asked of the clients on creation, settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    poll(
        "the clients rolled",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || async { Ok(rolled(&deployments.get(DEPLOYMENT).await?).then_some(())) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Superuser {
        host: target.host,
        password: target.password,
        client: None,
    })
}

/// The clients: `clients` pods, each inserting one row per new connection every 200 ms with
/// the credentials its pod got from the role's Secret, Ready once one insert went through. A
/// roll replaces one pod at a time and keeps the others serving.
fn client_yaml(clients: u32) -> String {
    let env = ["host", "port", "username", "password", "dbname"]
        .iter()
        .zip(["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"])
        .map(|(key, var)| {
            format!("        - {{name: {var}, valueFrom: {{secretKeyRef: {{name: {SECRET}, key: {key}}}}}}}\n")
        })
        .collect::<String>();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {DEPLOYMENT}}}
spec:
  replicas: {clients}
  selector: {{matchLabels: {{app: client}}}}
  strategy: {{rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, runAsUser: 999, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: client
        image: {CLIENT_IMAGE}
        imagePullPolicy: Never
        env:
{env}        - {{name: PGCONNECT_TIMEOUT, value: '3'}}
        command: [bash, -c]
        args:
        - |
          while true; do
            if out=$(psql -v ON_ERROR_STOP=1 -qAtc \"INSERT INTO ticks (pod) VALUES ('$HOSTNAME')\" 2>&1); then
              touch /tmp/ok
            else
              echo \"FAILED $(date +%T.%N) $out\"
            fi
            sleep 0.2
          done
        readinessProbe: {{exec: {{command: [test, -f, /tmp/ok]}}, periodSeconds: 1}}
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
        securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"
    )
}

struct Credentials {
    username: String,
    password: String,
}

fn value(secret: &Secret, key: &str) -> Result<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .with_context(|| format!("Secret {SECRET} has no {key}"))
}

async fn credentials(client: &Client, ns: &str) -> Result<Credentials> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(SECRET)
        .await
        .with_context(|| format!("Secret {SECRET}"))?;
    Ok(Credentials {
        username: value(&secret, "username")?,
        password: value(&secret, "password")?,
    })
}

async fn connect(
    host: &str,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(5432)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(3))
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting as {user} to {host}:5432/{dbname}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// One superuser connection through `rot-rw`, opened again if it dropped.
struct Superuser {
    host: String,
    password: String,
    client: Option<tokio_postgres::Client>,
}

impl Superuser {
    async fn get(&mut self) -> Result<&tokio_postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.host, "postgres", &self.password, DATABASE).await?);
        }
        self.client.as_ref().context("no superuser connection")
    }
}

/// Counters at one moment.
struct Snapshot {
    at: Instant,
    /// The server's clock (epoch seconds), to find the inserts of a window.
    server_epoch: f64,
    sessions: i64,
    commits: i64,
    inserts: i64,
    cpu_seconds: Option<f64>,
}

async fn snapshot(client: &Client, ns: &str, pg: &mut Superuser) -> Result<Snapshot> {
    let cpu_seconds = cpu_seconds(client, ns).await;
    let row = pg
        .get()
        .await?
        .query_one(
            "SELECT extract(epoch FROM clock_timestamp())::float8, \
               (SELECT sum(sessions)::int8 FROM pg_stat_database), \
               (SELECT sum(xact_commit)::int8 FROM pg_stat_database), \
               (SELECT count(*) FROM ticks)",
            &[],
        )
        .await?;
    Ok(Snapshot {
        at: Instant::now(),
        server_epoch: row.get(0),
        sessions: row.get(1),
        commits: row.get(2),
        inserts: row.get(3),
        cpu_seconds,
    })
}

/// CPU time of the instance's postgres container, from its cgroup on this machine (the node
/// runs here): cgroup v1's `cpuacct.usage` or v2's `cpu.stat`, under the kubelet's cgroupfs
/// layout. None when not found.
async fn cpu_seconds(client: &Client, ns: &str) -> Option<f64> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(&format!("{CLUSTER}-0"))
        .await
        .ok()?;
    let uid = pod.metadata.uid?;
    let id = pod
        .status?
        .container_statuses?
        .into_iter()
        .find(|c| c.name == "postgres")?
        .container_id?;
    let id = id.rsplit("://").next()?.to_owned();
    for qos in ["", "burstable/", "besteffort/"] {
        let v1 = format!("/sys/fs/cgroup/cpuacct/kubepods/{qos}pod{uid}/{id}/cpuacct.usage");
        if let Ok(ns) = std::fs::read_to_string(&v1) {
            return ns.trim().parse::<f64>().ok().map(|n| n / 1e9);
        }
        let v2 = format!("/sys/fs/cgroup/kubepods/{qos}pod{uid}/{id}/cpu.stat");
        if let Ok(stat) = std::fs::read_to_string(&v2) {
            return stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|u| u.trim().parse::<f64>().ok())
                .map(|u| u / 1e6);
        }
    }
    None
}

/// The window between two snapshots.
async fn window(
    pg: &mut Superuser,
    a: &Snapshot,
    b: &Snapshot,
    max_backends: i64,
) -> Result<Window> {
    let gap: f64 = pg
        .get()
        .await?
        .query_one(
            "SELECT coalesce(extract(epoch FROM max(gap)), 0)::float8 FROM \
               (SELECT at - lag(at) OVER (ORDER BY at) AS gap FROM ticks \
                WHERE at BETWEEN to_timestamp($1) AND to_timestamp($2)) g",
            &[&a.server_epoch, &b.server_epoch],
        )
        .await?
        .get(0);
    Ok(Window {
        seconds: b.at.duration_since(a.at).as_secs_f64(),
        sessions: b.sessions - a.sessions,
        commits: b.commits - a.commits,
        inserts: b.inserts - a.inserts,
        cpu_seconds: a.cpu_seconds.zip(b.cpu_seconds).map(|(a, b)| b - a),
        max_backends,
        longest_insert_gap_seconds: gap,
    })
}

/// What a rotation is expected to change, as it was before the request.
struct Before {
    count: i64,
    user: String,
    hash: Option<String>,
    rotations: i64,
}

/// When each milestone was first seen, after the request.
#[derive(Default)]
struct Seen {
    secret: Option<Duration>,
    rolled: Option<Duration>,
    status_left_rolled: bool,
    status_rolled: Option<Duration>,
    revoked: Option<Duration>,
    complete: Option<Duration>,
    new_user: String,
}

impl Seen {
    fn all(&self) -> bool {
        self.secret.is_some()
            && self.rolled.is_some()
            && self.revoked.is_some()
            && self.complete.is_some()
    }
}

struct Observed {
    window: Window,
    seen: Seen,
}

/// From `start` (taken just before the request, if any), looks every 100 ms at the Secret, the
/// Deployment, the SecretRotation and the previous login in `pg_authid`, for `length` and,
/// with a rotation, until it completed. The baseline runs the same look-ups, so that the
/// windows differ only by the rotation.
async fn observe(
    client: &Client,
    ns: &str,
    pg: &mut Superuser,
    start: Snapshot,
    rotation: Option<(&Before, Instant)>,
    length: Duration,
) -> Result<Observed> {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let rotations = Api::<SecretRotation>::namespaced(client.clone(), ns);
    let t0 = rotation.map_or(start.at, |(_, due)| due);
    let previous = rotation.map_or(ROLE.to_owned(), |(b, _)| b.user.clone());
    let mut seen = Seen::default();
    let mut max_backends = 0;
    let mut last_status = None;
    loop {
        let (secret, deployment, status) = tokio::join!(
            secrets.get(SECRET),
            deployments.get(DEPLOYMENT),
            rotations.get(ROTATION)
        );
        let row = match pg.get().await {
            Ok(c) => c
                .query_one(
                    "SELECT (SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = $1), \
                       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
                    &[&previous],
                )
                .await
                .ok(),
            Err(_) => None,
        };
        let now = t0.elapsed();
        // A look-up that failed (a busy API server, a dropped connection) only misses a tick.
        let revoked = row.as_ref().and_then(|r| r.get::<_, Option<bool>>(0));
        if let Some(r) = &row {
            max_backends = max_backends.max(r.get::<_, i64>(1));
        }
        if let Some((before, _)) = rotation {
            if let Ok(secret) = &secret
                && seen.secret.is_none()
                && count(secret) > before.count
            {
                seen.secret = Some(now);
                seen.new_user = value(secret, "username")?;
            }
            if let Ok(d) = &deployment {
                let hash = template_annotation(d, &consumer_key());
                if seen.rolled.is_none() && hash.is_some() && hash != before.hash && rolled(d) {
                    seen.rolled = Some(now);
                }
            }
            if let Ok(status) = status {
                let consumers = status
                    .status
                    .as_ref()
                    .map(|s| s.consumers.clone())
                    .unwrap_or_default();
                let all_rolled = !consumers.is_empty()
                    && consumers.iter().all(|c| c.rollout == RolloutState::Rolled);
                // Rolled before the flip is the last rotation's: wait until it left that state.
                seen.status_left_rolled |= seen.secret.is_some() && !all_rolled;
                if seen.status_rolled.is_none() && seen.status_left_rolled && all_rolled {
                    seen.status_rolled = Some(now);
                }
                if seen.complete.is_none()
                    && rotations_of(&status) > before.rotations
                    && idle(&status)
                {
                    seen.complete = Some(now);
                }
                last_status = status.status;
            }
            if seen.revoked.is_none() && seen.secret.is_some() && revoked == Some(true) {
                seen.revoked = Some(now);
            }
            if now > ROTATION_TIMEOUT {
                bail!(
                    "the rotation did not complete within {ROTATION_TIMEOUT:?}; status: {}",
                    serde_json::to_string(&last_status).unwrap_or_default()
                );
            }
        }
        let done = rotation.is_none() || seen.all();
        if done && now >= length {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let end = snapshot(client, ns, pg).await?;
    Ok(Observed {
        window: window(pg, &start, &end, max_backends).await?,
        seen,
    })
}

fn consumer_key() -> String {
    format!("{}{ROTATION}", labels::CONSUMER_PREFIX)
}

fn count(secret: &Secret) -> i64 {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::ROTATION_COUNT))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn template_annotation(d: &Deployment, key: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

/// Every replica runs the current template and is available, and no other pod is left: the
/// rule the secret-rotation controller applies to its consumers.
fn rolled(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = &d.status else { return false };
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) >= want
        && s.replicas.unwrap_or(0) == s.updated_replicas.unwrap_or(0)
        && s.available_replicas.unwrap_or(0) >= want
}

fn rotations_of(r: &SecretRotation) -> i64 {
    r.status.as_ref().map_or(0, |s| s.rotations)
}

fn idle(r: &SecretRotation) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == "Idle")
    })
}

/// One rotation, requested with `pgpilot.io/rotate-now`, observed for `length` at least.
async fn rotation_once(
    client: &Client,
    ns: &str,
    pg: &mut Superuser,
    k: usize,
    length: Duration,
) -> Result<RotationRun> {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let rotations = Api::<SecretRotation>::namespaced(client.clone(), ns);
    let secret = secrets.get(SECRET).await?;
    let before = Before {
        count: count(&secret),
        user: value(&secret, "username")?,
        hash: template_annotation(
            &Api::<Deployment>::namespaced(client.clone(), ns)
                .get(DEPLOYMENT)
                .await?,
            &consumer_key(),
        ),
        rotations: rotations_of(&rotations.get(ROTATION).await?),
    };
    let load = load1();
    let request = format!(
        "bench-{}-{k}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let start = snapshot(client, ns, pg).await?;
    // Due from the request's write.
    let due = Instant::now();
    rotations
        .patch(
            ROTATION,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {labels::ROTATE_NOW: request}}})),
        )
        .await
        .context("requesting the rotation")?;
    let o = observe(client, ns, pg, start, Some((&before, due)), length).await?;
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    Ok(RotationRun {
        from_user: before.user,
        to_user: o.seen.new_user.clone(),
        secret_updated_seconds: secs(o.seen.secret),
        consumers_rolled_seconds: secs(o.seen.rolled),
        status_rolled_seconds: o.seen.status_rolled.map(|d| d.as_secs_f64()),
        login_revoked_seconds: secs(o.seen.revoked),
        complete_seconds: secs(o.seen.complete),
        refused_logins: 0,
        restart_seconds: None,
        window: o.window,
        baseline: None,
        load1: load,
    })
}

/// `kubectl rollout restart deployment/client` (its patch, sent through the API as the
/// controller's is) → rolled.
async fn rollout_restart(client: &Client, ns: &str) -> Result<f64> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let stamp = chrono::Utc::now().to_rfc3339();
    let t0 = Instant::now();
    deployments
        .patch(
            DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}),
            ),
        )
        .await
        .context("restarting the clients")?;
    poll(
        "the restarted clients rolled",
        Duration::from_secs(300),
        TICK,
        || async {
            let d = deployments.get(DEPLOYMENT).await?;
            let ours = template_annotation(&d, RESTARTED_AT).as_deref() == Some(stamp.as_str());
            Ok((ours && rolled(&d)).then(|| t0.elapsed().as_secs_f64()))
        },
    )
    .await
}

/// The lines of the instance's log where PostgreSQL refused a login.
async fn refused_logins(ns: &str) -> Result<Vec<String>> {
    let log = kubectl(&["-n", ns, "logs", &format!("{CLUSTER}-0"), "-c", "postgres"]).await?;
    Ok(log
        .lines()
        .filter(|l| l.contains("FATAL") && REFUSED.iter().any(|r| l.contains(r)))
        .map(str::to_owned)
        .collect())
}

/// Reads the logs of the client pods running now into `logs` (by pod): a pod's log goes with
/// it, so they are read before each roll and after it.
async fn read_client_logs(client: &Client, ns: &str, logs: &mut BTreeMap<String, String>) {
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(CLIENT_SELECTOR))
        .await
    else {
        return;
    };
    for p in pods.items {
        let name = p.metadata.name.unwrap_or_default();
        if let Ok(log) = kubectl(&["-n", ns, "logs", &name, "-c", "client"]).await {
            logs.insert(name, log);
        }
    }
}
