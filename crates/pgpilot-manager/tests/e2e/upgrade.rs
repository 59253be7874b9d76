//! A minor upgrade (PostgreSQL 15.18 → 15.20) of a Ready three-instance cluster under a
//! steady writer: the upgrade controller creates the PostgresUpgrade, the cluster controller's
//! pod roll moves the replicas, switches over and moves the old primary, every instance
//! reports 15.20 and no acknowledged write is lost.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use pgpilot_api::PostgresUpgrade;
use pgpilot_api::upgrade::{StepState, UpgradePhase};

use crate::harness::{ClusterYaml, Env, eventually};
use crate::roll::{no_acknowledged_write_lost, ready_under_writes_of};

const FROM: &str = "localhost/pgpilot/postgres:15.18";
const TO: &str = "localhost/pgpilot/postgres:15.20";
/// Three replacements, a switchover and the upgrade's own looks, on a loaded shared node.
const UPGRADE: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_minor_upgrade_moves_every_instance_under_writes_and_loses_nothing() {
    let env = Env::start_controllers("minor", "cluster,upgrade").await;
    let result = minor(&env).await;
    env.finish(result).await;
}

async fn minor(env: &Env) -> Result<()> {
    let (writer, old_primary) =
        ready_under_writes_of(env, ClusterYaml::new("db").postgres(15, FROM)).await?;
    let changed = Instant::now();
    env.patch_spec("db", serde_json::json!({"postgresql": {"image": TO}}))
        .await?;
    let name = pgpilot_upgrade::reconcile::upgrade_name("db", 15, TO);
    let upgrades = env.api::<PostgresUpgrade>();
    let done = eventually(
        &format!("PostgresUpgrade {name} Succeeded"),
        UPGRADE,
        || async {
            let u = upgrades.get(&name).await.map_err(|e| e.to_string())?;
            let st = u.status.unwrap_or_default();
            match st.phase {
                Some(UpgradePhase::Succeeded) => Ok(st),
                Some(UpgradePhase::Failed | UpgradePhase::Paused | UpgradePhase::Aborted) => {
                    Err(format!("STOPPED: {:?}", st.conditions))
                }
                other => Err(format!(
                    "phase {other:?}; steps {:?}",
                    st.steps
                        .iter()
                        .map(|s| format!("{}={:?}", s.name, s.state))
                        .collect::<Vec<_>>()
                )),
            }
        },
    )
    .await?;
    no_acknowledged_write_lost(env, writer, "minor upgrade", changed).await?;

    // Every step done in order (no pre-upgrade backup: the cluster has no repository), the
    // old primary replaced last, after the switchover.
    ensure!(done.from_image.as_deref() == Some(FROM), "{done:?}");
    for s in &done.steps {
        let want = if s.name == "backup" || s.name == "approval" || s.name == "maintenance-window" {
            StepState::Skipped
        } else {
            StepState::Done
        };
        ensure!(
            s.state == want,
            "step {} is {:?}: {done:?}",
            s.name,
            s.state
        );
    }
    ensure!(
        done.steps
            .iter()
            .any(|s| s.name == format!("upgrade-primary/{old_primary}")),
        "{done:?}"
    );
    // Each instance runs the new image and says 15.20 itself.
    ensure!(done.instances.len() == 3, "{done:?}");
    for i in &done.instances {
        ensure!(i.upgraded && i.image.as_deref() == Some(TO), "{i:?}");
    }
    let pg = env
        .wait_cluster("db", "every instance reports 15.20", UPGRADE, |pg| {
            let st = pg.status.as_ref().ok_or("no status".to_owned())?;
            let versions: Vec<Option<&str>> = st
                .instances
                .iter()
                .map(|i| i.postgres_version.as_deref())
                .collect();
            (versions.len() == 3 && versions.iter().all(|v| *v == Some("15.20")))
                .then_some(())
                .ok_or(format!("versions {versions:?}"))
        })
        .await?;
    let version_current = pg
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "VersionCurrent")
        .context("no VersionCurrent")?;
    ensure!(version_current.status == "True", "{version_current:?}");
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
    // Nothing of the upgrade stays on the cluster.
    let annotations = env
        .api::<pgpilot_api::PostgresCluster>()
        .get("db")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    ensure!(
        !annotations
            .keys()
            .any(|k| k.starts_with("pgpilot.io/upgrade") || k == "pgpilot.io/roll-hold"),
        "{annotations:?}"
    );
    Ok(())
}
