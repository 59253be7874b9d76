//! The cluster controller (issue #5) with PostgreSQL really running: readiness, replication,
//! failover without losing an acknowledged write, scaling, declared roles, storage expansion
//! refused by the StorageClass, and status from Patroni.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;

use pgpilot_testkit::writer::Writer;
use pgpilot_toolkit::exec::exec;

use crate::harness::{
    ClusterYaml, Env, condition_is, connect, eventually, last_failures, lost_writes, pod_ready,
    role_of, secret_value,
};

/// From `kubectl apply` to Ready, on a loaded shared node (about 15 s when idle).
const CREATE: Duration = Duration::from_secs(300);
/// A change to a Ready cluster (scale, switchover, resize) settling.
const SETTLE: Duration = Duration::from_secs(180);
/// Bound on a failover: a new primary and writes accepted again (Patroni ttl is 20 s here).
const FAILOVER: Duration = Duration::from_secs(60);

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// The ready pod Patroni labels primary, if there is exactly one.
pub(crate) async fn labelled_primary(env: &Env, cluster: &str) -> Result<Pod, String> {
    let pods = env.pods(cluster).await.map_err(|e| format!("{e:#}"))?;
    let primaries: Vec<&Pod> = pods
        .iter()
        .filter(|p| role_of(p) == Some(labels::ROLE_PRIMARY))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
        .collect();
    match primaries.as_slice() {
        [p] => Ok((*p).clone()),
        other => Err(format!(
            "{} ready pods labelled primary: {:?}",
            other.len(),
            other.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        )),
    }
}

/// Waits until a ready pod of `cluster` other than `old` is labelled primary.
pub(crate) async fn another_primary(
    env: &Env,
    cluster: &str,
    old: &str,
    timeout: Duration,
) -> Result<Pod> {
    eventually(
        &format!("a pod other than {old} labelled primary and ready"),
        timeout,
        || async {
            let p = labelled_primary(env, cluster).await?;
            if p.name_any() == old {
                return Err(format!("{old} is still labelled primary"));
            }
            Ok(p)
        },
    )
    .await
}

/// Counts the rows of `table` through `service`, requiring the server to be a replica
/// (`want_replica`) or the primary.
async fn count_rows(
    env: &Env,
    cluster: &str,
    service: &str,
    table: &str,
    want_replica: bool,
) -> Result<i64, String> {
    let su = env.superuser(cluster).await.map_err(|e| format!("{e:#}"))?;
    let config = env
        .pg_config(service, &su)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let client = connect(&config).await.map_err(|e| format!("{e:#}"))?;
    let row = client
        .query_one(
            &format!("select pg_is_in_recovery(), (select count(*) from {table})"),
            &[],
        )
        .await
        .map_err(|e| format!("{service}: {e}"))?;
    let (in_recovery, count): (bool, i64) = (row.get(0), row.get(1));
    if in_recovery != want_replica {
        return Err(format!(
            "{service} reached a server with pg_is_in_recovery() = {in_recovery}"
        ));
    }
    Ok(count)
}

#[tokio::test]
async fn a_cluster_created_again_over_its_retained_volumes_keeps_its_data() {
    let env = Env::start("recreate").await;
    let result = created_again_keeps_data(&env).await;
    env.finish(result).await;
}

/// `whenDeleted: Retain` (the default) keeps the volumes and the Secrets with the passwords
/// stored in them; applying the cluster again brings both back into service.
async fn created_again_keeps_data(env: &Env) -> Result<()> {
    let yaml = ClusterYaml::new("db").yaml();
    env.apply(&yaml)?;
    env.wait_ready("db", 1, CREATE).await?;
    let before = env.superuser("db").await?;
    env.connect("db-rw", &before, FAILOVER)
        .await?
        .batch_execute("create table kept (x int); insert into kept values (42)")
        .await?;

    env.kubectl(&["delete", "postgrescluster", "db", "--wait=true"])?;
    eventually("the instance to be gone", SETTLE, || async {
        match env.pods("db").await {
            Ok(p) if p.is_empty() => Ok(()),
            Ok(p) => Err(format!("{} pod(s) left", p.len())),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    let claims = env
        .api::<PersistentVolumeClaim>()
        .list(&Default::default())
        .await?;
    ensure!(
        claims.items.len() == 1,
        "want the retained claim, got {}",
        claims.items.len()
    );

    env.apply(&yaml)?;
    env.wait_ready("db", 1, CREATE).await?;
    let after = env.superuser("db").await?;
    ensure!(
        after.password == before.password,
        "the superuser's password changed: the retained data would refuse it"
    );
    let x: i32 = env
        .connect("db-rw", &after, FAILOVER)
        .await?
        .query_one("select x from kept", &[])
        .await
        .context("reading the row written before the cluster was deleted")?
        .get(0);
    ensure!(x == 42, "kept holds {x}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. Ready, and replicas serve reads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn three_instances_become_ready_and_replicas_serve_what_the_primary_wrote() {
    let env = Env::start("ready").await;
    let result = ready_and_replicating(&env).await;
    env.finish(result).await;
}

async fn ready_and_replicating(env: &Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(3).yaml())?;
    let pg = env.wait_ready("db", 3, CREATE).await?;
    let st = pg.status.clone().context("no status")?;
    let primary = st.current_primary.clone().context("no currentPrimary")?;
    ensure!(
        st.instances.len() == 3,
        "status.instances has {} entries, want 3",
        st.instances.len()
    );
    for i in &st.instances {
        let role = i
            .role
            .as_deref()
            .ok_or_else(|| anyhow!("instance {} has no role", i.name))?;
        // Asynchronous replication: no synchronous roles.
        let fits = if i.name == primary {
            role == labels::ROLE_PRIMARY
        } else {
            role == "replica"
        };
        ensure!(
            fits,
            "instance {} has role {role} (primary is {primary})",
            i.name
        );
        ensure!(i.ready, "instance {} is not ready", i.name);
    }

    let su = env.superuser("db").await?;
    let rw = env.connect("db-rw", &su, FAILOVER).await?;
    let in_recovery: bool = rw
        .query_one("select pg_is_in_recovery()", &[])
        .await?
        .get(0);
    ensure!(!in_recovery, "db-rw reached a server in recovery");
    rw.batch_execute(
        "create table greetings (id int primary key, note text);
         insert into greetings select g, 'row ' || g from generate_series(1, 100) g",
    )
    .await?;

    // Replication is asynchronous here: give it a moment.
    let count = eventually(
        "the 100 rows through db-ro on a replica",
        Duration::from_secs(60),
        || async {
            match count_rows(env, "db", "db-ro", "greetings", true).await? {
                100 => Ok(100),
                n => Err(format!("{n} rows on the replica")),
            }
        },
    )
    .await?;
    ensure!(count == 100);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Failover with synchronous replication
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn failover_with_required_quorum_replication_loses_no_acknowledged_write() {
    let env = Env::start("failover").await;
    let result = failover(&env, "Quorum", "quorum_standby").await;
    env.finish(result).await;
}

#[tokio::test]
async fn failover_with_required_priority_replication_loses_no_acknowledged_write() {
    let env = Env::start("failover-priority").await;
    let result = failover(&env, "Priority", "sync_standby").await;
    env.finish(result).await;
}

/// `standby_role`: Patroni's role for the replicas it may promote with this `method`.
async fn failover(env: &Env, method: &str, standby_role: &str) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(3)
            .sync_required(method)
            .yaml(),
    )?;
    let pg = env.wait_ready("db", 3, CREATE).await?;
    // With `Required`, Patroni promotes only a replica it recorded in `-sync` (the named
    // standby, or a quorum voter it checked holds every acknowledged commit). Ready waits for
    // that record.
    let st = pg.status.as_ref().context("no status")?;
    ensure!(
        st.instances
            .iter()
            .any(|i| i.role.as_deref() == Some(standby_role)),
        "Ready, but no instance has role {standby_role}: {:?}",
        st.instances
    );
    let old = pg
        .status
        .and_then(|s| s.current_primary)
        .context("no currentPrimary")?;

    let su = env.superuser("db").await?;
    let mut config = env.rw_writer("db").await?;
    // A loaded shared node: a slow commit is not a failed one.
    config.statement_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(2);
    config.interval = Duration::from_millis(20);
    let writer = Writer::start(config);
    if !writer.wait_until(FAILOVER, |acks| acks.len() >= 20).await {
        let log = writer.stop().await;
        bail!(
            "only {} inserts acknowledged through db-rw before the failover; last failures: {:?}",
            log.acks.len(),
            last_failures(&log)
        );
    }

    let deleted_at = Instant::now();
    env.api::<Pod>()
        .delete(&old, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting the primary pod {old}"))?;

    let new = match another_primary(env, "db", &old, FAILOVER).await {
        Ok(p) => p,
        Err(e) => {
            let log = writer.stop().await;
            return Err(e.context(format!(
                "writer: {} inserts acknowledged by {:?}; last failures {:?}",
                log.acks.len(),
                log.servers(),
                last_failures(&log)
            )));
        }
    };
    let new_ip = pod_ip(&new).context("the new primary has no pod IP")?;
    let remaining = FAILOVER.saturating_sub(deleted_at.elapsed());
    let resumed = writer
        .wait_until(remaining, |acks| {
            acks.last().is_some_and(|a| a.server == new_ip)
        })
        .await;
    let log = writer.stop().await;
    ensure!(
        resumed,
        "no insert through db-rw acknowledged by the new primary {} ({new_ip}) within {FAILOVER:?} \
         of deleting {old}; servers that acknowledged: {:?}; last failures: {:?}",
        new.name_any(),
        log.servers(),
        last_failures(&log)
    );

    // Read back on the new primary itself: the Service must lead there.
    let client = env.connect("db-rw", &su, FAILOVER).await?;
    let row = client
        .query_one("select pg_is_in_recovery(), host(inet_server_addr())", &[])
        .await?;
    let (in_recovery, addr): (bool, String) = (row.get(0), row.get(1));
    ensure!(
        !in_recovery,
        "db-rw reached a server in recovery after the failover"
    );
    ensure!(
        addr == new_ip,
        "db-rw reached {addr}, but the new primary {} is {new_ip}",
        new.name_any()
    );
    let lost = lost_writes(&client, &log).await?;
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged ids are missing on the new primary {}: {:?}",
        lost.len(),
        log.acks.len(),
        new.name_any(),
        &lost[..lost.len().min(20)]
    );
    eprintln!(
        "failover {old} -> {}: {} inserts acknowledged by {:?}, {} failed attempts, none lost",
        new.name_any(),
        log.acks.len(),
        log.servers(),
        log.failures.len()
    );

    // The status follows, and the old primary comes back as a replica.
    let new_name = new.name_any();
    env.wait_cluster(
        "db",
        &format!("status.currentPrimary {new_name}"),
        SETTLE,
        |pg| {
            let primary = pg
                .status
                .as_ref()
                .and_then(|s| s.current_primary.as_deref());
            if primary == Some(new_name.as_str()) {
                Ok(())
            } else {
                Err(format!("currentPrimary {primary:?}"))
            }
        },
    )
    .await?;
    env.wait_ready("db", 3, SETTLE).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Scale 3 → 1 → 3 with the primary on the highest ordinal
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn scaling_down_keeps_the_primary_and_the_data_and_scaling_up_streams_again() {
    let env = Env::start("scale").await;
    let result = scale_down_and_up(&env).await;
    env.finish(result).await;
}

async fn scale_down_and_up(env: &Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(3).yaml())?;
    let pg = env.wait_ready("db", 3, CREATE).await?;
    let su = env.superuser("db").await?;
    let rw = env.connect("db-rw", &su, FAILOVER).await?;
    rw.batch_execute(
        "create table kept (id int primary key);
         insert into kept select generate_series(1, 100)",
    )
    .await?;

    // Make the highest ordinal the primary, so that scaling to 1 removes it.
    let current = pg
        .status
        .and_then(|s| s.current_primary)
        .context("no currentPrimary")?;
    if current != "db-2" {
        env.patronictl(
            "db-0",
            &[
                "switchover",
                "--leader",
                &current,
                "--candidate",
                "db-2",
                "--force",
            ],
        )?;
    }
    eventually("db-2 labelled primary", SETTLE, || async {
        let p = labelled_primary(env, "db").await?;
        if p.name_any() == "db-2" {
            Ok(())
        } else {
            Err(format!("{} is primary", p.name_any()))
        }
    })
    .await?;
    env.wait_cluster("db", "currentPrimary db-2, Ready", SETTLE, |pg| {
        condition_is(pg, "Ready", "True")?;
        match pg
            .status
            .as_ref()
            .and_then(|s| s.current_primary.as_deref())
        {
            Some("db-2") => Ok(()),
            other => Err(format!("currentPrimary {other:?}")),
        }
    })
    .await?;
    // Rows the removed primary wrote last: lost if it went away before a switchover.
    eventually("100 more rows through db-rw on db-2", FAILOVER, || async {
        let c = env
            .connect("db-rw", &su, Duration::from_secs(5))
            .await
            .map_err(|e| format!("{e:#}"))?;
        c.batch_execute("insert into kept select generate_series(101, 200) on conflict do nothing")
            .await
            .map_err(|e| e.to_string())
    })
    .await?;

    // Watch for an instance deleted while it is still the primary.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let pods: Api<Pod> = env.api();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = vec![];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&Default::default()).await {
                    for p in list {
                        if p.metadata.deletion_timestamp.is_some()
                            && role_of(&p) == Some(labels::ROLE_PRIMARY)
                            && !seen.contains(&p.name_any())
                        {
                            seen.push(p.name_any());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };

    env.patch_spec("db", serde_json::json!({"instances": 1}))
        .await?;
    let settled = env
        .wait_cluster("db", "db Ready with only db-0, primary", SETTLE, |pg| {
            condition_is(pg, "Ready", "True")?;
            let st = pg.status.as_ref().ok_or("no status")?;
            let names: Vec<&str> = st.instances.iter().map(|i| i.name.as_str()).collect();
            if names != ["db-0"] || st.ready_instances != 1 {
                return Err(format!("instances {names:?}, ready {}", st.ready_instances));
            }
            match st.current_primary.as_deref() {
                Some("db-0") => Ok(()),
                other => Err(format!("currentPrimary {other:?}")),
            }
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let deleted_as_primary = watcher.await?;
    settled?;
    ensure!(
        deleted_as_primary.is_empty(),
        "{deleted_as_primary:?} deleted while still the primary: scaling down must switch over \
         to a remaining instance first"
    );
    eventually("only pod db-0 left", SETTLE, || async {
        let pods = env.pods("db").await.map_err(|e| format!("{e:#}"))?;
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        if names == ["db-0"] {
            Ok(())
        } else {
            Err(format!("pods {names:?}"))
        }
    })
    .await?;
    let rows = eventually("the 200 rows on db-0 through db-rw", FAILOVER, || async {
        count_rows(env, "db", "db-rw", "kept", false).await
    })
    .await?;
    ensure!(rows == 200, "{rows} of 200 rows left after scaling down");

    // PVCs of removed ordinals follow whenScaled (default Delete).
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    eventually(
        "PVCs data-db-1 and data-db-2 deleted (whenScaled: Delete)",
        SETTLE,
        || async {
            let mut left = vec![];
            for name in ["data-db-1", "data-db-2"] {
                if pvcs
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push(name);
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still there: {left:?}"))
            }
        },
    )
    .await?;
    ensure!(
        pvcs.get_opt("data-db-0").await?.is_some(),
        "the PVC of db-0 is gone"
    );

    env.patch_spec("db", serde_json::json!({"instances": 3}))
        .await?;
    env.wait_ready("db", 3, SETTLE).await?;
    eventually(
        "2 replicas streaming from the primary",
        FAILOVER,
        || async {
            let c = env
                .connect("db-rw", &su, Duration::from_secs(5))
                .await
                .map_err(|e| format!("{e:#}"))?;
            let n: i64 = c
                .query_one(
                    "select count(*) from pg_stat_replication where state = 'streaming'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{n} streaming"))
            }
        },
    )
    .await?;
    eventually("the 200 rows through db-ro", FAILOVER, || async {
        match count_rows(env, "db", "db-ro", "kept", true).await? {
            200 => Ok(()),
            n => Err(format!("{n} rows on the replica")),
        }
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. A declared role logs in with its Secret
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_declared_role_logs_in_with_its_secret_and_pg_hba_changes_apply_live() {
    let env = Env::start("roles").await;
    let result = declared_role_logs_in(&env).await;
    env.finish(result).await;
}

async fn declared_role_logs_in(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .spec("roles: [{name: app, login: true}]")
            .spec("databases: [{name: app, owner: app}]")
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;
    env.wait_cluster("db", "RolesAndDatabasesReady=True", SETTLE, |pg| {
        condition_is(pg, "RolesAndDatabasesReady", "True")
    })
    .await?;

    let secret = env.secret("db-app-credentials").await?;
    for key in [
        "username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass",
    ] {
        secret_value(&secret, key).with_context(|| format!("secret db-app-credentials: {key}"))?;
    }
    let creds = env.credentials("db-app-credentials").await?;
    ensure!(creds.username == "app", "username {}", creds.username);
    ensure!(creds.dbname == "app", "dbname {}", creds.dbname);
    let port = secret_value(&secret, "port")?;
    ensure!(port == "5432", "port {port}");
    let uri = secret_value(&secret, "uri")?;
    ensure!(
        uri.starts_with("postgresql://app:") || uri.starts_with("postgres://app:"),
        "uri does not log in as app: {}",
        uri.split('@').next_back().unwrap_or_default()
    );
    let jdbc = secret_value(&secret, "jdbc-uri")?;
    ensure!(
        jdbc.starts_with("jdbc:postgresql://"),
        "jdbc-uri {}",
        jdbc.split('?').next().unwrap_or_default()
    );

    // The Secret's host is a cluster DNS name; the host of the test reaches the ClusterIP.
    let client = env.connect("db-rw", &creds, FAILOVER).await?;
    let row = client
        .query_one("select current_user::text, current_database()::text", &[])
        .await?;
    let (user, db): (String, String) = (row.get(0), row.get(1));
    ensure!(
        user == "app" && db == "app",
        "logged in as {user} to {db}, want app to app"
    );
    client
        .batch_execute("create table mine (x int); insert into mine values (1)")
        .await
        .context("the owner of database app creating a table in it")?;

    // Extra pg_hba lines live in Patroni's dynamic configuration: a `reject` line keeps the
    // role out within a loop, without a restart (the open connection stays), and its removal
    // lets the role back in.
    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"pgHba": ["host all app all reject"]}}),
    )
    .await?;
    let config = env.pg_config("db-rw", &creds).await?;
    eventually("pg_hba.conf to reject app", SETTLE, || async {
        match connect(&config).await {
            Ok(_) => Err("app still logs in".to_owned()),
            Err(e) if format!("{e:#}").contains("pg_hba.conf rejects") => Ok(()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    client
        .query_one("select count(*) from mine", &[])
        .await
        .context("the connection opened before the reject line (a reload keeps it)")?;
    env.patch_spec("db", serde_json::json!({"postgresql": {"pgHba": []}}))
        .await?;
    env.connect("db-rw", &creds, SETTLE)
        .await
        .context("app logging in again once the reject line is gone")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Storage expansion refused by the StorageClass
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn growing_storage_on_a_class_without_expansion_is_reported_and_changes_nothing() {
    let env = Env::start("storage").await;
    let result = storage_expansion_refused(&env).await;
    env.finish(result).await;
}

async fn storage_expansion_refused(env: &Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").yaml())?;
    env.wait_ready("db", 1, CREATE).await?;
    env.patch_spec("db", serde_json::json!({"storage": {"size": "2Gi"}}))
        .await?;
    env.wait_cluster(
        "db",
        "StorageResized=False, reason ExpansionNotSupported, naming local-path",
        SETTLE,
        |pg| {
            condition_is(pg, "StorageResized", "False")?;
            let c = pg
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "StorageResized"))
                .ok_or("no StorageResized")?;
            if c.reason != "ExpansionNotSupported" {
                return Err(format!("reason {}", c.reason));
            }
            if !c.message.contains("local-path") {
                return Err(format!(
                    "message does not name the StorageClass: {}",
                    c.message
                ));
            }
            Ok(())
        },
    )
    .await?;
    env.wait_ready("db", 1, FAILOVER).await?;

    let pvc = env
        .api::<PersistentVolumeClaim>()
        .get("data-db-0")
        .await
        .context("PVC data-db-0")?;
    let requested = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    ensure!(
        requested.as_deref() == Some("1Gi"),
        "PVC data-db-0 requests {requested:?}, want 1Gi unchanged"
    );
    let capacity = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone());
    ensure!(
        capacity.as_deref() == Some("1Gi"),
        "PVC data-db-0 capacity {capacity:?}, want 1Gi"
    );
    let su = env.superuser("db").await?;
    let client = env.connect("db-rw", &su, FAILOVER).await?;
    client.batch_execute("select 1").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Status from Patroni
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn status_shows_patronis_view_of_every_instance() {
    let env = Env::start("status").await;
    let result = status_from_patroni(&env).await;
    env.finish(result).await;
}

async fn status_from_patroni(env: &Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(3).yaml())?;
    env.wait_ready("db", 3, CREATE).await?;
    env.wait_cluster(
        "db",
        "state, timeline, postgresVersion and (replicas) lagBytes on every instance",
        Duration::from_secs(60),
        patroni_view_complete,
    )
    .await?;
    // The toolkit's exec, which the backup and upgrade controllers drive tools with: output
    // and exit codes of commands in an instance's container.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let ready = exec(
        &pods,
        "db-0",
        "postgres",
        &["pg_isready", "-h", "127.0.0.1"],
    )
    .await?;
    ensure!(
        ready.success() && ready.stdout.contains("accepting connections"),
        "pg_isready in db-0: {ready:?}"
    );
    let failed = exec(
        &pods,
        "db-0",
        "postgres",
        &["sh", "-c", "echo oops >&2; exit 3"],
    )
    .await?;
    ensure!(
        failed.exit_code == 3 && failed.stderr.trim() == "oops",
        "a failing command: {failed:?}"
    );
    Ok(())
}

fn patroni_view_complete(pg: &PostgresCluster) -> Result<(), String> {
    let st = pg.status.as_ref().ok_or("no status")?;
    if st.instances.len() != 3 {
        return Err(format!("{} instances", st.instances.len()));
    }
    let primary = st.current_primary.as_deref().ok_or("no currentPrimary")?;
    for i in &st.instances {
        let state = i.state.as_deref().unwrap_or_default();
        if !matches!(state, "running" | "streaming") {
            return Err(format!("{}: state {:?}", i.name, i.state));
        }
        if i.timeline.is_none_or(|t| t < 1) {
            return Err(format!("{}: timeline {:?}", i.name, i.timeline));
        }
        if !i
            .postgres_version
            .as_deref()
            .is_some_and(|v| v.starts_with("17"))
        {
            return Err(format!(
                "{}: postgresVersion {:?}",
                i.name, i.postgres_version
            ));
        }
        if i.name != primary && i.lag_bytes.is_none_or(|l| l < 0) {
            return Err(format!("replica {}: lagBytes {:?}", i.name, i.lag_bytes));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_initdb_locale_the_image_lacks_is_explained_on_the_cluster() {
    let env = Env::start("bad-locale").await;
    let result = bad_locale(&env).await;
    env.finish(result).await;
}

/// Patroni gives up when initdb fails and the container restarts until the kubelet backs off:
/// the cluster's Ready condition carries the kubelet's reason and initdb's own error line
/// (from the container's last log lines), and a Warning Event says it once.
async fn bad_locale(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .spec("bootstrap: {initdb: {locale: xx_XX.UTF-8}}")
            .yaml(),
    )?;
    env.wait_cluster(
        "db",
        "Ready=False explaining the crash loop with initdb's error",
        SETTLE,
        |pg| {
            let c = pg
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .ok_or("no Ready")?;
            (c.status == "False"
                && c.message
                    .contains("db-0: CrashLoopBackOff: container postgres: exit code")
                && c.message.contains("xx_XX"))
            .then_some(())
            .ok_or(format!("Ready={} {}: {}", c.status, c.reason, c.message))
        },
    )
    .await?;
    let events = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=CrashLoopBackOff",
        "-o",
        "name",
    ])?;
    ensure!(
        !events.trim().is_empty(),
        "no CrashLoopBackOff Event on the cluster"
    );
    Ok(())
}

#[tokio::test]
async fn a_library_the_image_lacks_is_explained_on_the_cluster_and_the_fix_recovers_it() {
    let env = Env::start("missing-library").await;
    let result = missing_library(&env).await;
    env.finish(result).await;
}

/// A library in shared_preload_libraries that the image lacks passes every check (a custom
/// image may have it) and fails only when PostgreSQL restarts for it. Patroni stays up and the
/// pod runs, unready: the cluster's Ready condition carries Patroni's state and PostgreSQL's
/// FATAL line from the running container's log, a Warning Event says it once, and taking the
/// library out brings the instance back.
async fn missing_library(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .spec("postgresql: {version: 17}")
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;
    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"parameters": {"shared_preload_libraries": "pg_stat_statements,not_in_the_image"}}}),
    )
    .await?;
    env.wait_cluster(
        "db",
        "Ready=False with Patroni's state and PostgreSQL's FATAL line",
        SETTLE,
        |pg| {
            let c = crate::harness::condition(pg, "Ready").map_err(|e| e.to_string())?;
            (c.status == "False"
                && c.message
                    .contains("db-0: PostgresNotRunning: Patroni: PostgreSQL")
                && c.message.contains("FATAL")
                && c.message.contains("not_in_the_image"))
            .then_some(())
            .ok_or(format!("Ready={} {}: {}", c.status, c.reason, c.message))
        },
    )
    .await?;
    let events = env.cluster_event_notes("PostgresNotRunning")?;
    ensure!(
        events.contains("not_in_the_image"),
        "no PostgresNotRunning Event naming the library: {events:?}"
    );

    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"parameters": {"shared_preload_libraries": "pg_stat_statements"}}}),
    )
    .await?;
    env.wait_ready("db", 1, SETTLE).await?;
    let creds = env.superuser("db").await?;
    let client = env.connect("db-rw", &creds, SETTLE).await?;
    let loaded: String = client
        .query_one("select current_setting('shared_preload_libraries')", &[])
        .await?
        .get(0);
    ensure!(
        loaded == "pg_stat_statements",
        "shared_preload_libraries = {loaded}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. Parameters PostgreSQL or Patroni would not take
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_parameter_postgresql_would_refuse_is_held_back_and_explained() {
    let env = Env::start("parameters").await;
    let result = refused_parameters(&env).await;
    env.finish(result).await;
}

/// A typo in a name never gets past `kubectl apply`. A value out of range gets past it
/// (numbers are the controller's to check): Patroni would clamp max_connections=0 to 1 and
/// restart every instance; instead the cluster says which parameter and why, with a Warning
/// Event, the instance keeps its value, and the valid change beside it applies.
async fn refused_parameters(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .spec("postgresql: {version: 17, parameters: {work_mem: 8MB}}")
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;
    env.wait_cluster("db", "ParametersAccepted=True", SETTLE, |pg| {
        condition_is(pg, "ParametersAccepted", "True")
    })
    .await?;

    let typo = ClusterYaml::new("db")
        .spec("postgresql: {version: 17, parameters: {work_mem: 8MB, shared_buffer: 1GB}}")
        .yaml();
    let Err(refused) = env.apply(&typo) else {
        bail!("a misspelled parameter was admitted");
    };
    ensure!(
        format!("{refused:#}")
            .contains("a name is not a parameter of this PostgreSQL major version"),
        "kubectl apply said: {refused:#}"
    );

    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"parameters": {"work_mem": "16MB", "max_connections": "0"}}}),
    )
    .await?;
    env.wait_cluster(
        "db",
        "ParametersAccepted=False naming max_connections",
        SETTLE,
        |pg| {
            let c =
                crate::harness::condition(pg, "ParametersAccepted").map_err(|e| e.to_string())?;
            (c.status == "False"
                && c.reason == "InvalidParameters"
                && c.message
                    .starts_with("max_connections: \"0\" is not valid: at least 1;"))
            .then_some(())
            .ok_or(format!("{} {}: {}", c.status, c.reason, c.message))
        },
    )
    .await?;
    let events = env.cluster_event_notes("InvalidParameters")?;
    ensure!(
        events.contains("max_connections"),
        "no InvalidParameters Event naming max_connections: {events:?}"
    );

    let creds = env.superuser("db").await?;
    let client = env.connect("db-rw", &creds, SETTLE).await?;
    // A reload reaches new sessions: each probe asks through a fresh one.
    eventually("work_mem to reach 16MB", SETTLE, || async {
        let fresh = env
            .connect("db-rw", &creds, SETTLE)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let now: String = fresh
            .query_one("select current_setting('work_mem')", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        (now == "16MB")
            .then_some(())
            .ok_or(format!("work_mem {now}"))
    })
    .await?;
    let row = client
        .query_one(
            "select current_setting('max_connections'), \
             exists (select from pg_settings where pending_restart)",
            &[],
        )
        .await?;
    let (max_connections, pending): (String, bool) = (row.get(0), row.get(1));
    ensure!(
        max_connections == "100" && !pending,
        "max_connections {max_connections}, pending restart {pending}: the refused value reached PostgreSQL"
    );
    let live = env.patronictl("db-0", &["show-config"])?;
    ensure!(
        !live.contains("max_connections"),
        "Patroni's dynamic configuration carries max_connections: {live}"
    );
    Ok(())
}
