//! Traces in a real backend: the manager exports OTLP (gRPC) to an OpenTelemetry Collector
//! in the test's namespace (`e2e/manifests/otelcol.yaml`, shared with the demo), whose file
//! exporter writes every batch as OTLP JSON to its log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use kube::ResourceExt;
use kube::api::ListParams;
use pgpilot_api::PostgresBackup;

use crate::harness::{ClusterYaml, Env, eventually};
use crate::minio::Minio;

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
    /// `(trace, span)` of each linked span.
    links: Vec<(String, String)>,
}

/// Every span in the collector's log so far.
fn spans(log: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.starts_with("{\"resourceSpans\"")) {
        let Ok(batch) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let resource_spans = batch["resourceSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for scope in resource_spans
            .iter()
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        {
            for s in scope["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                let attributes = s["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let v = &a["value"];
                        let value = v["stringValue"]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| v["intValue"].as_str().map(str::to_owned))
                            .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
                            .unwrap_or_else(|| v.to_string());
                        (a["key"].as_str().unwrap_or_default().to_owned(), value)
                    })
                    .collect();
                let links = s["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        let text = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                        (text("traceId"), text("spanId"))
                    })
                    .collect();
                out.push(Span {
                    links,
                    trace: text("traceId"),
                    id: text("spanId"),
                    parent: text("parentSpanId"),
                    name: text("name"),
                    attributes,
                });
            }
        }
    }
    out
}

/// Every span the collector has received so far.
fn received(env: &Env) -> Result<Vec<Span>, String> {
    env.kubectl(&["logs", "otelcol"])
        .map(|log| spans(&log))
        .map_err(|e| e.to_string())
}

/// Starts the collector (`e2e/manifests/otelcol.yaml`); its Service's address.
async fn start_collector(env: &Env) -> Result<String> {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../e2e/manifests/otelcol.yaml"
    );
    env.apply(&std::fs::read_to_string(manifest)?)?;
    env.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/otelcol",
        "--timeout=120s",
    ])
    .context("the collector did not become ready")?;
    env.service_ip("otelcol").await
}

#[tokio::test]
async fn reconciles_are_traced_with_their_calls_and_a_scheduled_backup_links_to_its_schedule() {
    let mut env = Env::start("traces").await;
    let result = traced(&mut env).await;
    env.finish(result).await;
}

async fn traced(env: &mut Env) -> Result<()> {
    let collector = start_collector(env).await?;
    let endpoint = format!("http://{collector}:4317");
    env.restart_manager_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "pgpilot-e2e"),
    ])
    .await?;
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new("db")
            .spec("roles: [{name: app}]")
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}}}",
                minio.repository("backups", "s3")
            ))
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;

    // A reconcile of the Ready cluster: its trace holds the calls it made.
    let wanted = ["kube.", "patroni.call", "sql.query"];
    let (reconcile, family) = eventually(
        "a cluster reconcile traced with Kubernetes API, Patroni and SQL spans",
        Duration::from_secs(120),
        || async {
            let all = received(env)?;
            let reconciles: Vec<&Span> = all
                .iter()
                .filter(|s| {
                    s.name == "reconcile"
                        && s.attributes.get("controller").map(String::as_str) == Some("cluster")
                        && s.attributes.get("name").map(String::as_str) == Some("db")
                })
                .collect();
            for r in reconciles.iter().rev() {
                let family: Vec<Span> = descendants(&all, r);
                let names: BTreeSet<&str> = family.iter().map(|s| s.name.as_str()).collect();
                if wanted
                    .iter()
                    .all(|w| names.iter().any(|n| n.starts_with(w)))
                {
                    return Ok(((*r).clone(), family));
                }
            }
            Err(format!(
                "{} spans, {} cluster reconciles of db, none with all of {wanted:?}",
                all.len(),
                reconciles.len()
            ))
        },
    )
    .await?;

    // What an on-call engineer needs on the reconcile: the object and where it ran.
    for key in [
        "namespace",
        "name",
        "controller",
        "generation",
        "trace_id",
        "step",
        "result",
    ] {
        ensure!(
            reconcile.attributes.contains_key(key),
            "the reconcile span has no {key}: {:?}",
            reconcile.attributes
        );
    }
    ensure!(
        reconcile.attributes["namespace"] == env.ns,
        "{:?}",
        reconcile.attributes
    );
    // The log line's trace_id is the trace's.
    ensure!(
        reconcile.attributes["trace_id"] == reconcile.trace,
        "trace_id field {} vs trace {}",
        reconcile.attributes["trace_id"],
        reconcile.trace
    );
    // A reconcile's log lines carry its trace's id: the first reconcile logged the children
    // it created, and that trace is in the collector too.
    eventually(
        "a logged reconcile's trace_id among the collector's traces",
        Duration::from_secs(60),
        || async {
            let traced: BTreeSet<String> = received(env)?
                .into_iter()
                .filter(|s| s.name == "reconcile")
                .map(|s| s.trace)
                .collect();
            let logged: BTreeSet<String> = env
                .manager_log()
                .split("trace_id=")
                .skip(1)
                .filter_map(|rest| rest.get(..32).map(str::to_owned))
                .collect();
            (!logged.is_empty() && logged.iter().any(|t| traced.contains(t)))
                .then_some(())
                .ok_or(format!(
                    "{} trace ids in the manager's log, {} reconcile traces, none shared",
                    logged.len(),
                    traced.len()
                ))
        },
    )
    .await?;
    // No secret in any span of the test.
    let log = env.kubectl(&["logs", "otelcol"])?;
    for secret in [
        "db-superuser",
        "db-app-credentials",
        "db-pgpilot-monitor-credentials",
    ] {
        let password = env.credentials(secret).await?.password;
        ensure!(
            !log.contains(&password),
            "the password of {secret} is in an exported span"
        );
    }
    scheduled_backup_links_to_its_schedule(env).await?;
    println!(
        "reconcile trace {} with {} spans: {:?}",
        reconcile.trace,
        family.len(),
        family
            .iter()
            .map(|s| s.name.as_str())
            .collect::<BTreeSet<_>>()
    );
    Ok(())
}

/// A BackupSchedule's backup carries the creating reconcile's `traceparent`, that span is in
/// the backend, and the backup's own reconcile (a trace of its own) links to it.
async fn scheduled_backup_links_to_its_schedule(env: &Env) -> Result<()> {
    env.apply(
        "apiVersion: pgpilot.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: minutely}\n\
         spec: {cluster: {name: db}, schedule: '* * * * *', type: Full}\n",
    )?;
    let backups = env.api::<PostgresBackup>();
    let (backup, parent) = eventually(
        "a PostgresBackup of the schedule with a traceparent",
        Duration::from_secs(150),
        || async {
            let list = backups
                .list(&ListParams::default().labels("pgpilot.io/schedule=minutely"))
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find_map(|b| {
                    let parent = b.annotations().get("pgpilot.io/traceparent")?;
                    Some((b.name_any(), parent.clone()))
                })
                .ok_or(format!("{} backups, none annotated", list.items.len()))
        },
    )
    .await?;
    let mut parts = parent.split('-').skip(1);
    let (trace, span) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    eventually(
        "the schedule's reconcile and the backup's reconcile linking to it, in the backend",
        Duration::from_secs(60),
        || async {
            let all = received(env)?;
            let creator = all.iter().any(|s| {
                s.trace == trace
                    && s.id == span
                    && s.name == "reconcile"
                    && s.attributes.get("name").map(String::as_str) == Some("minutely")
            });
            let linked = all.iter().any(|s| {
                s.name == "reconcile"
                    && s.attributes.get("name") == Some(&backup)
                    && s.trace != trace
                    && s.links.contains(&(trace.clone(), span.clone()))
            });
            (creator && linked).then_some(()).ok_or(format!(
                "creator span found: {creator}; backup reconcile linking to it: {linked}"
            ))
        },
    )
    .await
}

/// The spans under `root` (itself excluded), in the order received.
fn descendants(all: &[Span], root: &Span) -> Vec<Span> {
    let mut ids = BTreeSet::from([root.id.clone()]);
    let mut out = Vec::new();
    // Parents may arrive after children (a batch per export): iterate to a fixed point.
    loop {
        let before = ids.len();
        for s in all.iter().filter(|s| s.trace == root.trace) {
            if ids.contains(&s.parent) && ids.insert(s.id.clone()) {
                out.push(s.clone());
            }
        }
        if ids.len() == before {
            return out;
        }
    }
}
