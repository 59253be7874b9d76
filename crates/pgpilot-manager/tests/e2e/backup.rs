//! Continuous archiving: clusters with `spec.backup` archive their WAL with pgBackRest to a
//! real MinIO over TLS (with a CA the test makes); the backup controller creates and checks
//! the stanza through the primary's pgBackRest TLS server and reports the archive from the
//! primary's own view. A wrong secret key is refused by MinIO and named as the reason, while
//! the database serves on and nothing restarts.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use pgpilot_api::PostgresCluster;

use crate::harness::{ClusterYaml, Env, condition_is, connect, instance_config};
use crate::minio::Minio;

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// The stanza Job, then a segment through the asynchronous pusher.
const ARCHIVE: Duration = Duration::from_secs(240);

#[tokio::test]
async fn wal_reaches_minio_over_tls_and_a_refused_key_is_named_as_the_reason() {
    let env = Env::start_controllers("archive", "cluster,backup").await;
    let result = archiving(&env).await;
    env.finish(result).await;
}

fn backed_up(name: &str, minio: &Minio, secret: &str) -> String {
    ClusterYaml::new(name)
        .spec(&format!(
            "backup: {{repository: {{s3: {}}}}}",
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
    ensure!(
        !st.conditions.iter().any(|c| c.type_ == "BackupsHandled"),
        "the cluster controller still says no backup controller reported: {:?}",
        st.conditions
    );
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
