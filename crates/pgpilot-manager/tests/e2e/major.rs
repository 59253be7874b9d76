//! Major upgrades (PostgreSQL 15 → 17) with pg_upgrade, on real volumes:
//!
//! - a three-instance cluster with synchronous replication, data, extensions and a backup
//!   repository, under a sequence writer: a pre-upgrade backup, pg_upgrade on the primary's volume, the replicas
//!   cloned again; every row present afterwards (a checksum per table), no acknowledged write
//!   lost, the replicas streaming on 17, the extensions updated, statistics rebuilt, archiving
//!   and backups going on in the upgraded stanza; then the way back after the point of no
//!   return: a new cluster on 15 restored from the pre-upgrade backup, with the same rows;
//! - a `pg_upgrade --check` failure (a column of type aclitem, whose format changed in 16)
//!   leaves 15 running with a condition that names it; an abort after pg_upgrade ran, before
//!   the new primary started, puts the old data directory back and 15 runs again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use pgpilot_api::upgrade::{PostgresUpgradeStatus, StepState, UpgradePhase};
use pgpilot_api::{PostgresBackup, PostgresCluster, PostgresUpgrade};
use pgpilot_testkit::writer::Writer;

use crate::harness::{ClusterYaml, Env, condition, condition_is, eventually};
use crate::minio::Minio;
use crate::roll::no_acknowledged_write_lost;

const FROM: &str = "localhost/pgpilot/postgres:15.20";
const TO: &str = "localhost/pgpilot/postgres:17";
const CREATE: Duration = Duration::from_secs(300);
/// A backup, a stop, pg_upgrade, a start and two clones on a loaded shared node.
const UPGRADE: Duration = Duration::from_secs(900);
const ARCHIVE: Duration = Duration::from_secs(240);
/// Tables whose content is compared before and after.
const TABLES: [&str; 2] = ["accounts", "notes"];

#[tokio::test]
async fn a_major_upgrade_keeps_every_row_reclones_the_replicas_and_a_restore_goes_back() {
    let env = Env::start_controllers("major", "cluster,backup,upgrade").await;
    let result = major(&env).await;
    env.finish(result).await;
}

#[tokio::test]
async fn a_failed_check_and_an_abort_before_the_new_primary_leave_15_running() {
    let env = Env::start_controllers("major-abort", "cluster,upgrade").await;
    let result = check_and_abort(&env).await;
    env.finish(result).await;
}

/// Tables with data, and extensions whose versions differ between 15 and 17.
async fn fill(env: &Env, cluster: &str) -> Result<()> {
    let client = env
        .connect(
            &format!("{cluster}-rw"),
            &env.superuser(cluster).await?,
            CREATE,
        )
        .await?;
    client
        .batch_execute(
            "CREATE EXTENSION pg_stat_statements;
             CREATE EXTENSION hstore;
             CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
             INSERT INTO accounts SELECT i, md5(i::text), i * 1.5 FROM generate_series(1, 200000) i;
             CREATE TABLE notes (id serial PRIMARY KEY, body text, tags hstore);
             INSERT INTO notes (body, tags)
               SELECT repeat(md5(i::text), 4), hstore('n', i::text) FROM generate_series(1, 20000) i;
             ANALYZE;",
        )
        .await?;
    Ok(())
}

/// md5 of each table's rows in key order.
async fn checksums(env: &Env, cluster: &str) -> Result<BTreeMap<String, String>> {
    let client = env
        .connect(
            &format!("{cluster}-rw"),
            &env.superuser(cluster).await?,
            CREATE,
        )
        .await?;
    let mut out = BTreeMap::new();
    for t in TABLES {
        let row = client
            .query_one(
                &format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {t} t"),
                &[],
            )
            .await?;
        out.insert(t.to_owned(), row.get::<_, String>(0));
    }
    Ok(out)
}

async fn server_version(env: &Env, cluster: &str) -> Result<String> {
    let client = env
        .connect(
            &format!("{cluster}-rw"),
            &env.superuser(cluster).await?,
            CREATE,
        )
        .await?;
    Ok(client.query_one("SHOW server_version", &[]).await?.get(0))
}

/// The one PostgresUpgrade of cluster `db`.
async fn the_upgrade(env: &Env) -> Result<String> {
    let upgrades = env.api::<PostgresUpgrade>();
    eventually(
        "a PostgresUpgrade for db",
        Duration::from_secs(60),
        || async {
            let found = upgrades
                .list(&ListParams::default().labels("pgpilot.io/cluster=db"))
                .await
                .map_err(|e| e.to_string())?;
            match found.items.as_slice() {
                [u] => Ok(u.metadata.name.clone().unwrap_or_default()),
                other => Err(format!("{} upgrades", other.len())),
            }
        },
    )
    .await
}

fn steps(st: &PostgresUpgradeStatus) -> Vec<String> {
    st.steps
        .iter()
        .map(|s| format!("{}={:?}", s.name, s.state))
        .collect()
}

/// Waits until upgrade `name` reaches `phase`; any other final phase fails at once.
async fn wait_phase(env: &Env, name: &str, phase: UpgradePhase) -> Result<PostgresUpgradeStatus> {
    let upgrades = env.api::<PostgresUpgrade>();
    let started = Instant::now();
    loop {
        let st = upgrades.get(name).await?.status.unwrap_or_default();
        if st.phase == Some(phase) {
            return Ok(st);
        }
        let last = matches!(
            st.phase,
            Some(UpgradePhase::Succeeded | UpgradePhase::Failed | UpgradePhase::Aborted)
        );
        ensure!(
            !last && started.elapsed() < UPGRADE,
            "PostgresUpgrade {name} is {:?}, not {phase:?}, after {:?}: steps {:?}; conditions {:?}",
            st.phase,
            started.elapsed(),
            steps(&st),
            st.conditions
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every instance Ready, reporting a PostgreSQL `major`.x version, replicas streaming.
async fn all_on(
    env: &Env,
    cluster: &str,
    instances: usize,
    major: &str,
) -> Result<PostgresCluster> {
    env.wait_cluster(
        cluster,
        &format!("{instances} instances on PostgreSQL {major}, replicas streaming"),
        UPGRADE,
        |pg| {
            let st = pg.status.as_ref().ok_or("no status".to_owned())?;
            let primary = st.current_primary.as_deref();
            let good = st.instances.len() == instances
                && st.instances.iter().all(|i| {
                    i.ready
                        && i.postgres_version
                            .as_deref()
                            .is_some_and(|v| v.starts_with(&format!("{major}.")))
                        && (Some(i.name.as_str()) == primary
                            || i.state.as_deref() == Some("streaming"))
                });
            good.then_some(()).ok_or_else(|| {
                format!(
                    "{:?}",
                    st.instances
                        .iter()
                        .map(|i| (&i.name, i.ready, &i.postgres_version, &i.state))
                        .collect::<Vec<_>>()
                )
            })
        },
    )
    .await
}

async fn major(env: &Env) -> Result<()> {
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new("db")
            .instances(3)
            .postgres(15, FROM)
            // As in examples/cluster.yaml: Patroni's synchronous state of the old cluster
            // must not keep the upgraded primary from leading.
            .spec("replication: {synchronous: {mode: Preferred, numberOfStandbys: 1}}")
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    env.wait_ready("db", 3, CREATE).await?;
    env.wait_cluster("db", "ContinuousArchiving=True", ARCHIVE, |pg| {
        condition_is(pg, "ContinuousArchiving", "True")
    })
    .await?;
    fill(env, "db").await?;
    let before = checksums(env, "db").await?;

    let mut config = env.rw_writer("db").await?;
    config.interval = Duration::from_millis(50);
    let writer = Writer::start(config);
    ensure!(
        writer
            .wait_until(Duration::from_secs(60), |acks| acks.len() >= 5)
            .await,
        "the writer did not get going"
    );
    let changed = Instant::now();
    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"version": 17, "image": TO}}),
    )
    .await?;
    let name = the_upgrade(env).await?;
    // While the limit keeps instances stopped, the cluster says so and names the upgrade.
    let limited = env
        .wait_cluster("db", "Progressing=InstancesLimited", CREATE, |pg| {
            let c = condition(pg, "Progressing").map_err(|e| e.to_string())?;
            (c.reason == "InstancesLimited" && c.message.contains(&name))
                .then_some(())
                .ok_or_else(|| format!("Progressing {}: {}", c.reason, c.message))
        })
        .await;
    let done = wait_phase(env, &name, UpgradePhase::Succeeded).await;
    let upgraded_in = changed.elapsed();
    let done = match done.and_then(|d| limited.map(|_| d)) {
        Ok(d) => d,
        Err(e) => {
            writer.stop().await;
            return Err(e);
        }
    };
    eprintln!(
        "major upgrade 15 → 17 in {upgraded_in:?}: {:?}",
        steps(&done)
    );
    no_acknowledged_write_lost(env, writer, "major upgrade", changed).await?;

    // Every step, in order; the backup first.
    for s in &done.steps {
        let want = if s.name == "approval" || s.name == "maintenance-window" {
            StepState::Skipped
        } else {
            StepState::Done
        };
        ensure!(
            s.state == want,
            "step {} is {:?}: {:?}",
            s.name,
            s.state,
            steps(&done)
        );
    }
    ensure!(done.from_version == Some(15), "{done:?}");

    // Every row; replicas cloned from the new primary; extensions and statistics.
    ensure!(checksums(env, "db").await? == before, "the tables changed");
    let pg = all_on(env, "db", 3, "17").await?;
    let version_current = condition(&pg, "VersionCurrent")?;
    ensure!(version_current.status == "True", "{version_current:?}");
    let client = env
        .connect("db-rw", &env.superuser("db").await?, CREATE)
        .await?;
    for row in client
        .query(
            "SELECT e.extname, e.extversion, a.default_version FROM pg_extension e
             JOIN pg_available_extensions a ON a.name = e.extname
             WHERE e.extname IN ('pg_stat_statements', 'hstore') ORDER BY 1",
            &[],
        )
        .await?
    {
        let (ext, have, want): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        ensure!(
            have == want,
            "{ext} is {have}, 17 ships {want}: not updated"
        );
    }
    let stats: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'accounts'",
            &[],
        )
        .await?
        .get(0);
    ensure!(stats > 0, "no statistics on accounts: vacuumdb did not run");
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels("pgpilot.io/cluster=db,pgpilot.io/component=instance"))
        .await?;
    for p in &pods.items {
        let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone());
        ensure!(
            image.as_deref() == Some(TO),
            "{:?} runs {image:?}",
            p.metadata.name
        );
    }
    let annotations = env
        .api::<PostgresCluster>()
        .get("db")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    ensure!(
        !annotations
            .keys()
            .any(|k| k.starts_with("pgpilot.io/upgrade") || k == "pgpilot.io/instance-limit"),
        "{annotations:?}"
    );

    // The upgraded stanza archives and backs up again.
    env.wait_cluster("db", "ContinuousArchiving=True on 17", ARCHIVE, |pg| {
        condition_is(pg, "ContinuousArchiving", "True")
    })
    .await?;
    crate::backup::backup_of(env, "db", "after", "Full").await?;

    // The way back once the new primary has run: a cluster on 15 from the pre-upgrade backup.
    let pre = done
        .backup
        .clone()
        .context("no pre-upgrade backup in status")?;
    let label = env
        .api::<PostgresBackup>()
        .get(&pre)
        .await?
        .status
        .and_then(|s| s.backup_id)
        .context("the pre-upgrade backup has no label")?;
    env.apply(
        &ClusterYaml::new("back")
            .postgres(15, FROM)
            .spec(&format!(
                "bootstrap: {{restore: {{source: {{name: db}}, repository: {{s3: {}}}, backupId: '{label}'}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    env.wait_ready("back", 1, UPGRADE).await?;
    let version = server_version(env, "back").await?;
    ensure!(version.starts_with("15."), "the restore runs {version}");
    ensure!(
        checksums(env, "back").await? == before,
        "the restore of the pre-upgrade backup lacks rows"
    );
    Ok(())
}

async fn check_and_abort(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .postgres(15, FROM)
            .yaml(),
    )?;
    env.wait_ready("db", 2, CREATE).await?;
    fill(env, "db").await?;
    let client = env
        .connect("db-rw", &env.superuser("db").await?, CREATE)
        .await?;
    client
        .batch_execute(
            "CREATE TABLE grants (id int PRIMARY KEY, acl aclitem);
             INSERT INTO grants VALUES (1, 'postgres=r/postgres');",
        )
        .await?;
    drop(client);
    let before = checksums(env, "db").await?;

    // pg_upgrade --check refuses the aclitem column: 15 runs again, on its data.
    env.patch_spec(
        "db",
        serde_json::json!({"postgresql": {"version": 17, "image": TO}}),
    )
    .await?;
    let name = the_upgrade(env).await?;
    let failed = wait_phase(env, &name, UpgradePhase::Failed).await?;
    let progressing = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .context("no Progressing")?;
    ensure!(
        progressing.reason == "CheckFailed"
            && progressing.message.contains("aclitem")
            && progressing.message.contains("grants"),
        "{progressing:?}"
    );
    let pg = all_on(env, "db", 2, "15").await?;
    let version_current = condition(&pg, "VersionCurrent")?;
    ensure!(version_current.status == "False", "{version_current:?}");
    ensure!(checksums(env, "db").await? == before, "the tables changed");

    // Without the column, again; aborted while pg_upgrade runs: the directories are put back.
    let client = env
        .connect("db-rw", &env.superuser("db").await?, CREATE)
        .await?;
    client.batch_execute("DROP TABLE grants").await?;
    drop(client);
    env.api::<PostgresUpgrade>()
        .delete(&name, &DeleteParams::default())
        .await?;
    let upgrades = env.api::<PostgresUpgrade>();
    eventually(
        "the new upgrade's pg-upgrade step running",
        UPGRADE,
        || async {
            let u = upgrades.get(&name).await.map_err(|e| e.to_string())?;
            let st = u.status.unwrap_or_default();
            let running = st
                .steps
                .iter()
                .any(|s| s.name == "pg-upgrade" && s.state == StepState::Running);
            running.then_some(()).ok_or(format!("{:?}", steps(&st)))
        },
    )
    .await?;
    upgrades
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"abort": true}})),
        )
        .await?;
    let aborted = wait_phase(env, &name, UpgradePhase::Aborted).await?;
    let start = aborted
        .steps
        .iter()
        .find(|s| s.name == "start-primary")
        .context("no start-primary step")?;
    ensure!(start.state == StepState::Skipped, "{:?}", steps(&aborted));
    // pg_upgrade finished before the abort took effect: its directories were swapped back.
    let jobs = env.api::<Job>();
    let pg_upgrade = jobs.get(&format!("{name}-pg-upgrade")).await?;
    if pg_upgrade.status.as_ref().and_then(|s| s.succeeded) == Some(1) {
        // The controller goes on when the revert pod succeeded; the Job counts it a moment
        // later.
        let revert = format!("{name}-revert");
        eventually(
            &format!("Job {revert} succeeded"),
            Duration::from_secs(60),
            || async {
                let status = jobs.get(&revert).await.map_err(|e| e.to_string())?.status;
                (status.as_ref().and_then(|s| s.succeeded) == Some(1))
                    .then_some(())
                    .ok_or(format!("{status:?}"))
            },
        )
        .await?;
    }
    all_on(env, "db", 2, "15").await?;
    ensure!(checksums(env, "db").await? == before, "the tables changed");
    Ok(())
}
