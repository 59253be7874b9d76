//! Restores from a real MinIO over TLS: point-in-time recovery gives exactly the rows
//! committed before the target (checked by content), a restore to the latest point gives
//! every row and clones its replica, both from a cluster that was deleted first; a wrong
//! source and a target before the oldest backup are refused before any instance exists.
//! Verification restores a backup into a throwaway cluster and reads it: a good backup
//! passes, one with files deleted from the repository fails visibly.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::ListParams;
use pgpilot_api::common::{VerificationResult, VerificationStatus};
use pgpilot_api::{PostgresBackup, PostgresCluster};

use crate::backup::backup_of;
use crate::harness::{ClusterYaml, Env, condition_is, eventually};
use crate::minio::Minio;

const CREATE: Duration = Duration::from_secs(300);
const ARCHIVE: Duration = Duration::from_secs(240);
/// The check Job, then the restore and WAL replay of a small database.
const RESTORE: Duration = Duration::from_secs(420);

#[tokio::test]
async fn pitr_gives_exactly_the_rows_before_the_target_and_a_bad_source_is_refused() {
    let env = Env::start_controllers("restore", "cluster,backup").await;
    let result = restores(&env).await;
    env.finish(result).await;
}

fn restore_condition(pg: &PostgresCluster) -> Option<(String, String, String)> {
    let c = pg
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "RestoreSourceReady")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A cluster restored from `src`'s backups, with `extra` under `bootstrap:`.
fn restored(name: &str, instances: i32, minio: &Minio, source: &str, extra: &str) -> String {
    ClusterYaml::new(name)
        .instances(instances)
        .spec(&format!(
            "bootstrap: {{restore: {{source: {{name: {source}}}, repository: {{s3: {}}}}}{extra}}}",
            minio.repository("backups", "s3")
        ))
        .yaml()
}

async fn notes(env: &Env, cluster: &str) -> Result<Vec<String>> {
    let client = env
        .connect(
            &format!("{cluster}-rw"),
            &env.superuser(cluster).await?,
            CREATE,
        )
        .await?;
    Ok(client
        .query("SELECT note FROM events ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// MinIO with bucket `backups` and Secret `s3`, and a one-instance cluster `name` archiving
/// to it.
pub(crate) async fn archiving_cluster(env: &Env, name: &str) -> Result<Minio> {
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new(name)
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    env.wait_ready(name, 1, CREATE).await?;
    env.wait_cluster(name, "ContinuousArchiving=True", ARCHIVE, |pg| {
        condition_is(pg, "ContinuousArchiving", "True")
    })
    .await?;
    Ok(minio)
}

async fn restores(env: &Env) -> Result<()> {
    let minio = archiving_cluster(env, "src").await?;

    // Rows, each committed on its own: a, full backup, b, incremental backup, c1, the
    // target, c2.
    let client = env
        .connect("src-rw", &env.superuser("src").await?, CREATE)
        .await?;
    client
        .batch_execute("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL)")
        .await?;
    let insert = |notes: &'static [&'static str]| {
        let client = &client;
        async move {
            for n in notes {
                client
                    .execute("INSERT INTO events (note) VALUES ($1)", &[n])
                    .await?;
            }
            anyhow::Ok(())
        }
    };
    insert(&["a1", "a2"]).await?;
    let full = backup_of(env, "src", "src-full", "Full").await?;
    insert(&["b1", "b2"]).await?;
    let incr = backup_of(env, "src", "src-incr", "Incremental").await?;
    insert(&["c1"]).await?;
    // The commit timestamps of c1 and c2 lie on either side of this instant.
    let target: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await?
        .get(0);
    eventually("the clock to pass the target", CREATE, || async {
        let later: bool = client
            .query_one(
                "SELECT clock_timestamp() > $1::text::timestamptz",
                &[&target],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        later.then_some(()).ok_or("not yet".to_owned())
    })
    .await?;
    insert(&["c2"]).await?;
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    env.wait_cluster(
        "src",
        &format!("{segment} archived"),
        ARCHIVE,
        |pg| match pg
            .status
            .as_ref()
            .and_then(|s| s.backup.as_ref()?.last_archived_wal.clone())
        {
            Some(wal) if wal >= segment => Ok(()),
            other => Err(format!("lastArchivedWal {other:?}")),
        },
    )
    .await?;
    drop(client);

    // The source goes; its backups and WAL stay in the repository.
    env.kubectl(&["delete", "postgrescluster", "src", "--wait=true"])?;

    env.apply(&restored(
        "pitr",
        1,
        &minio,
        "src",
        &format!(", recoveryTarget: {{time: '{target}'}}"),
    ))?;
    env.apply(&restored("latest", 2, &minio, "src", ""))?;
    env.apply(&restored("wrong", 1, &minio, "nosuch", ""))?;
    env.apply(&restored(
        "early",
        1,
        &minio,
        "src",
        ", recoveryTarget: {time: '2020-01-01T00:00:00Z'}",
    ))?;

    // Refusals come before any instance, and say what the repository holds.
    let pg = env
        .wait_cluster(
            "wrong",
            "RestoreSourceReady=False",
            RESTORE,
            |pg| match restore_condition(pg) {
                Some((s, r, _)) if s == "False" && r == "StanzaNotFound" => Ok(()),
                other => Err(format!("RestoreSourceReady {other:?}")),
            },
        )
        .await?;
    let (_, _, message) = restore_condition(&pg).context("no condition")?;
    ensure!(
        message.contains(&format!("no stanza {}-nosuch", env.ns))
            && message.contains("clusters with backups there: src"),
        "{message}"
    );
    let pg = env
        .wait_cluster(
            "early",
            "RestoreSourceReady=False",
            RESTORE,
            |pg| match restore_condition(pg) {
                Some((s, r, _)) if s == "False" && r == "TargetBeforeFirstBackup" => Ok(()),
                other => Err(format!("RestoreSourceReady {other:?}")),
            },
        )
        .await?;
    let (_, _, message) = restore_condition(&pg).context("no condition")?;
    let full_id = full.backup_id.clone().context("no full backup id")?;
    ensure!(message.contains(&full_id), "{message}");
    for refused in ["wrong", "early"] {
        let instances = env
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!(
                "pgpilot.io/cluster={refused},pgpilot.io/component=instance"
            )))
            .await?;
        ensure!(
            instances.items.is_empty(),
            "{refused} has instances though its restore was refused"
        );
    }

    // PITR: exactly the rows committed before the target, from the incremental backup.
    let pg = env.wait_ready("pitr", 1, RESTORE).await?;
    let chosen = pg
        .status
        .as_ref()
        .and_then(|s| s.restore.clone())
        .context("no status.restore")?;
    ensure!(
        Some(&chosen.backup_id) == incr.backup_id.as_ref(),
        "restored {chosen:?}, want the incremental backup {incr:?}"
    );
    let got = notes(env, "pitr").await?;
    ensure!(
        got == ["a1", "a2", "b1", "b2", "c1"],
        "PITR to {target} gave {got:?}"
    );

    // Latest: every row, and a replica cloned from the restored primary.
    env.wait_ready("latest", 2, RESTORE).await?;
    let got = notes(env, "latest").await?;
    ensure!(
        got == ["a1", "a2", "b1", "b2", "c1", "c2"],
        "a restore to the latest point gave {got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn verification_passes_on_a_good_backup_and_fails_visibly_on_a_broken_one() {
    let env = Env::start_controllers("verify", "cluster,backup").await;
    let result = verifications(&env).await;
    env.finish(result).await;
}

/// Waits until backup `name` has a finished verification; returns it.
async fn verified(env: &Env, name: &str) -> Result<VerificationStatus> {
    let api = env.api::<PostgresBackup>();
    eventually(&format!("{name} verified"), RESTORE, || async {
        let b = api.get(name).await.map_err(|e| e.to_string())?;
        match b.status.and_then(|s| s.verification) {
            Some(v) if v.result != VerificationResult::Running => Ok(v),
            other => Err(format!("verification {other:?}")),
        }
    })
    .await
}

async fn verifications(env: &Env) -> Result<()> {
    let minio = archiving_cluster(env, "db").await?;
    let client = env
        .connect("db-rw", &env.superuser("db").await?, CREATE)
        .await?;
    client
        .batch_execute(
            "CREATE TABLE events (id serial PRIMARY KEY, note text); INSERT INTO events (note) SELECT 'n' || g FROM generate_series(1, 3) g",
        )
        .await?;
    drop(client);

    // A good backup, verified with a query of the user's: it passes, every table was read,
    // and the throwaway cluster goes with its volume.
    let good = backup_of(env, "db", "good", "Full").await?;
    env.kubectl(&[
        "patch",
        "pgb",
        "good",
        "--type=merge",
        "-p",
        r#"{"spec":{"verification":{"query":"SELECT count(*) = 3 FROM events"}}}"#,
    ])?;
    let v = verified(env, "good").await?;
    ensure!(v.result == VerificationResult::Passed, "{v:?}");
    ensure!(
        v.tables.unwrap_or(0) >= 1 && v.rows.unwrap_or(0) >= 3,
        "{v:?}"
    );
    ensure!(v.recovered_to == good.stop_time, "{v:?} vs {good:?}");
    ensure!(
        env.cluster_metric("pgpilot_backup_verification_passed", "db")
            .await?
            == 1.0
    );
    eventually(
        "the throwaway cluster and its volume gone",
        CREATE,
        || async {
            let clusters = env
                .api::<PostgresCluster>()
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let pvcs = env
                .api::<PersistentVolumeClaim>()
                .list(&ListParams::default().labels("pgpilot.io/cluster=good-verify"))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = clusters.items.iter().map(|c| c.name_any()).collect();
            (names == ["db"] && pvcs.items.is_empty())
                .then_some(())
                .ok_or(format!("clusters {names:?}, {} claims", pvcs.items.len()))
        },
    )
    .await?;

    // A broken backup: its copy of pg_control deleted from the repository. The verification
    // fails and says why.
    let broken = backup_of(env, "db", "broken", "Full").await?;
    let label = broken.backup_id.clone().context("no label")?;
    let key = format!(
        "pgbackrest/{ns}/db/backup/{ns}-db/{label}/pg_data/global/pg_control.zst",
        ns = env.ns
    );
    ensure!(minio.exists(env, "backups", &key).await?, "{key} not found");
    minio.delete(env, "backups", &key).await?;
    env.kubectl(&[
        "patch",
        "pgb",
        "broken",
        "--type=merge",
        "-p",
        r#"{"spec":{"verification":{}}}"#,
    ])?;
    let v = verified(env, "broken").await?;
    ensure!(v.result == VerificationResult::Failed, "{v:?}");
    let message = v.message.clone().unwrap_or_default();
    ensure!(message.contains(&label), "{message}");
    eventually("verification_passed 0", CREATE, || async {
        match env
            .cluster_metric("pgpilot_backup_verification_passed", "db")
            .await
        {
            Ok(v) => (v == 0.0).then_some(()).ok_or(format!("{v}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;

    // deletionPolicy Delete: deleting the object expires the backup from the repository
    // (the good one: the broken one is the newest full backup).
    let good_id = good.backup_id.clone().context("no label")?;
    let manifest = format!(
        "pgbackrest/{ns}/db/backup/{ns}-db/{good_id}/backup.manifest",
        ns = env.ns
    );
    ensure!(
        minio.exists(env, "backups", &manifest).await?,
        "{manifest} not found"
    );
    env.kubectl(&[
        "patch",
        "pgb",
        "good",
        "--type=merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Delete"}}"#,
    ])?;
    eventually("the expire finalizer on good", CREATE, || async {
        let b = env
            .api::<PostgresBackup>()
            .get("good")
            .await
            .map_err(|e| e.to_string())?;
        b.finalizers()
            .contains(&"pgpilot.io/expire-backup".to_owned())
            .then_some(())
            .ok_or(format!("finalizers {:?}", b.finalizers()))
    })
    .await?;
    env.kubectl(&["delete", "pgb", "good", "--wait=true", "--timeout=300s"])?;
    ensure!(
        !minio.exists(env, "backups", &manifest).await?,
        "backup {good_id} is still in the repository after its object (deletionPolicy Delete) was deleted"
    );
    Ok(())
}
