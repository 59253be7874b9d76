//! What every e2e test needs: a namespace of its own on the running node cluster, a manager
//! confined to it with least-privilege RBAC, PostgresClusters from YAML, waits that say what
//! they last saw, SQL connections through the cluster's Services, and — when a test fails — the
//! manager's log, the pods, the cluster status and the namespace's Events.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::InstanceStatus;
use pgpilot_api::labels;
use pgpilot_testkit::writer::{WriteLog, WriterConfig};
use pgpilot_testkit::{LocalCluster, ManagerProcess, install_crds, running_cluster};
use rand::RngExt;

pub const MANAGER: &str = env!("CARGO_BIN_EXE_pgpilot-manager");
/// The image of the node's containerd for PostgreSQL 17 (`images/postgres/build.sh 17`).
pub const DEFAULT_IMAGE: &str = "17=localhost/pgpilot/postgres:17";
/// The labels the Helm chart gives the manager's pods, passed to every test's manager: the
/// clusters' NetworkPolicies let pods with them in, in [`Env::operator_namespace`].
pub const OPERATOR_POD_LABELS: &str =
    "app.kubernetes.io/name=pgpilot,app.kubernetes.io/component=manager";
/// Port of PostgreSQL in the Services.
pub const PG_PORT: u16 = 5432;
/// Patroni's configuration inside an instance pod.
/// Patroni's configuration directory (patroni.yaml, and auth.yaml with the REST API's
/// credentials, which patronictl needs for a switchover).
pub const PATRONI_CONFIG: &str = "/etc/patroni";

/// Every pgpilot kind, for `kubectl get`.
pub const PGPILOT_KINDS: &str =
    "postgresclusters,postgresbackups,postgresupgrades,backupschedules,secretrotations";

/// What a GitOps tool says of an object ([`Env::health`]).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Verdict {
    pub kind: String,
    pub name: String,
    pub argo: Said,
    pub kstatus: Said,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Said {
    pub status: String,
    pub message: String,
}

/// A PostgresCluster manifest, built like a fixture: `ClusterYaml::new("db").instances(3)`.
/// Small on purpose (1Gi, 50m CPU): the node is shared.
pub struct ClusterYaml {
    name: String,
    instances: i32,
    postgresql: String,
    extra: Vec<String>,
}

impl ClusterYaml {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            instances: 1,
            postgresql: "{version: 17}".to_owned(),
            extra: vec![],
        }
    }

    pub fn instances(mut self, n: i32) -> Self {
        self.instances = n;
        self
    }

    /// Synchronous replication that never gives up a standby (`mode: Required`), by `method`
    /// (`Quorum` or `Priority`).
    pub fn sync_required(self, method: &str) -> Self {
        self.spec(&format!(
            "replication: {{synchronous: {{mode: Required, method: {method}, numberOfStandbys: 1}}}}"
        ))
    }

    /// PostgreSQL `version` from `image` (the manager's default is 17's).
    pub fn postgres(mut self, version: i32, image: &str) -> Self {
        self.postgresql = format!("{{version: {version}, image: '{image}'}}");
        self
    }

    /// One more line under `spec:` (flow-style YAML).
    pub fn spec(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: pgpilot.io/v1alpha1
kind: PostgresCluster
metadata: {{name: {}}}
spec:
  instances: {}
  postgresql: {}
  storage: {{size: 1Gi}}
  resources: {{requests: {{cpu: 50m, memory: 128Mi}}, limits: {{memory: 512Mi}}}}
  patroni: {{ttl: 20, loopWait: 2, retryTimeout: 4}}
",
            self.name, self.instances, self.postgresql
        );
        for line in &self.extra {
            y.push_str("  ");
            y.push_str(line);
            y.push('\n');
        }
        y
    }
}

/// Login data of a PostgreSQL role, from a Secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub dbname: String,
}

/// One test's world: its namespace, its manager (with RBAC), an admin client.
pub struct Env {
    pub c: &'static LocalCluster,
    pub client: Client,
    controllers: &'static str,
    pub ns: String,
    rbac_name: String,
    /// Namespaces the test made besides its own, deleted with it.
    extra_namespaces: Vec<String>,
    manager: Option<ManagerProcess>,
    /// Where the manager serves `/metrics`: loopback, or the node's address for a
    /// Prometheus in the cluster ([`Env::start_scraped`]).
    metrics_host: String,
    /// More environment for the manager ([`Env::restart_manager_with`]).
    manager_env: Vec<(String, String)>,
    started: Instant,
    finished: bool,
}

impl Env {
    /// Namespace `e2e-<prefix>-<random>`, CRDs, RBAC and a running manager with every
    /// controller this build has (the cluster's tests pass with the others on as well).
    /// Panics (with the reason) if the cluster is not a node cluster or the manager does not
    /// start.
    pub async fn start(prefix: &str) -> Env {
        Self::start_controllers(prefix, "cluster,backup,upgrade,secret-rotation").await
    }

    /// Like [`Env::start`], with the manager running `controllers` (e.g. `cluster,backup`)
    /// and holding exactly their RBAC.
    pub async fn start_controllers(prefix: &str, controllers: &'static str) -> Env {
        Self::start_with(prefix, controllers, false).await
    }

    /// Namespace and CRDs only: no manager on the host (a test that installs the operator in
    /// the cluster, with the chart).
    pub async fn start_without_manager(prefix: &str) -> Env {
        Self::start_with(prefix, "", false).await
    }

    /// Like [`Env::start`], with the manager's `/metrics` on the node's address, where pods
    /// (a Prometheus) reach it.
    pub async fn start_scraped(prefix: &str) -> Env {
        Self::start_with(prefix, "cluster,backup,upgrade,secret-rotation", true).await
    }

    async fn start_with(prefix: &str, controllers: &'static str, scraped: bool) -> Env {
        let c = running_cluster();
        assert!(
            c.node,
            "the e2e tests need a node cluster (pods really running), but the cluster in \
             PGPILOT_CLUSTER_DIR={} has no node: run `. e2e/scripts/e2e-env.sh; \
             . e2e/scripts/env.sh` first (and start it with e2e/scripts/cluster-up.sh --node)",
            std::env::var("PGPILOT_CLUSTER_DIR").unwrap_or_else(|_| "<unset>".into())
        );
        let client = match c.admin().await {
            Ok(client) => client,
            Err(e) => panic!("admin client for {}: {e}", c.apiserver_url),
        };
        let suffix: u32 = rand::rng().random();
        let ns = format!("e2e-{prefix}-{suffix:08x}");
        let mut env = Env {
            c,
            client,
            controllers,
            rbac_name: format!("pgpilot-manager-{ns}"),
            ns,
            extra_namespaces: Vec::new(),
            manager: None,
            metrics_host: if scraped {
                // The API server listens on the node's address in a node cluster.
                c.apiserver_url
                    .trim_start_matches("https://")
                    .rsplit_once(':')
                    .map_or("127.0.0.1", |(host, _)| host)
                    .to_owned()
            } else {
                "127.0.0.1".to_owned()
            },
            manager_env: Vec::new(),
            started: Instant::now(),
            finished: false,
        };
        if let Err(e) = env.set_up().await {
            let diagnostics = env.diagnostics().await;
            env.tear_down().await;
            panic!("setting up {}: {e:#}\n{diagnostics}", env.ns);
        }
        env
    }

    async fn set_up(&mut self) -> Result<()> {
        install_crds(&self.client)
            .await
            .map_err(|e| anyhow!("installing crds/: {e}"))?;
        create_namespace(&self.client, &self.ns).await?;
        if self.controllers.is_empty() {
            return Ok(());
        }

        // Exactly what the chart would grant the controllers, bound to the manager's
        // own identity, under a name of this test's (ClusterRoles are shared).
        let out = std::process::Command::new(MANAGER)
            .args([
                "rbac",
                "--controllers",
                self.controllers,
                "--name",
                &self.rbac_name,
            ])
            .args(["--namespace", &self.ns, "--bind", "user:pgpilot-manager"])
            .output()
            .context("running pgpilot-manager rbac")?;
        if !out.status.success() {
            bail!(
                "pgpilot-manager rbac: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rbac = String::from_utf8(out.stdout)?;
        self.c
            .kubectl(&["apply", "-f", "-"], Some(&rbac))
            .map_err(|e| anyhow!("{e}"))?;

        self.spawn_manager().await
    }

    /// Where the manager says its pods run (it runs on the host): a namespace no test makes
    /// unless it asks for it, so only a test of the NetworkPolicy has pods there.
    pub fn operator_namespace(&self) -> String {
        format!("{}-operator", self.ns)
    }

    /// Makes another namespace, `<ns>-<suffix>`, deleted with the test's own.
    pub async fn extra_namespace(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}-{suffix}", self.ns);
        self.extra_namespaces.push(name.clone());
        create_namespace(&self.client, &name).await?;
        Ok(name)
    }

    /// Starts the manager and waits until it is ready.
    async fn spawn_manager(&mut self) -> Result<()> {
        let lease_ns = format!("--leader-election-namespace={}", self.ns);
        let namespace = format!("--namespace={}", self.ns);
        let operator_ns = format!("--pod-namespace={}", self.operator_namespace());
        let manager = ManagerProcess::spawn_with(
            Path::new(MANAGER),
            &self.c.manager_kubeconfig,
            &[
                &format!("--controllers={}", self.controllers),
                &namespace,
                "--leader-elect",
                &lease_ns,
                &format!("--default-image={DEFAULT_IMAGE}"),
                &format!("--operator-pod-labels={OPERATOR_POD_LABELS}"),
                &operator_ns,
            ],
            &self.metrics_host,
            &self.manager_env,
        )
        .map_err(|e| anyhow!("spawning {MANAGER}: {e}"))?;
        let ready = manager.wait_ready(Duration::from_secs(60)).await;
        self.manager = Some(manager);
        ready.map_err(|e| anyhow!("manager: {e}"))
    }

    /// Restarts the manager with `env` added to its environment (e.g. `OTEL_*`).
    pub async fn restart_manager_with(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.manager_env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.restart_manager().await
    }

    /// Kills the manager (its Lease runs out) and starts a new one.
    pub async fn restart_manager(&mut self) -> Result<()> {
        drop(self.manager.take());
        self.spawn_manager().await
    }

    /// Waits until the running manager holds the Lease and runs its controllers: a restarted
    /// one first waits out its predecessor's Lease, and meanwhile the status it would write is
    /// stale.
    pub async fn wait_leading(&self, timeout: Duration) -> Result<()> {
        eventually("the manager to lead", timeout, || async {
            let log = self.manager_log();
            if log.contains("became leader") {
                Ok(())
            } else {
                Err(log.lines().last().unwrap_or_default().to_owned())
            }
        })
        .await
    }

    /// Starts the manager again if it exited (it does when it loses its Lease, for Kubernetes
    /// to restart its container); says whether it had.
    pub async fn revive_manager(&mut self) -> Result<bool> {
        let exited = match self.manager.as_mut() {
            Some(m) => m.wait_exit(Duration::ZERO).await.is_ok(),
            None => true,
        };
        if exited {
            self.manager = None;
            self.spawn_manager().await?;
        }
        Ok(exited)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// kubectl in this namespace, as admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        self.c.kubectl(&all, None).map_err(|e| anyhow!("{e}"))
    }

    /// `kubectl apply` of a PostgresCluster (or anything) into this namespace.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.c
            .kubectl(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml))
            .map(drop)
            .map_err(|e| anyhow!("{e}"))
    }

    /// A JSON merge patch of a PostgresCluster's spec, e.g. `{"instances": 1}`.
    /// The notes of the namespace's Events about PostgresClusters with `reason`.
    pub fn cluster_event_notes(&self, reason: &str) -> Result<String> {
        self.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason},involvedObject.kind=PostgresCluster"),
            "-o",
            "jsonpath={.items[*].message}",
        ])
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Result<()> {
        self.api::<PostgresCluster>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .with_context(|| format!("patching spec of {name} with {spec}"))?;
        Ok(())
    }

    pub async fn cluster(&self, name: &str) -> Result<PostgresCluster> {
        self.api::<PostgresCluster>()
            .get(name)
            .await
            .with_context(|| format!("get postgrescluster {name}"))
    }

    /// Waits until `name` matches `pred`, which explains a mismatch in its `Err`.
    pub async fn wait_cluster(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PostgresCluster) -> Result<(), String>,
    ) -> Result<PostgresCluster> {
        eventually(what, timeout, || async {
            let pg = self.cluster(name).await.map_err(|e| format!("{e:#}"))?;
            pred(&pg).map_err(|why| format!("{why}\n{}", summary(&pg)))?;
            Ok(pg)
        })
        .await
    }

    /// Waits like `kubectl wait --for=condition=Ready`: Ready=True for the current generation,
    /// with `instances` ready instances and a primary.
    pub async fn wait_ready(
        &self,
        name: &str,
        instances: i32,
        timeout: Duration,
    ) -> Result<PostgresCluster> {
        self.wait_cluster(
            name,
            &format!("{name} Ready with {instances} instance(s)"),
            timeout,
            |pg| {
                condition_is(pg, "Ready", "True")?;
                let st = pg.status.as_ref().ok_or("no status")?;
                if st.ready_instances != instances {
                    return Err(format!("readyInstances {}", st.ready_instances));
                }
                if st.current_primary.is_none() {
                    return Err("no currentPrimary".into());
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn secret(&self, name: &str) -> Result<Secret> {
        self.api::<Secret>()
            .get(name)
            .await
            .with_context(|| format!("get secret {name}"))
    }

    /// Username, password and database from a Secret with those keys (`dbname` defaults to
    /// `postgres`, as in `<cluster>-superuser`).
    pub async fn credentials(&self, secret: &str) -> Result<Credentials> {
        let s = self.secret(secret).await?;
        let key = |k: &str| secret_value(&s, k).with_context(|| format!("secret {secret}"));
        Ok(Credentials {
            username: key("username")?,
            password: key("password")?,
            dbname: key("dbname").unwrap_or_else(|_| "postgres".into()),
        })
    }

    /// A sequence writer's settings for `<cluster>-rw`, as the superuser.
    pub async fn rw_writer(&self, cluster: &str) -> Result<WriterConfig> {
        let su = self.superuser(cluster).await?;
        Ok(WriterConfig::new(
            &self.service_ip(&format!("{cluster}-rw")).await?,
            PG_PORT,
            &su.username,
            &su.password,
            &su.dbname,
        ))
    }

    pub async fn superuser(&self, cluster: &str) -> Result<Credentials> {
        self.credentials(&format!("{cluster}-superuser")).await
    }

    /// The value of series `name{namespace="<ns>",cluster="<cluster>"}` on the manager's
    /// `/metrics`, once it is there (a controller sets it right after its status write).
    pub async fn cluster_metric(&self, name: &str, cluster: &str) -> Result<f64> {
        let address = self.metrics_address()?;
        let series = format!("{name}{{namespace=\"{}\",cluster=\"{cluster}\"}} ", self.ns);
        eventually(&series, Duration::from_secs(30), || async {
            let out = tokio::process::Command::new("curl")
                .args(["-fsS", "--max-time", "5"])
                .arg(format!("http://{address}/metrics"))
                .output()
                .await
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
                .ok_or(format!("no {series}on /metrics"))
        })
        .await
    }

    /// The manager's log so far.
    pub fn manager_log(&self) -> String {
        self.manager.as_ref().map(|m| m.log()).unwrap_or_default()
    }

    /// Everything the manager's `/metrics` serves now.
    pub async fn metrics(&self) -> Result<String> {
        let address = self.metrics_address()?;
        let out = tokio::process::Command::new("curl")
            .args(["-fsS", "--max-time", "5"])
            .arg(format!("http://{address}/metrics"))
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "curl /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Where the manager serves `/metrics` (`host:port`).
    pub fn metrics_address(&self) -> Result<String> {
        self.manager
            .as_ref()
            .context("no manager")?
            .metrics_address()
            .context("the manager has not logged its metrics address")
    }

    /// The ClusterIP of a Service (the host reaches the Service CIDR directly; it cannot
    /// resolve cluster DNS names).
    pub async fn service_ip(&self, service: &str) -> Result<String> {
        let svc = self
            .api::<Service>()
            .get(service)
            .await
            .with_context(|| format!("get service {service}"))?;
        svc.spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| anyhow!("service {service} has no ClusterIP"))
    }

    /// A tokio-postgres configuration for `service` (e.g. `db-rw`) as `creds`.
    pub async fn pg_config(
        &self,
        service: &str,
        creds: &Credentials,
    ) -> Result<tokio_postgres::Config> {
        Ok(instance_config(&self.service_ip(service).await?, creds))
    }

    /// Connects to `service` as `creds`, retrying until `timeout` (a Service has no endpoint
    /// for a moment after a role change).
    pub async fn connect(
        &self,
        service: &str,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client> {
        let config = self.pg_config(service, creds).await?;
        eventually(
            &format!("a connection to {service} as {}", creds.username),
            timeout,
            || async { connect(&config).await.map_err(|e| format!("{e:#}")) },
        )
        .await
    }

    /// Runs `patronictl` in an instance pod.
    pub fn patronictl(&self, pod: &str, args: &[&str]) -> Result<String> {
        let mut all = vec![
            "exec",
            pod,
            "-c",
            "postgres",
            "--",
            "patronictl",
            "-c",
            PATRONI_CONFIG,
        ];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    /// Instance pods of `cluster`, by name.
    pub async fn pods(&self, cluster: &str) -> Result<Vec<Pod>> {
        let lp =
            ListParams::default().labels(&format!("{}={cluster}", pgpilot_api::labels::CLUSTER));
        let mut pods = self.api::<Pod>().list(&lp).await?.items;
        pods.sort_by_key(|p| p.name_any());
        Ok(pods)
    }

    /// What a red test should show: the manager's log tail, pods, clusters' status, Patroni's
    /// view, and the namespace's recent Events.
    pub async fn diagnostics(&self) -> String {
        let mut out = format!(
            "===== diagnostics of namespace {} ({} s after start) =====\n",
            self.ns,
            self.started.elapsed().as_secs()
        );
        if let Some(m) = &self.manager {
            // Without colours and the lease renewals, which would fill the tail.
            let log = strip_ansi(&m.log());
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("kube_lease_manager"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            out += &format!(
                "--- manager log ({}, last {} lines but lease renewals) ---\n{}\n",
                m.log_path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
        let show = |title: &str, args: &[&str]| {
            let text = self.kubectl(args).unwrap_or_else(|e| format!("{e:#}\n"));
            format!("--- {title} ---\n{text}")
        };
        out += &show(
            "kubectl get pods -o wide",
            &["get", "pods", "-o", "wide", "-L", pgpilot_api::labels::ROLE],
        );
        out += &show(
            "kubectl get pgc,sts,pvc,endpointslices",
            &["get", "pgc,sts,pvc,endpointslices"],
        );
        if let Ok(list) = self
            .api::<PostgresCluster>()
            .list(&ListParams::default())
            .await
        {
            for pg in list {
                out += &format!("--- status of {} ---\n{}\n", pg.name_any(), summary(&pg));
                let pods = self.pods(&pg.name_any()).await.unwrap_or_default();
                let running = |p: &&Pod| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                };
                if let Some(pod) = pods.iter().find(running) {
                    for what in ["list", "history"] {
                        out += &show(
                            &format!("patronictl {what} (in {})", pod.name_any()),
                            &[
                                "exec",
                                &pod.name_any(),
                                "--request-timeout=10s",
                                "--",
                                "patronictl",
                                "-c",
                                PATRONI_CONFIG,
                                what,
                            ],
                        );
                    }
                }
                for pod in pods.iter().filter(running) {
                    // Patroni's "no action" heartbeat every loop would hide what happened.
                    let log = self
                        .kubectl(&["logs", &pod.name_any(), "--request-timeout=10s"])
                        .unwrap_or_else(|e| format!("{e:#}"));
                    let lines: Vec<&str> =
                        log.lines().filter(|l| !l.contains("no action.")).collect();
                    out += &format!(
                        "--- log of {} (last 40 lines but Patroni's \"no action\") ---\n{}\n",
                        pod.name_any(),
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    );
                }
            }
        }
        let events = self
            .kubectl(&["get", "events", "--sort-by=.lastTimestamp"])
            .unwrap_or_else(|e| format!("{e:#}"));
        let lines: Vec<&str> = events.lines().collect();
        out += &format!(
            "--- events (last 40) ---\n{}\n",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
        out
    }

    /// Ends the test: on failure prints the diagnostics; then stops the manager, deletes the
    /// namespace and the RBAC, and panics with the failure.
    /// What Argo CD (pgpilot's health scripts) and kstatus say of every pgpilot object in the
    /// namespace (e2e/gitops's `pgpilot-health`). With `PGPILOT_RECORD_STATUSES=<dir>`, each
    /// object is also saved there, as `<Kind>/<argo>-<kstatus>-<name>.json`: the recorded
    /// statuses gitops/argocd's tests replay.
    pub fn health(&self) -> Result<Vec<Verdict>> {
        let objects = self.kubectl(&["get", PGPILOT_KINDS, "-o", "json"])?;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut child = std::process::Command::new("go")
            .args(["run", "./cmd/pgpilot-health", "-scripts"])
            .arg(repo.join("gitops/argocd"))
            .current_dir(repo.join("e2e/gitops"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("go run e2e/gitops/cmd/pgpilot-health")?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, objects.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "pgpilot-health: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdicts = String::from_utf8(out.stdout)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Verdict>, _>>()?;
        if let Some(dir) = std::env::var_os("PGPILOT_RECORD_STATUSES") {
            // The very objects judged (a later read could be newer).
            let list: serde_json::Value = serde_json::from_str(&objects)?;
            for (v, mut object) in verdicts
                .iter()
                .zip(list["items"].as_array().cloned().unwrap_or_default())
            {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("managedFields");
                }
                let kind_dir = Path::new(&dir).join(&v.kind);
                std::fs::create_dir_all(&kind_dir)?;
                // JSON (which YAML readers take): no YAML 1.1 reader mistakes a time for a
                // timestamp.
                let file = format!("{}-{}-{}.json", v.argo.status, v.kstatus.status, v.name);
                let text = serde_json::to_string_pretty(&object)? + "\n";
                std::fs::write(kind_dir.join(file.to_lowercase()), text)?;
            }
        }
        Ok(verdicts)
    }

    pub async fn finish(mut self, result: Result<()>) {
        if std::env::var_os("PGPILOT_RECORD_STATUSES").is_some()
            && let Err(e) = self.health()
        {
            eprintln!("{}: recording statuses: {e:#}", self.ns);
        }
        // Every test that passes also shows pgpilot kept the namespace's secrets to itself.
        let result = match result {
            Ok(()) => self.no_secret_leaked().await,
            failed => failed,
        };
        let diagnostics = match &result {
            Err(_) => Some(self.diagnostics().await),
            Ok(()) => None,
        };
        let elapsed = self.started.elapsed();
        let manager_log = self.manager.as_ref().map(|m| m.log_path.clone());
        self.tear_down().await;
        match result {
            Ok(()) => {
                // A failure keeps the log (its path is in the diagnostics).
                if let Some(path) = manager_log {
                    let _ = std::fs::remove_file(path);
                }
                eprintln!("{}: passed in {} s", self.ns, elapsed.as_secs())
            }
            Err(e) => panic!(
                "{}: failed after {} s: {e:#}\n{}",
                self.ns,
                elapsed.as_secs(),
                diagnostics.unwrap_or_default()
            ),
        }
    }

    /// No secret value of the namespace's Secrets (passwords, private keys, the object store's
    /// secret keys: pgpilot's and the user's) in what pgpilot writes: its log (span fields
    /// included), the namespace's Events, the status of every pgpilot resource, its metrics.
    async fn no_secret_leaked(&self) -> Result<()> {
        let outputs = [
            ("manager log".to_owned(), self.manager_log()),
            (
                "Events".to_owned(),
                self.kubectl(&["get", "events", "-o", "yaml"])?,
            ),
            (
                "pgpilot resources".to_owned(),
                self.kubectl(&["get", PGPILOT_KINDS, "-o", "yaml"])?,
            ),
            (
                "metrics".to_owned(),
                self.metrics().await.unwrap_or_default(),
            ),
        ];
        self.no_secret_in(&outputs).await
    }

    /// No secret value of the namespace's Secrets (passwords, private keys, secret keys) in
    /// any of `outputs` (what, text).
    pub async fn no_secret_in(&self, outputs: &[(String, String)]) -> Result<()> {
        let secrets = self.api::<Secret>().list(&ListParams::default()).await?;
        let mut needles = Vec::new();
        for secret in &secrets.items {
            for (key, value) in secret.data.iter().flatten() {
                let key_lc = key.to_lowercase();
                if !(key_lc.contains("password")
                    || key_lc.contains("secret")
                    || key_lc.ends_with(".key"))
                {
                    continue;
                }
                let text = String::from_utf8_lossy(&value.0).into_owned();
                // A PEM key by its body lines, which survive any re-wrapping of the whole.
                let parts: Vec<String> = if text.contains("-----BEGIN") {
                    text.lines()
                        .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                        .map(str::to_owned)
                        .collect()
                } else {
                    vec![text]
                };
                for part in parts.into_iter().filter(|p| p.len() >= 8) {
                    needles.push((
                        format!("{}/{key}", secret.metadata.name.clone().unwrap_or_default()),
                        part,
                    ));
                }
            }
        }
        for (secret, needle) in &needles {
            for (what, text) in outputs {
                ensure!(
                    !text.contains(needle.as_str()),
                    "a value of Secret {secret} is in the {what}"
                );
            }
        }
        Ok(())
    }

    async fn tear_down(&mut self) {
        self.finished = true;
        // The manager first, so it does not fight the deletion.
        drop(self.manager.take());
        for extra in &self.extra_namespaces {
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete(extra, &DeleteParams::background())
                .await;
        }
        let deleted = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::background())
            .await;
        // The instances' grace period is long (a clean stop waits for the archiver, which
        // cannot reach an object store deleted with them): the test is over, so its pods go
        // at once. A terminating namespace takes no new pods, so none come back.
        for ns in self.extra_namespaces.iter().chain([&self.ns]) {
            let _ = self.c.kubectl(
                &[
                    "delete",
                    "pods",
                    "--all",
                    "-n",
                    ns,
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ],
                None,
            );
        }
        let _ = self.c.kubectl(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &self.rbac_name,
                "--ignore-not-found",
            ],
            None,
        );
        if deleted.is_ok() {
            // The node is shared: let the pods go before the next test starts its own.
            let gone = eventually("namespace deleted", Duration::from_secs(120), || async {
                match Api::<Namespace>::all(self.client.clone())
                    .get_opt(&self.ns)
                    .await
                {
                    Ok(None) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
            if let Err(e) = gone {
                eprintln!("note: {} still terminating: {e:#}", self.ns);
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A panic inside the test: best effort, without waiting.
        drop(self.manager.take());
        for ns in self.extra_namespaces.iter().chain([&self.ns]) {
            let _ = self.c.kubectl(
                &[
                    "delete",
                    "namespace",
                    ns,
                    "--wait=false",
                    "--ignore-not-found",
                ],
                None,
            );
        }
        let _ = self.c.kubectl(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &self.rbac_name,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// Polls `probe` every 500 ms until it returns `Ok`, or fails after `timeout` with the last
/// reason it gave.
/// A namespace labelled as the e2e tests' own.
async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("pgpilot.io/test".to_owned(), "e2e".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(30), probe()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(why)) => why,
            Err(_) => "the probe itself took over 30 s".to_owned(),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Connects with `config`, driving the connection on a task of its own.
pub async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Instance `name` in the cluster's status.
/// The highest timeline the instances report (a failover raises it).
pub fn timeline(pg: &PostgresCluster) -> Option<i64> {
    pg.status
        .as_ref()?
        .instances
        .iter()
        .filter_map(|i| i.timeline)
        .max()
}

pub fn instance<'a>(pg: &'a PostgresCluster, name: &str) -> Result<&'a InstanceStatus, String> {
    let st = pg.status.as_ref().ok_or("no status yet")?;
    st.instances
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("no instance {name} in status"))
}

/// `Ok` when condition `type_` has `status` for the object's current generation.
/// The cluster's condition `type_`, whatever its generation.
pub fn condition<'a>(
    pg: &'a PostgresCluster,
    type_: &str,
) -> Result<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pg.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == type_)
        .with_context(|| format!("no {type_} condition"))
}

pub fn condition_is(pg: &PostgresCluster, type_: &str, status: &str) -> Result<(), String> {
    let generation = pg.metadata.generation;
    let st = pg.status.as_ref().ok_or("no status yet")?;
    if st.observed_generation != generation {
        return Err(format!(
            "status.observedGeneration {:?} != generation {generation:?}",
            st.observed_generation
        ));
    }
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .ok_or_else(|| format!("no {type_} condition"))?;
    if c.observed_generation != generation {
        return Err(format!(
            "{type_}.observedGeneration {:?} != generation {generation:?}",
            c.observed_generation
        ));
    }
    if c.status != status {
        return Err(format!(
            "{type_}={} ({}: {}), want {status}",
            c.status, c.reason, c.message
        ));
    }
    Ok(())
}

/// One screen of a cluster's status: phase, primary, conditions, instances.
pub fn summary(pg: &PostgresCluster) -> String {
    let Some(st) = &pg.status else {
        return format!("{}: no status", pg.name_any());
    };
    let mut s = format!(
        "{} generation={:?} observedGeneration={:?} phase={:?} primary={:?} ready={}/{} replicas={}\n",
        pg.name_any(),
        pg.metadata.generation,
        st.observed_generation,
        st.phase,
        st.current_primary,
        st.ready_instances,
        pg.spec.instances,
        st.replicas
    );
    for c in &st.conditions {
        s += &format!(
            "  condition {}={} reason={} gen={:?}: {}\n",
            c.type_, c.status, c.reason, c.observed_generation, c.message
        );
    }
    for i in &st.instances {
        s += &format!(
            "  instance {} role={:?} state={:?} ready={} timeline={:?} lagBytes={:?} version={:?}\n",
            i.name, i.role, i.state, i.ready, i.timeline, i.lag_bytes, i.postgres_version
        );
    }
    s
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A Secret's value as text.
pub fn secret_value(s: &Secret, key: &str) -> Result<String> {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| anyhow!("no key {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// A tokio-postgres configuration for a server at `ip` (a pod or a Service).
pub fn instance_config(ip: &str, creds: &Credentials) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(ip)
        .port(PG_PORT)
        .user(&creds.username)
        .password(&creds.password)
        .dbname(&creds.dbname)
        .application_name("pgpilot-e2e")
        .connect_timeout(Duration::from_secs(5));
    config
}

/// The role Patroni labels a pod with.
pub fn role_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(labels::ROLE).map(String::as_str)
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The writer's last three failures, newest first.
pub fn last_failures(log: &WriteLog) -> Vec<&str> {
    log.failures
        .iter()
        .rev()
        .take(3)
        .map(|f| f.message.as_str())
        .collect()
}

/// The acknowledged ids of `log` missing from the writer's table as `client` reads it.
pub async fn lost_writes(client: &tokio_postgres::Client, log: &WriteLog) -> Result<Vec<i64>> {
    let stored: HashSet<i64> = client
        .query("select id from pgpilot_writer", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(log.missing(&stored))
}
