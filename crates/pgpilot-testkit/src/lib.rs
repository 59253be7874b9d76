//! Test support shared by pgpilot's integration tests.
//!
//! - [`cluster`] starts (or reuses) the real local control plane from `e2e/scripts` once per
//!   test process and says where its kubeconfigs are;
//! - [`TestNamespace`] gives each test a fresh namespace, deleted afterwards;
//! - [`install_crds`] applies `crds/` and waits until the API serves them;
//! - [`wait_for`] waits for a condition and, on timeout, prints the object and the
//!   namespace's recent Events, so a red test explains itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use rand::RngExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod minio;
pub mod writer;

/// Errors in test support are reported, not handled: a boxed error is enough.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the running local cluster is, from the `cluster.env` that `cluster-up.sh` writes.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    pub apiserver_url: String,
    pub admin_kubeconfig: PathBuf,
    pub manager_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub k8s_version: String,
    /// The cluster has a real node (`cluster-up.sh --node`): pods really run.
    pub node: bool,
}

fn state_dir() -> PathBuf {
    std::env::var_os("PGPILOT_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pgpilot/cluster"))
}

fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// The cluster of this process: set once by [`cluster`] or [`running_cluster`].
static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();

/// Starts the local control plane (with kwok) unless it already runs, once per process.
/// `cluster-up.sh` is idempotent and takes a lock, so concurrent test processes share one
/// cluster. After [`running_cluster`] it returns that cluster and starts nothing.
pub fn cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| match start_cluster() {
        Ok(c) => c,
        Err(e) => panic!("cannot start the local control plane: {e}"),
    })
}

/// The cluster already running in `PGPILOT_CLUSTER_DIR`, read from its `cluster.env`
/// without starting, restarting or changing it: the e2e tier's node cluster is shared and
/// started by hand (`e2e/scripts/cluster-up.sh --node`). Panics with the reason if nothing
/// runs there.
pub fn running_cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| match read_cluster() {
        Ok(c) => c,
        Err(e) => panic!(
            "no running cluster in {} ({e}); start one with e2e/scripts/cluster-up.sh (and set PGPILOT_CLUSTER_DIR)",
            state_dir().display()
        ),
    })
}

fn start_cluster() -> Result<LocalCluster> {
    let root = repo_root();
    let status = Command::new(root.join("e2e/scripts/cluster-up.sh"))
        .arg("--kwok")
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running e2e/scripts/cluster-up.sh: {e}"))?;
    if !status.success() {
        return Err(format!("e2e/scripts/cluster-up.sh --kwok failed: {status}").into());
    }
    read_cluster()
}

fn read_cluster() -> Result<LocalCluster> {
    let env = read_env_file(&state_dir().join("cluster.env"))?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .ok_or_else(|| format!("cluster.env has no {k}"))
    };
    Ok(LocalCluster {
        apiserver_url: get("PGPILOT_APISERVER_URL")?,
        admin_kubeconfig: get("PGPILOT_ADMIN_KUBECONFIG")?.into(),
        manager_kubeconfig: get("PGPILOT_MANAGER_KUBECONFIG")?.into(),
        kubectl: get("PGPILOT_KUBECTL")?.into(),
        k8s_version: get("PGPILOT_K8S_VERSION")?,
        node: env.get("PGPILOT_NODE").is_some_and(|v| v == "1"),
    })
}

async fn client_from(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

impl LocalCluster {
    /// A client with `system:masters` rights. Make one per test: a client belongs to the
    /// Tokio runtime that created it.
    pub async fn admin(&self) -> Result<Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// A client as the operator's own identity (user `pgpilot-manager`, no groups).
    pub async fn manager(&self) -> Result<Client> {
        client_from(&self.manager_kubeconfig).await
    }

    /// Runs the cluster's own kubectl as admin; returns stdout, fails with stderr.
    /// kubectl as admin, to be given its arguments.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        cmd
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use std::io::Write;
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into())
        }
    }
}

impl LocalCluster {
    /// Whether `user` may do what `args` says (`kubectl auth can-i <args> --as <user>`).
    pub fn can_i(&self, user: &str, args: &[&str]) -> Result<bool> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["auth", "can-i", "--as", user])
            .args(args)
            .output()?;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(format!(
                "kubectl auth can-i {}: {other} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into()),
        }
    }
}

/// A namespace that exists for one test and is deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `t-<prefix>-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let suffix: u32 = rand::rng().random();
        let name = format!("t-{prefix}-{suffix:08x}");
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("pgpilot.io/test".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// Deletes the namespace now (and waits for nothing).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort when a test panicked before calling `delete`: a short blocking kubectl,
        // since Drop cannot await.
        let c = cluster();
        let _ = c.kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// Applies every file in `crds/` with server-side apply and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<Vec<String>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = repo_root().join("crds");
    let mut names = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<std::result::Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let text = std::fs::read_to_string(entry.path())?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("pgpilot-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        names.push(name);
    }
    for name in &names {
        let established = |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        };
        wait_for(&api, name, Duration::from_secs(30), established).await?;
    }
    Ok(names)
}

/// Polls `name` until `ready` holds or `timeout` passes. On timeout the error carries the
/// object as YAML and the Events of its namespace, newest last.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    ready: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let start = Instant::now();
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(Some(obj)) if ready(&obj) => return Ok(obj),
            Ok(found) => last = found,
            Err(e) => tracing_note(&format!("get {name}: {e}")),
        }
        if start.elapsed() > timeout {
            let yaml = last
                .as_ref()
                .and_then(|o| serde_yaml::to_string(o).ok())
                .unwrap_or_else(|| "<not found>".into());
            let ns = last.as_ref().and_then(|o| o.namespace());
            let events = match ns {
                Some(ns) => recent_events(api.clone().into_client(), &ns).await,
                None => String::new(),
            };
            return Err(format!(
                "timed out after {timeout:?} waiting for {name}\n--- object ---\n{yaml}--- events ---\n{events}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tracing_note(msg: &str) {
    eprintln!("testkit: {msg}");
}

/// The Events of a namespace, oldest first, one line each.
pub async fn recent_events(client: Client, namespace: &str) -> String {
    let api = Api::<Event>::namespaced(client, namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    e.involved_object.kind.as_deref().unwrap_or(""),
                    e.involved_object.name.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("<listing events failed: {e}>"),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for tests).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: the status code and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A pgpilot-manager process for a test; killed when dropped. Its output goes to a log
/// file that [`ManagerProcess::log`] reads, so a failing test can show it.
pub struct ManagerProcess {
    child: std::process::Child,
    pub log_path: PathBuf,
}

impl ManagerProcess {
    /// Starts `binary` with `args` as the least-privilege `pgpilot-manager` user.
    pub fn spawn(binary: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn_with(binary, kubeconfig, args, "127.0.0.1", &[])
    }

    /// Like [`ManagerProcess::spawn`], with `/metrics` on `metrics_host` (the node's address,
    /// for a Prometheus in the cluster to scrape) and more environment (`OTEL_*`).
    pub fn spawn_with(
        binary: &Path,
        kubeconfig: &Path,
        args: &[&str],
        metrics_host: &str,
        env: &[(String, String)],
    ) -> Result<Self> {
        let suffix: u32 = rand::rng().random();
        let log_path = std::env::temp_dir().join(format!("pgpilot-manager-{suffix:08x}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube_lease_manager=debug")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "--log-format=text",
                // Port 0: the kernel picks free ports and the manager logs them (a port
                // found free and released here could be taken before the manager binds it).
                &format!("--metrics-bind-address={metrics_host}:0"),
                "--health-probe-bind-address=127.0.0.1:0",
            ])
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self { child, log_path })
    }

    /// The address the manager serves `/metrics` on, as it logged it.
    pub fn metrics_address(&self) -> Option<String> {
        self.served("metrics=")
    }

    /// The metrics port the manager logged it serves on; 0 until it has.
    pub fn metrics_port(&self) -> u16 {
        self.served_port("metrics=")
    }

    /// The health probe port the manager logged it serves on; 0 until it has.
    pub fn probes_port(&self) -> u16 {
        self.served_port("probes=")
    }

    fn served(&self, key: &str) -> Option<String> {
        self.log()
            .lines()
            .find(|l| l.contains("serving metrics and health probes"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix(key)))
            .map(str::to_owned)
    }

    fn served_port(&self, key: &str) -> u16 {
        self.served(key)
            .and_then(|addr| addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .unwrap_or(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `KILL`).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} failed", self.pid()).into())
        }
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if start.elapsed() > timeout {
                return Err(
                    format!("still running after {timeout:?}; log:\n{}", self.log()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let port = self.probes_port();
            if port != 0
                && let Ok((200, _)) = http_get(port, "/readyz").await
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(
                    format!("/readyz not ready after {timeout:?}; log:\n{}", self.log()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL server from the machine's packages (`/usr/lib/postgresql/<v>/bin`),
/// on 127.0.0.1 with password authentication, for tests of SQL the operator sends. Stopped
/// and removed when dropped.
pub struct LocalPostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
}

impl LocalPostgres {
    fn as_postgres(&self, program: &str) -> Command {
        // initdb and postgres refuse to run as root.
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        cmd
    }

    /// Starts a server for the newest PostgreSQL installed on this machine.
    pub fn start() -> Result<Self> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL server installed (/usr/lib/postgresql: {e}); apt-get install postgresql"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions
            .pop()
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let suffix: u32 = rand::rng().random();
        let dir = std::env::temp_dir().join(format!("pgpilot-pg-{suffix:08x}"));
        std::fs::create_dir_all(&dir)?;
        let password: String = format!("pw{suffix:08x}{:08x}", rand::rng().random::<u32>());
        std::fs::write(dir.join("pwfile"), &password)?;
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            return Err("chown of the test data dir failed".into());
        }
        let pg = Self {
            dir,
            bin,
            port: free_port()?,
            password,
        };
        let data = pg.dir.join("data");
        let out = pg
            .as_postgres("initdb")
            .args([
                "--auth=scram-sha-256",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-D",
            ])
            .arg(&data)
            .arg(format!("--pwfile={}", pg.dir.join("pwfile").display()))
            .output()?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let out = pg
            .as_postgres("pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .arg(format!(
                "-o -p {} -k {} -c listen_addresses=127.0.0.1",
                pg.port,
                pg.dir.display()
            ))
            .arg(format!("-l{}", pg.dir.join("log").display()))
            .arg("start")
            .output()?;
        if !out.status.success() {
            return Err(format!("pg_ctl start: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(pg)
    }

    /// A connection string for `user` to `dbname`.
    pub fn conninfo(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={dbname}",
            self.port
        )
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
