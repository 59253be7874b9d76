//! `backup`: a PostgresBackup of the cluster, now; with `--wait`, until it ends.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use pgpilot_api::PostgresBackup;
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::common::BackupType;

use crate::client::Target;

#[derive(clap::Args)]
pub struct Args {
    cluster: String,
    /// pgBackRest backup type.
    #[arg(long = "type", value_enum, default_value = "full")]
    backup_type: Type,
    /// Name of the PostgresBackup (default: `<cluster>-<UTC time>`).
    #[arg(long)]
    name: Option<String>,
    /// Wait until the backup completes or fails (exit 1 when it fails).
    #[arg(long)]
    wait: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Type {
    Full,
    Differential,
    Incremental,
}

/// The PostgresBackup to create.
fn backup(cluster: &str, name: &str, t: Type) -> Result<PostgresBackup> {
    let backup_type = match t {
        Type::Full => BackupType::Full,
        Type::Differential => BackupType::Differential,
        Type::Incremental => BackupType::Incremental,
    };
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresBackup",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "kubectl-pgpilot"}},
        "spec": {"cluster": {"name": cluster}, "type": backup_type},
    }))?)
}

/// `<cluster>-20270115t080000z`: sortable, and a valid object name.
fn default_name(cluster: &str, now: Timestamp) -> String {
    format!("{cluster}-{}", now.strftime("%Y%m%dt%H%M%Sz"))
}

pub async fn run(target: &Target, args: Args) -> Result<()> {
    target.cluster(&args.cluster).await?;
    let name = args
        .name
        .unwrap_or_else(|| default_name(&args.cluster, Timestamp::now()));
    let api = target.api::<PostgresBackup>();
    api.create(
        &PostParams::default(),
        &backup(&args.cluster, &name, args.backup_type)?,
    )
    .await?;
    println!("postgresbackup/{name} created");
    if !args.wait {
        return Ok(());
    }
    loop {
        let status = api.get(&name).await?.status.unwrap_or_default();
        match status.phase {
            Some(BackupPhase::Completed) => {
                println!(
                    "completed: {} ({})",
                    status.backup_id.unwrap_or_default(),
                    status.size.unwrap_or_default()
                );
                return Ok(());
            }
            Some(BackupPhase::Failed) => {
                bail!("backup failed: {}", status.error.unwrap_or_default())
            }
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_names_its_cluster_and_type() {
        let b = backup("db", "db-1", Type::Differential).unwrap();
        assert_eq!(b.spec.cluster.name, "db");
        assert_eq!(b.spec.backup_type, BackupType::Differential);
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(default_name("db", at), "db-20270115t080000z");
    }
}
