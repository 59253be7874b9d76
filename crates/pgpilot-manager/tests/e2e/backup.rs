//! Continuous archiving: clusters with `spec.backup` archive their WAL with pgBackRest to a
//! real MinIO over TLS (with a CA the test makes); the backup controller creates and checks
//! the stanza through the primary's pgBackRest TLS server and reports the archive from the
//! primary's own view. A wrong secret key is refused by MinIO and named as the reason, while
//! the database serves on and nothing restarts.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use pgpilot_api::backup::{BackupPhase, PostgresBackupStatus};
use pgpilot_api::{PostgresBackup, PostgresCluster};

use crate::harness::{ClusterYaml, Env, condition_is, connect, eventually, instance_config};
use crate::minio::Minio;

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// The stanza Job, then a segment through the asynchronous pusher.
const ARCHIVE: Duration = Duration::from_secs(240);
/// A backup of a small database, Job start included.
const BACKUP: Duration = Duration::from_secs(180);

#[tokio::test]
async fn wal_reaches_minio_over_tls_and_a_refused_key_is_named_as_the_reason() {
    let env = Env::start_controllers("archive", "cluster,backup").await;
    let result = archiving(&env).await;
    env.finish(result).await;
}

/// A cluster archiving to `minio`, keeping one full backup (and what depends on it).
fn backed_up(name: &str, minio: &Minio, secret: &str) -> String {
    ClusterYaml::new(name)
        .spec(&format!(
            "backup: {{repository: {{s3: {}}}, retention: {{full: 1}}}}",
            minio.repository("backups", secret)
        ))
        .yaml()
}

fn archiving_reason(pg: &PostgresCluster) -> Option<(String, String, String)> {
    let c = pg
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ContinuousArchiving")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn last_archived(pg: &PostgresCluster) -> Option<String> {
    pg.status
        .as_ref()?
        .backup
        .as_ref()?
        .last_archived_wal
        .clone()
}

async fn archiving(env: &Env) -> Result<()> {
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    minio.credentials_secret(env, "s3-wrong", true)?;
    env.apply(&backed_up("good", &minio, "s3"))?;
    env.apply(&backed_up("bad", &minio, "s3-wrong"))?;

    env.wait_ready("good", 1, CREATE).await?;
    let pg = env
        .wait_cluster("good", "ContinuousArchiving=True", ARCHIVE, |pg| {
            condition_is(pg, "ContinuousArchiving", "True")?;
            last_archived(pg)
                .map(drop)
                .ok_or("no lastArchivedWal".into())
        })
        .await?;
    let st = pg.status.clone().context("no status")?;
    // The cluster controller drops its NoBackupController note on its next look (periodic).
    env.wait_cluster(
        "good",
        "no BackupsHandled condition",
        ARCHIVE,
        |pg| match pg
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == "BackupsHandled")
        {
            None => Ok(()),
            Some(c) => Err(format!("BackupsHandled={} ({})", c.status, c.reason)),
        },
    )
    .await?;
    let backup = st.backup.context("no status.backup")?;
    ensure!(backup.stanza.as_deref() == Some(&format!("{}-good", env.ns)[..]));
    ensure!(backup.last_recoverability_point.is_some());

    // A segment closed now reaches the archive, and the status follows.
    let primary = st.current_primary.context("no primary")?;
    let pod = env.api::<Pod>().get(&primary).await?;
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .context("primary has no IP")?;
    let client = connect(&instance_config(&ip, &env.superuser("good").await?)).await?;
    client
        .batch_execute(
            "CREATE TABLE marks (at timestamptz DEFAULT now()); INSERT INTO marks DEFAULT VALUES",
        )
        .await?;
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    env.wait_cluster(
        "good",
        &format!("{segment} archived"),
        ARCHIVE,
        |pg| match last_archived(pg) {
            Some(wal) if wal >= segment => Ok(()),
            other => Err(format!("lastArchivedWal {other:?}")),
        },
    )
    .await?;

    // A full backup, then an incremental one after more rows: both complete, with what
    // pgBackRest reported about them.
    let full = take_backup(env, "good-full", "Full").await?;
    ensure!(
        full.backup_id.as_deref().is_some_and(|l| l.ends_with('F')),
        "{full:?}"
    );
    client
        .batch_execute("INSERT INTO marks SELECT now() FROM generate_series(1, 1000)")
        .await?;
    let incr = take_backup(env, "good-incr", "Incremental").await?;
    ensure!(
        incr.backup_id.as_deref().is_some_and(|l| l.ends_with('I')),
        "{incr:?}"
    );
    ensure!(
        incr.wal_start >= full.wal_stop,
        "the incremental backup starts before the full one ended: {incr:?} after {full:?}"
    );

    ensure!(
        incr.recoverable_from == full.stop_time,
        "the full backup is the repository's oldest: {incr:?}"
    );
    env.wait_cluster("good", "status.lastBackup good-incr", ARCHIVE, |pg| {
        let st = pg.status.as_ref();
        let last = st.and_then(|s| s.last_backup.as_ref());
        let first = st.and_then(|s| s.backup.as_ref()?.first_recoverability_point.clone());
        match last {
            Some(l) if l.name == "good-incr" && l.backup_id == incr.backup_id => {
                (first == full.stop_time).then_some(()).ok_or(format!(
                    "firstRecoverabilityPoint {first:?}, want the full backup's end"
                ))
            }
            other => Err(format!("lastBackup {other:?}")),
        }
    })
    .await?;

    // Retention keeps one full backup: a second one expires the first and its incremental,
    // and the repository's oldest backup is now the new one.
    let full2 = take_backup(env, "good-full-2", "Full").await?;
    ensure!(
        full2.recoverable_from == full2.stop_time,
        "retention (full: 1) should have expired the first full backup: {full2:?}"
    );

    // The metrics say the same as the status.
    let stop = full2.stop_time.clone().context("no stop time")?;
    ensure!(
        env.cluster_metric("pgpilot_backup_last_success_timestamp_seconds", "good")
            .await?
            == stop.0.as_second() as f64
    );
    ensure!(
        env.cluster_metric("pgpilot_backup_last_size_bytes", "good")
            .await?
            == full2.size_bytes.unwrap_or(0) as f64
    );
    ensure!(
        env.cluster_metric("pgpilot_wal_last_archived_timestamp_seconds", "good")
            .await?
            > 0.0
    );

    // The wrong key: MinIO refuses it, the condition says so and names the Secret; the
    // database serves regardless.
    let pg = env
        .wait_cluster(
            "bad",
            "ContinuousArchiving=False: AccessDenied",
            ARCHIVE,
            |pg| match archiving_reason(pg) {
                Some((s, r, _)) if s == "False" && r == "AccessDenied" => Ok(()),
                other => Err(format!("ContinuousArchiving {other:?}")),
            },
        )
        .await?;
    let (_, _, message) = archiving_reason(&pg).context("no condition")?;
    ensure!(message.contains("Secret s3-wrong"), "{message}");
    env.wait_ready("bad", 1, CREATE).await?;

    // Nothing crash-loops: no container of either cluster's instances restarted.
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels("pgpilot.io/component=instance"))
        .await?;
    for pod in &pods.items {
        for c in pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            ensure!(
                c.restart_count == 0,
                "container {} of {} restarted {} time(s)",
                c.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                c.restart_count
            );
        }
    }
    Ok(())
}

/// Creates PostgresBackup `name` of cluster `good` and waits until it completed.
async fn take_backup(env: &Env, name: &str, kind: &str) -> Result<PostgresBackupStatus> {
    backup_of(env, "good", name, kind).await
}

/// Creates PostgresBackup `name` of `cluster` and waits until it completed.
pub(crate) async fn backup_of(
    env: &Env,
    cluster: &str,
    name: &str,
    kind: &str,
) -> Result<PostgresBackupStatus> {
    env.apply(&format!(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresBackup\nmetadata: {{name: {name}}}\nspec: {{cluster: {{name: {cluster}}}, type: {kind}}}\n"
    ))?;
    let api = env.api::<PostgresBackup>();
    let status = eventually(&format!("{name} Completed"), BACKUP, || async {
        let b = api.get(name).await.map_err(|e| e.to_string())?;
        let st = b.status.unwrap_or_default();
        match st.phase {
            Some(BackupPhase::Completed) => Ok(st),
            Some(BackupPhase::Failed) => Err(format!("FAILED: {:?}", st.error)),
            other => Err(format!("phase {other:?}: {:?}", st.error)),
        }
    })
    .await?;
    for field in [&status.start_time, &status.stop_time] {
        ensure!(field.is_some(), "{status:?}");
    }
    ensure!(
        status.size_bytes.unwrap_or(0) > 0
            && status.wal_start.is_some()
            && status.lsn_stop.is_some(),
        "{status:?}"
    );
    // pgBackRest's report as the Job left it (a fixture for the unit tests, when refreshed).
    let job = status.job.clone().context("no job in status")?;
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    for p in pods.items {
        if let Some(m) = p
            .status
            .and_then(|s| s.container_statuses)
            .into_iter()
            .flatten()
            .find_map(|c| c.state?.terminated?.message)
        {
            println!("pgBackRest report of {name}: {m}");
        }
    }
    Ok(status)
}

#[tokio::test]
async fn a_backup_cut_short_by_a_failover_ends_clearly_and_the_next_one_completes() {
    let env = Env::start_controllers("backup-failover", "cluster,backup").await;
    let result = backup_during_failover(&env).await;
    env.finish(result).await;
}

async fn backup_during_failover(env: &Env) -> Result<()> {
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new("ha")
            .instances(2)
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    let pg = env.wait_ready("ha", 2, CREATE).await?;
    env.wait_cluster("ha", "ContinuousArchiving=True", ARCHIVE, |pg| {
        condition_is(pg, "ContinuousArchiving", "True")
    })
    .await?;
    let primary = pg
        .status
        .and_then(|s| s.current_primary)
        .context("no primary")?;
    let pod = env.api::<Pod>().get(&primary).await?;
    let ip = pod.status.and_then(|s| s.pod_ip).context("no IP")?;
    let client = connect(&instance_config(&ip, &env.superuser("ha").await?)).await?;
    // Enough data that the backup takes a moment.
    client
        .batch_execute(
            "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 400000) g",
        )
        .await?;

    // A backup from the primary, and the primary deleted as soon as its Job exists.
    env.apply(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresBackup\nmetadata: {name: during}\nspec: {cluster: {name: ha}, type: Full, target: Primary}\n",
    )?;
    let jobs = env.api::<k8s_openapi::api::batch::v1::Job>();
    eventually("the backup's Job", BACKUP, || async {
        jobs.get_opt("during-backup")
            .await
            .map_err(|e| e.to_string())?
            .map(drop)
            .ok_or_else(|| "no Job yet".to_owned())
    })
    .await?;
    env.kubectl(&["delete", "pod", &primary, "--wait=false"])?;

    // The backup ends one way or the other, and says which.
    let api = env.api::<PostgresBackup>();
    let ended = eventually("the backup ends", BACKUP, || async {
        let st = api
            .get("during")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match st.phase {
            Some(BackupPhase::Completed | BackupPhase::Failed) => Ok(st),
            other => Err(format!("phase {other:?}")),
        }
    })
    .await?;
    match ended.phase {
        Some(BackupPhase::Completed) => ensure!(ended.backup_id.is_some(), "{ended:?}"),
        _ => ensure!(
            ended.error.as_deref().is_some_and(|e| !e.trim().is_empty()),
            "a failed backup says why: {ended:?}"
        ),
    }
    println!(
        "the backup cut short by the failover ended {:?}: {:?}",
        ended.phase, ended.error
    );

    // The cluster recovers and archives on its new timeline; the next backup completes.
    env.wait_ready("ha", 2, CREATE).await?;
    env.wait_cluster(
        "ha",
        "ContinuousArchiving=True after the failover",
        ARCHIVE,
        |pg| condition_is(pg, "ContinuousArchiving", "True"),
    )
    .await?;
    let after = backup_of(env, "ha", "after", "Full").await?;
    ensure!(after.backup_id.is_some(), "{after:?}");
    Ok(())
}
