//! A real Prometheus in the test's namespace (`e2e/manifests/prometheus.yaml`, shared with
//! the demo): it finds the instances' exporters as the chart's PodMonitor does, scrapes the
//! test's manager (which must serve `/metrics` where pods reach it: [`Env::start_scraped`])
//! and evaluates the chart's alerts.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::harness::{Env, eventually};

const NAME: &str = "prometheus";

pub struct Prometheus {
    ip: String,
}

/// One series of an instant query: its labels and value.
#[derive(Debug)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

impl Prometheus {
    /// Starts Prometheus (`e2e/manifests/prometheus.yaml`, Service `prometheus`, scraping
    /// every 2 s) with the chart's alerts, and waits until it is ready.
    pub async fn start(env: &Env) -> Result<Prometheus> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let manifest = std::fs::read_to_string(format!("{root}/e2e/manifests/prometheus.yaml"))?
            .replace("__NAMESPACE__", &env.ns)
            .replace("__MANAGER__", &env.metrics_address()?);
        env.kubectl(&[
            "create",
            "configmap",
            "prometheus-rules",
            &format!("--from-file=alerts.yaml={root}/charts/pgpilot/files/alerts.yaml"),
        ])?;
        env.apply(&manifest)?;
        env.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{NAME}"),
            "--timeout=120s",
        ])
        .context("Prometheus did not become ready")?;
        Ok(Prometheus {
            ip: env.service_ip(NAME).await?,
        })
    }

    /// The alerting rules Prometheus evaluates, by name, with their state (`inactive`,
    /// `pending`, `firing`).
    pub async fn alerts(&self) -> Result<Vec<(String, String)>> {
        let body = self
            .get("/api/v1/rules", &["type=alert".to_owned()])
            .await?;
        Ok(body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// GET `path` of Prometheus's API with the `params` (URL-encoded), as JSON.
    async fn get(&self, path: &str, params: &[String]) -> Result<Value> {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-sS", "--max-time", "10", "--get"]);
        for p in params {
            curl.arg("--data-urlencode").arg(p);
        }
        let out = curl
            .arg(format!("http://{}:9090{path}", self.ip))
            .output()
            .await?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            anyhow!(
                "GET {path} {params:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// An instant query: every series it returns. A query Prometheus refuses is an error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let body = self
            .get("/api/v1/query", &[format!("query={promql}")])
            .await?;
        if body["status"] != "success" {
            return Err(anyhow!("query {promql}: {body}"));
        }
        body["data"]["result"]
            .as_array()
            .ok_or_else(|| anyhow!("query {promql}: no result vector: {body}"))?
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow!("query {promql}: a sample without a value: {s}"))?;
                Ok(Sample {
                    labels: s["metric"].as_object().cloned().unwrap_or_default(),
                    value,
                })
            })
            .collect()
    }

    /// Polls `promql` until `accept` takes its samples.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        promql: &str,
        accept: impl Fn(&[Sample]) -> Result<(), String>,
    ) -> Result<Vec<Sample>> {
        eventually(what, timeout, || async {
            let samples = self.query(promql).await.map_err(|e| e.to_string())?;
            accept(&samples).map_err(|why| format!("{promql}: {why}: {samples:?}"))?;
            Ok(samples)
        })
        .await
    }
}
