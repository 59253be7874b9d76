//! A minor upgrade (PostgreSQL 15.18 → 15.20) of a Ready three-instance cluster under a
//! steady writer and pgbench: the upgrade controller creates the PostgresUpgrade, the cluster controller's
//! pod roll moves the replicas, switches over and moves the old primary, every instance
//! reports 15.20 and no acknowledged write is lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use pgpilot_api::PostgresUpgrade;
use pgpilot_api::upgrade::{StepState, UpgradePhase};

use crate::harness::{ClusterYaml, Env, condition, eventually};
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
    let ip = env.service_ip("db-rw").await?;
    let password = env.superuser("db").await?.password;
    pgbench(&ip, &password, &["-i", "-s", "2", "-q"]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(pgbench_load(ip, password, stop.clone()));
    let changed = Instant::now();
    env.patch_spec("db", serde_json::json!({"postgresql": {"image": TO}}))
        .await?;
    let upgrades = env.api::<PostgresUpgrade>();
    // The upgrade controller's, the only one labelled for `db`.
    let name = eventually(
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
    .await?;
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
    .await;
    stop.store(true, Ordering::Relaxed);
    let (runs, transactions) = load.await??;
    let done = done?;
    ensure!(
        runs >= 2 && transactions > 0,
        "pgbench did not load the cluster: {runs} runs, {transactions} transactions"
    );
    eprintln!("pgbench during the upgrade: {transactions} transactions in {runs} runs");
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
    let version_current = condition(&pg, "VersionCurrent")?;
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

/// Debian's pgbench on the host (CI installs postgresql-15 for the SQL tests).
fn pgbench_binary() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no host PostgreSQL under /usr/lib/postgresql (apt-get install postgresql-15)")?
        .filter_map(|e| Some(e.ok()?.path().join("bin/pgbench")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no pgbench under /usr/lib/postgresql/*/bin")
}

/// One pgbench run against `ip` as the superuser (password in its environment, never in
/// its arguments); its output.
async fn pgbench(ip: &str, password: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(pgbench_binary()?)
        .args(["-h", ip, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && !text.contains("transactions actually processed") {
        bail!("pgbench {args:?}: {text}");
    }
    Ok(text)
}

/// Five-second pgbench runs (two clients) until `stop`: a switchover or a replaced primary
/// ends a run early, and the next one connects again. Returns the runs that processed
/// transactions, and how many.
async fn pgbench_load(ip: String, password: String, stop: Arc<AtomicBool>) -> Result<(usize, u64)> {
    let (mut runs, mut transactions) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let Ok(out) = pgbench(&ip, &password, &["-c", "2", "-j", "1", "-T", "5", "-n"]).await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let n: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|rest| rest.split(['/', ' ']).next()?.parse().ok())
            .unwrap_or(0);
        if n > 0 {
            runs += 1;
            transactions += n;
        }
    }
    Ok((runs, transactions))
}
