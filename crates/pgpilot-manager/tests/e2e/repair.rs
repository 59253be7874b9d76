//! Repairs the cluster controller makes without being asked: a replica that cannot start
//! is cloned again from the primary.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;

use crate::harness::{ClusterYaml, Env, eventually, instance};

/// The operator waits 60 s of a stuck replica before re-initializing it; then a clone.
const REPAIR: Duration = Duration::from_secs(240);

#[tokio::test]
async fn a_replica_that_cannot_start_is_cloned_again_from_the_primary() {
    let env = Env::start("reinit").await;
    let result = reinitialized(&env).await;
    env.finish(result).await;
}

async fn reinitialized(env: &Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(2).yaml())?;
    let pg = env.wait_ready("db", 2, Duration::from_secs(300)).await?;
    let primary = pg
        .status
        .and_then(|s| s.current_primary)
        .context("no currentPrimary")?;
    let replica = if primary == "db-0" { "db-1" } else { "db-0" };
    let su = env.superuser("db").await?;
    let rw = env.connect("db-rw", &su, Duration::from_secs(60)).await?;
    rw.batch_execute("create table marker (id int primary key); insert into marker values (42)")
        .await?;

    // Without pg_control PostgreSQL cannot start: Patroni reports `start failed` and stays so.
    env.kubectl(&[
        "exec",
        replica,
        "-c",
        "postgres",
        "--",
        "sh",
        "-c",
        "rm \"$PGDATA/global/pg_control\" && kill -9 \"$(head -1 \"$PGDATA/postmaster.pid\")\"",
    ])?;
    env.wait_cluster(
        "db",
        &format!("{replica} failed"),
        Duration::from_secs(60),
        |pg| {
            let i = instance(pg, replica)?;
            match (i.state.as_deref(), i.ready) {
                (Some("start failed" | "stopped"), false) => Ok(()),
                (state, ready) => Err(format!("{replica} state {state:?}, ready {ready}")),
            }
        },
    )
    .await?;

    // The operator clones it again, and it streams what the primary holds.
    env.wait_cluster("db", &format!("{replica} streaming"), REPAIR, |pg| {
        let i = instance(pg, replica)?;
        (i.state.as_deref() == Some("streaming"))
            .then_some(())
            .ok_or(format!("{replica} state {:?}", i.state))
    })
    .await?;
    env.wait_ready("db", 2, Duration::from_secs(60)).await?;
    let events = env.api::<Event>().list(&ListParams::default()).await?;
    ensure!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ReinitializingReplica")
                && e.note.as_deref().is_some_and(|n| n.contains(replica))),
        "no ReinitializingReplica Event naming {replica}"
    );
    let ro = env.connect("db-ro", &su, Duration::from_secs(60)).await?;
    let id: i32 = eventually(
        "the marker row on the re-cloned replica",
        Duration::from_secs(60),
        || async {
            ro.query_one("select id from marker", &[])
                .await
                .map(|r| r.get(0))
                .map_err(|e| format!("{e}"))
        },
    )
    .await?;
    ensure!(id == 42, "marker row holds {id}");
    Ok(())
}
