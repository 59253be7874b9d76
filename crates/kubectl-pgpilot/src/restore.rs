//! `restore`: a new cluster like an existing one (its spec, without its backup repository
//! or certificate), bootstrapped from that one's backups, optionally to a point in time. The
//! backup controller picks the backup and checks the target before any instance exists.

use anyhow::{Context, Result, bail};
use kube::api::PostParams;
use pgpilot_api::PostgresCluster;
use serde_json::{Value, json};

use crate::client::Target;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new cluster.
    new: String,
    /// The cluster whose backups to restore (it has spec.backup).
    #[arg(long)]
    from: String,
    /// Replay WAL up to this time (RFC 3339, e.g. 2027-01-15T07:59:00Z); default: the end of
    /// the archive.
    #[arg(long)]
    time: Option<String>,
    /// Start from this pgBackRest backup (default: the latest before the target).
    #[arg(long)]
    backup_id: Option<String>,
    /// Instances of the new cluster (default: as the source).
    #[arg(long)]
    instances: Option<i32>,
    /// Print the new PostgresCluster instead of creating it.
    #[arg(long)]
    dry_run: bool,
}

/// The new cluster, from the source's spec.
pub fn restored(
    source: &PostgresCluster,
    new: &str,
    time: Option<&str>,
    backup_id: Option<&str>,
    instances: Option<i32>,
) -> Result<PostgresCluster> {
    let Some(backup) = &source.spec.backup else {
        bail!(
            "cluster {} has no spec.backup: there are no backups to restore",
            source.metadata.name.as_deref().unwrap_or_default()
        );
    };
    let mut spec = serde_json::to_value(&source.spec)?;
    let fields = spec.as_object_mut().context("spec is not an object")?;
    // Its own repository (two clusters must not write to one) and certificate (for its own
    // names) are the new cluster's to choose.
    fields.remove("backup");
    fields.remove("bootstrap");
    if let Some(tls) = fields.get_mut("tls").and_then(Value::as_object_mut) {
        tls.remove("certificate");
    }
    fields.insert("paused".into(), json!(false));
    if let Some(n) = instances {
        fields.insert("instances".into(), json!(n));
    }
    let mut restore = json!({
        "source": {"name": source.metadata.name},
        "repository": backup.repository,
    });
    if let Some(id) = backup_id {
        restore["backupId"] = json!(id);
    }
    let mut bootstrap = json!({"restore": restore});
    if let Some(time) = time {
        bootstrap["recoveryTarget"] = json!({"time": time});
    }
    fields.insert("bootstrap".into(), bootstrap);
    Ok(serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": new, "labels": {"app.kubernetes.io/created-by": "kubectl-pgpilot"}},
        "spec": spec,
    }))?)
}

pub async fn run(target: &Target, args: Args) -> Result<()> {
    let source = target.cluster(&args.from).await?;
    let cluster = restored(
        &source,
        &args.new,
        args.time.as_deref(),
        args.backup_id.as_deref(),
        args.instances,
    )?;
    if args.dry_run {
        print!("{}", serde_yaml::to_string(&cluster)?);
        return Ok(());
    }
    target
        .api::<PostgresCluster>()
        .create(&PostParams::default(), &cluster)
        .await?;
    println!(
        "postgrescluster/{} created from the backups of {}; follow it with: kubectl pgpilot status {}",
        args.new, args.from, args.new
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(backup: bool) -> PostgresCluster {
        let mut spec = json!({"instances": 3, "postgresql": {"version": 17,
            "parameters": {"max_connections": "300"}}, "storage": {"size": "5Gi"},
            "tls": {"certificate": {"secretName": "db-cert"}},
            "roles": [{"name": "app"}]});
        if backup {
            spec["backup"] = json!({"repository": {"s3": {"endpoint": "minio:9000",
                "bucket": "b", "credentials": {"secretName": "s3"}}}});
        }
        serde_json::from_value(json!({"apiVersion": "pgpilot.io/v1alpha1",
            "kind": "PostgresCluster", "metadata": {"name": "db"}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn the_new_cluster_is_the_old_one_bootstrapped_from_its_repository() {
        let c = restored(
            &source(true),
            "db-copy",
            Some("2027-01-15T07:59:00Z"),
            None,
            Some(1),
        )
        .unwrap();
        let spec = serde_json::to_value(&c.spec).unwrap();
        assert_eq!(spec["instances"], 1);
        assert_eq!(spec["postgresql"]["parameters"]["max_connections"], "300");
        assert_eq!(spec["roles"][0]["name"], "app");
        assert_eq!(spec["bootstrap"]["restore"]["source"]["name"], "db");
        assert_eq!(
            spec["bootstrap"]["restore"]["repository"]["s3"]["bucket"],
            "b"
        );
        assert_eq!(
            spec["bootstrap"]["recoveryTarget"]["time"],
            "2027-01-15T07:59:00Z"
        );
        assert!(spec.get("backup").is_none(), "no shared repository: {spec}");
        assert!(spec["tls"].get("certificate").is_none(), "{spec}");
    }

    #[test]
    fn a_cluster_without_backups_cannot_be_restored() {
        let e = restored(&source(false), "x", None, None, None).unwrap_err();
        assert!(e.to_string().contains("no spec.backup"), "{e}");
    }
}
