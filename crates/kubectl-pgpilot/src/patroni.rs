//! `switchover` and `restart`: patronictl inside an instance pod (through the API server's
//! exec), then a wait for what the cluster's pods and status say.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use pgpilot_api::cluster::{InstanceStatus, is_synchronous_standby};
use pgpilot_api::labels;
use pgpilot_postgres::names::PATRONI_CONFIG_DIR;
use pgpilot_postgres::version::CONTAINER;
use pgpilot_toolkit::exec::exec;

use crate::client::{Target, role};

/// How long a switchover or one instance's restart may take before the plugin gives up
/// waiting (the operation itself goes on in Patroni).
const WAIT: Duration = Duration::from_secs(120);

/// The replica to promote: one Patroni may promote in synchronous mode, else the streaming
/// replica that lags least. Only ready, streaming replicas qualify.
pub fn candidate(instances: &[InstanceStatus], primary: &str) -> Result<String, String> {
    instances
        .iter()
        .filter(|i| i.name != primary && i.ready && i.state.as_deref() == Some("streaming"))
        .min_by_key(|i| {
            (
                !i.role.as_deref().is_some_and(is_synchronous_standby),
                i.lag_bytes.unwrap_or(i64::MAX),
                i.name.clone(),
            )
        })
        .map(|i| i.name.clone())
        .ok_or_else(|| "no ready, streaming replica to switch over to".to_owned())
}

async fn patronictl(target: &Target, pod: &str, args: &[&str]) -> Result<String> {
    let mut command = vec!["patronictl", "-c", PATRONI_CONFIG_DIR];
    command.extend_from_slice(args);
    let out = exec(&target.api::<Pod>(), pod, CONTAINER, &command).await?;
    if !out.success() {
        bail!(
            "patronictl {} in {pod} exited {}: {}{}",
            args.first().unwrap_or(&""),
            out.exit_code,
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !done().await? {
        if start.elapsed() > WAIT {
            bail!("{what}: not after {} s", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

pub async fn switchover(target: &Target, cluster: &str, to: Option<String>) -> Result<()> {
    let pg = target.cluster(cluster).await?;
    let primary = target.primary(cluster).await?.name_any();
    let instances = pg.status.map(|s| s.instances).unwrap_or_default();
    let to = match to {
        Some(to) if to == primary => bail!("{to} is the primary already"),
        Some(to) => to,
        None => candidate(&instances, &primary).map_err(anyhow::Error::msg)?,
    };
    let start = Instant::now();
    patronictl(
        target,
        &primary,
        &[
            "switchover",
            cluster,
            "--leader",
            &primary,
            "--candidate",
            &to,
            "--force",
        ],
    )
    .await?;
    wait_for(&format!("{to} serving as primary"), async || {
        let pods = target.instances(cluster).await?;
        Ok(pods
            .iter()
            .any(|p| p.name_any() == to && role(p) == Some(labels::ROLE_PRIMARY)))
    })
    .await?;
    println!(
        "switched over from {primary} to {to} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether `patronictl list -f json` shows `member` running (a primary) or streaming.
pub fn serving(list: &str, member: &str) -> bool {
    serde_json::from_str::<Vec<serde_json::Value>>(list)
        .unwrap_or_default()
        .iter()
        .any(|m| {
            m["Member"] == member && matches!(m["State"].as_str(), Some("running" | "streaming"))
        })
}

/// The instances to restart, in order: one, or every replica and then the primary.
pub fn restart_order(pods: &[Pod], one: Option<&str>) -> Result<Vec<String>, String> {
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    if let Some(one) = one {
        return names
            .iter()
            .find(|n| *n == one)
            .map(|n| vec![n.clone()])
            .ok_or_else(|| format!("{one} is not an instance (instances: {})", names.join(", ")));
    }
    let (primaries, replicas): (Vec<&Pod>, Vec<&Pod>) = pods
        .iter()
        .partition(|p| role(p) == Some(labels::ROLE_PRIMARY));
    Ok(replicas
        .into_iter()
        .chain(primaries)
        .map(ResourceExt::name_any)
        .collect())
}

pub async fn restart(target: &Target, cluster: &str, instance: Option<String>) -> Result<()> {
    target.cluster(cluster).await?;
    let pods = target.instances(cluster).await?;
    let order = restart_order(&pods, instance.as_deref()).map_err(anyhow::Error::msg)?;
    for member in order {
        let start = Instant::now();
        // Patroni answers once PostgreSQL is back (or the restart failed).
        patronictl(target, &member, &["restart", cluster, &member, "--force"])
            .await
            .with_context(|| format!("restarting {member}"))?;
        // Patroni may answer before PostgreSQL takes connections again.
        wait_for(&format!("{member} running again"), async || {
            let list = patronictl(target, &member, &["list", "-f", "json"]).await?;
            Ok(serving(&list, &member))
        })
        .await?;
        println!(
            "restarted PostgreSQL in {member} ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, role: &str, state: &str, lag: Option<i64>) -> InstanceStatus {
        serde_json::from_value(
            serde_json::json!({"name": name, "role": role, "state": state,
            "ready": true, "lagBytes": lag}),
        )
        .unwrap()
    }

    #[test]
    fn the_synchronous_standby_first_then_the_least_lag() {
        let all = [
            instance("db-0", "primary", "running", None),
            instance("db-1", "replica", "streaming", Some(0)),
            instance("db-2", "sync_standby", "streaming", Some(4096)),
        ];
        assert_eq!(candidate(&all, "db-0").unwrap(), "db-2");
        assert_eq!(candidate(&all[..2], "db-0").unwrap(), "db-1");
        let stopped = [
            instance("db-0", "primary", "running", None),
            instance("db-1", "replica", "starting", Some(0)),
        ];
        assert!(candidate(&stopped, "db-0").is_err());
    }

    fn pod(name: &str, role: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name,
            "labels": {"pgpilot.io/role": role}}}))
        .unwrap()
    }

    #[test]
    fn a_member_serves_once_patroni_lists_it_running_or_streaming() {
        let list = r#"[{"Cluster": "db", "Member": "db-0", "Role": "Leader", "State": "running", "TL": 2},
            {"Cluster": "db", "Member": "db-1", "Role": "Replica", "State": "starting", "TL": 2}]"#;
        assert!(serving(list, "db-0"));
        assert!(!serving(list, "db-1"));
        assert!(!serving(list, "db-2"));
        assert!(!serving("not json", "db-0"));
    }

    #[test]
    fn replicas_restart_before_the_primary() {
        let pods = [
            pod("db-0", "primary"),
            pod("db-1", "replica"),
            pod("db-2", "replica"),
        ];
        assert_eq!(
            restart_order(&pods, None).unwrap(),
            ["db-1", "db-2", "db-0"]
        );
        assert_eq!(restart_order(&pods, Some("db-0")).unwrap(), ["db-0"]);
        assert!(
            restart_order(&pods, Some("db-9"))
                .unwrap_err()
                .contains("db-0, db-1, db-2")
        );
    }
}
