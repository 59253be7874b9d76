//! `report`: a support bundle — a directory of the cluster's objects, its children, Events,
//! Patroni's view and logs — in which no value of any Secret of the namespace appears.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{ListParams, LogParams};
use pgpilot_api::labels;
use pgpilot_postgres::names::PATRONI_CONFIG_DIR;
use pgpilot_postgres::version::CONTAINER;
use pgpilot_toolkit::exec::exec;
use serde::Serialize;

use crate::client::Target;

#[derive(clap::Args)]
pub struct Args {
    cluster: String,
    /// Directory to write (default: pgpilot-report-<cluster>-<UTC time>).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Log lines per container.
    #[arg(long, default_value_t = 2000)]
    tail: i64,
}

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// Replaces every secret value (as stored and as base64) in text.
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// From the Secrets' data. Values shorter than 6 characters are not looked for: they
    /// would blank out ordinary words, and pgpilot's own are far longer.
    pub fn new(secrets: &[Secret]) -> Redactor {
        use base64::Engine;
        let mut needles: Vec<String> = Vec::new();
        for s in secrets {
            for value in s.data.iter().flat_map(|d| d.values()) {
                let raw = String::from_utf8_lossy(&value.0).into_owned();
                let encoded = base64::engine::general_purpose::STANDARD.encode(&value.0);
                // A PEM body survives re-wrapping line by line.
                let lines = raw.lines().map(str::trim).map(str::to_owned);
                for n in std::iter::once(raw.clone())
                    .chain(std::iter::once(encoded))
                    .chain(lines)
                {
                    if n.len() >= 6 && !n.starts_with("-----") {
                        needles.push(n);
                    }
                }
            }
        }
        // Longest first: a value containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }
}

/// A Secret as the bundle shows it: its metadata and keys, never a value.
fn redacted_secret(s: &Secret) -> serde_json::Value {
    serde_json::json!({
        "name": s.name_any(),
        "type": s.type_,
        "labels": s.metadata.labels,
        "annotations": s.metadata.annotations,
        "keys": s.data.iter().flat_map(|d| d.keys()).collect::<Vec<_>>(),
        "values": REDACTED,
    })
}

struct Bundle {
    dir: PathBuf,
    redactor: Redactor,
    files: usize,
}

impl Bundle {
    fn write(&mut self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, self.redactor.apply(text))
            .with_context(|| format!("writing {}", path.display()))?;
        self.files += 1;
        Ok(())
    }

    fn yaml<T: Serialize>(&mut self, name: &str, objects: &[T]) -> Result<()> {
        let mut values = Vec::new();
        for o in objects {
            let mut v = serde_json::to_value(o)?;
            if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("managedFields");
            }
            values.push(v);
        }
        self.write(name, &serde_yaml::to_string(&values)?)
    }
}

pub async fn run(target: &Target, args: Args) -> Result<()> {
    let name = args.cluster.as_str();
    let cluster = target.cluster(name).await?;
    let dir = args.output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "pgpilot-report-{name}-{}",
            Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        ))
    });
    std::fs::create_dir_all(&dir)?;
    let secrets = target
        .api::<Secret>()
        .list(&ListParams::default())
        .await?
        .items;
    let mut bundle = Bundle {
        dir: dir.clone(),
        redactor: Redactor::new(&secrets),
        files: 0,
    };
    let mine = ListParams::default().labels(&format!("{}={name}", labels::CLUSTER));

    bundle.yaml("postgrescluster.yaml", &[&cluster])?;
    let related = target.related(name).await?;
    bundle.yaml("postgresbackups.yaml", &related.backups)?;
    bundle.yaml("backupschedules.yaml", &related.schedules)?;
    bundle.yaml("postgresupgrades.yaml", &related.upgrades)?;
    bundle.yaml("secretrotations.yaml", &related.rotations)?;
    bundle.yaml(
        "statefulsets.yaml",
        &target.api::<StatefulSet>().list(&mine).await?.items,
    )?;
    let pods = target.api::<Pod>().list(&mine).await?.items;
    bundle.yaml("pods.yaml", &pods)?;
    bundle.yaml(
        "services.yaml",
        &target.api::<Service>().list(&mine).await?.items,
    )?;
    bundle.yaml(
        "persistentvolumeclaims.yaml",
        &target
            .api::<PersistentVolumeClaim>()
            .list(&mine)
            .await?
            .items,
    )?;
    bundle.yaml(
        "configmaps.yaml",
        &target.api::<ConfigMap>().list(&mine).await?.items,
    )?;
    bundle.yaml(
        "poddisruptionbudgets.yaml",
        &target.api::<PodDisruptionBudget>().list(&mine).await?.items,
    )?;
    let ours: Vec<serde_json::Value> = secrets
        .iter()
        .filter(|s| s.labels().get(labels::CLUSTER).map(String::as_str) == Some(name))
        .map(redacted_secret)
        .collect();
    bundle.yaml("secrets.yaml", &ours)?;
    bundle.yaml("events.yaml", &target.events_of(name).await?)?;

    let api = target.api::<Pod>();
    for pod in &pods {
        let pod_name = pod.name_any();
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| c.name.clone());
        for container in containers {
            let params = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(args.tail),
                ..Default::default()
            };
            let text = api
                .logs(&pod_name, &params)
                .await
                .unwrap_or_else(|e| format!("(no log: {e})\n"));
            bundle.write(&format!("logs/{pod_name}.{container}.log"), &text)?;
        }
        let patroni = exec(
            &api,
            &pod_name,
            CONTAINER,
            &["patronictl", "-c", PATRONI_CONFIG_DIR, "list", "--extended"],
        )
        .await
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .unwrap_or_else(|e| format!("(patronictl list failed: {e})\n"));
        bundle.write(&format!("patroni/{pod_name}.list.txt"), &patroni)?;
    }
    println!(
        "wrote {} files to {} (no Secret value of namespace {} in them)",
        bundle.files,
        Path::new(&dir).display(),
        target.namespace
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, value: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("db-superuser".into());
        s.data = Some(
            [(
                key.to_owned(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn secret_values_are_blanked_raw_base64_and_line_by_line() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        let r = Redactor::new(&[
            secret("password", "s3cr3t-Pa55w0rd"),
            secret("tls.key", pem),
        ]);
        let text = "login with s3cr3t-Pa55w0rd; base64 czNjcjN0LVBhNTV3MHJk; key \
                    MIIEvQIBADANBgkqhkiG9w0BAQEFAASC; short ok";
        let out = r.apply(text);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains("czNjcjN0"), "{out}");
        assert!(!out.contains("MIIEvQ"), "{out}");
        assert!(out.contains("short ok"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn a_secret_shows_its_keys_not_its_values() {
        let v = redacted_secret(&secret("password", "s3cr3t-Pa55w0rd"));
        assert_eq!(v["keys"], serde_json::json!(["password"]));
        assert!(!v.to_string().contains("s3cr3t"));
    }
}
