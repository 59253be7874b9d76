//! A real Prometheus (localhost/pgpilot/prometheus, Debian's) in the test's namespace,
//! finding the instances' exporters as the chart's PodMonitor does: pods managed by pgpilot,
//! port `metrics`, labelled with namespace, cluster and pod; and scraping the test's manager
//! when it serves `/metrics` where pods reach it ([`Env::start_scraped`]).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::harness::{Env, eventually};

pub const IMAGE: &str = "localhost/pgpilot/prometheus:2.53.3";
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
    /// Starts Prometheus (Service `prometheus`, scraping every 2 s) and waits until it is
    /// ready.
    pub async fn start(env: &Env) -> Result<Prometheus> {
        let ns = &env.ns;
        let manager = env.metrics_address()?;
        let manager_job = if manager.starts_with("127.") {
            String::new()
        } else {
            format!(
                "  - {{job_name: pgpilot-manager, static_configs: [{{targets: ['{manager}']}}]}}\n"
            )
        };
        let mut config = format!(
            r#"
global: {{scrape_interval: 2s, evaluation_interval: 2s}}
scrape_configs:
  - job_name: pgpilot-instances
    kubernetes_sd_configs: [{{role: pod, namespaces: {{names: [{ns}]}}}}]
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by, __meta_kubernetes_pod_container_port_name]
        regex: pgpilot;metrics
        action: keep
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_label_pgpilot_io_cluster], target_label: cluster}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#
        );
        config.push_str(&manager_job);
        let config = serde_json::to_string(&config)?;
        env.apply(&format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {NAME}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {NAME}}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {NAME}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {NAME}}}
subjects: [{{kind: ServiceAccount, name: {NAME}, namespace: {ns}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {NAME}}}
data: {{prometheus.yml: {config}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {NAME}, labels: {{app: {NAME}}}}}
spec:
  serviceAccountName: {NAME}
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
    - name: prometheus
      image: {IMAGE}
      imagePullPolicy: Never
      args: [--config.file=/etc/prometheus-e2e/prometheus.yml, --storage.tsdb.path=/prometheus]
      ports: [{{name: web, containerPort: 9090}}]
      readinessProbe: {{httpGet: {{path: /-/ready, port: web}}, periodSeconds: 1}}
      securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
      volumeMounts: [{{name: config, mountPath: /etc/prometheus-e2e}}, {{name: data, mountPath: /prometheus}}]
  volumes: [{{name: config, configMap: {{name: {NAME}}}}}, {{name: data, emptyDir: {{}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {NAME}}}
spec:
  selector: {{app: {NAME}}}
  ports: [{{name: web, port: 9090, targetPort: web}}]
"#
        ))?;
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

    /// An instant query: every series it returns. A query Prometheus refuses is an error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://{}:9090/api/v1/query", self.ip))
            .output()
            .await?;
        let body: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            anyhow!(
                "query {promql}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
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
