//! Helpers shared by the manager's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use pgpilot_testkit::{LocalCluster, ManagerProcess, TestNamespace};

/// A test's cluster connection and namespace (CRDs installed).
pub struct Setup {
    pub c: &'static LocalCluster,
    pub client: kube::Client,
    pub ns: TestNamespace,
}

pub async fn setup(prefix: &str) -> Setup {
    let c = pgpilot_testkit::cluster();
    let client = c.admin().await.unwrap();
    pgpilot_testkit::install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, prefix).await.unwrap();
    Setup { c, client, ns }
}

pub const MANAGER: &str = env!("CARGO_BIN_EXE_pgpilot-manager");

/// Grants the `pgpilot-manager` user what `pgpilot-manager rbac` prints, under a name unique
/// to the test; returns a guard that deletes the cluster-scoped objects.
pub struct Grant<'a> {
    cluster: &'a LocalCluster,
    /// Of the ClusterRoles and ClusterRoleBindings it made.
    names: Vec<String>,
}

impl<'a> Grant<'a> {
    pub fn new(cluster: &'a LocalCluster, namespace: &str) -> Self {
        Self::edited(cluster, namespace, "user:pgpilot-manager", |_| {})
    }

    /// What `pgpilot-manager rbac` prints for `grantee`, but without `verb` on `resource`: a
    /// permission someone forgot. (RBAC adds up: a grantee other tests also grant to would
    /// still have it.)
    pub fn without(
        cluster: &'a LocalCluster,
        namespace: &str,
        grantee: &str,
        resource: &str,
        verb: &str,
    ) -> Self {
        Self::edited(cluster, namespace, grantee, |doc| {
            for rule in doc["rules"].as_array_mut().into_iter().flatten() {
                let names_it = rule["resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == resource));
                if let (true, Some(verbs)) = (names_it, rule["verbs"].as_array_mut()) {
                    verbs.retain(|v| v != verb);
                }
            }
        })
    }

    /// What `pgpilot-manager rbac` prints for `grantee`.
    pub fn to(cluster: &'a LocalCluster, namespace: &str, grantee: &str) -> Self {
        Self::edited(cluster, namespace, grantee, |_| {})
    }

    /// What `pgpilot-manager rbac --controllers=<controllers>` prints for `grantee`: only
    /// what those controllers need.
    pub fn for_controllers(
        cluster: &'a LocalCluster,
        namespace: &str,
        grantee: &str,
        controllers: &str,
    ) -> Self {
        Self::printed(cluster, namespace, grantee, Some(controllers), |_| {})
    }

    /// What `pgpilot-manager rbac --webhook` prints for `grantee`: the admission webhooks'
    /// rules, with the Role in `namespace`.
    pub fn for_webhooks(
        cluster: &'a LocalCluster,
        namespace: &str,
        grantee: &str,
        configuration: &str,
        secret: &str,
    ) -> Self {
        let name = format!("pgpilot-{namespace}");
        let args = [
            "rbac",
            "--webhook",
            "--name",
            &name,
            "--namespace",
            namespace,
            "--webhook-configuration",
            configuration,
            "--webhook-secret",
            secret,
            "--bind",
            grantee,
        ];
        let names = vec![format!("{name}-webhook"), format!("{name}-webhook-cluster")];
        Self::apply(
            cluster,
            names,
            &args,
            |_| {},
            grantee,
            &["create", "secrets", "-n", namespace],
        )
    }

    fn edited(
        cluster: &'a LocalCluster,
        namespace: &str,
        grantee: &str,
        edit: impl Fn(&mut serde_json::Value),
    ) -> Self {
        Self::printed(cluster, namespace, grantee, None, edit)
    }

    fn printed(
        cluster: &'a LocalCluster,
        namespace: &str,
        grantee: &str,
        controllers: Option<&str>,
        edit: impl Fn(&mut serde_json::Value),
    ) -> Self {
        let name = match controllers {
            None => format!("pgpilot-manager-{namespace}"),
            Some(c) => format!("pgpilot-{}-{namespace}", c.replace(',', "-")),
        };
        let mut args = vec![
            "rbac".to_owned(),
            "--name".to_owned(),
            name.clone(),
            "--namespace".to_owned(),
            namespace.to_owned(),
            "--bind".to_owned(),
            grantee.to_owned(),
        ];
        if let Some(c) = controllers {
            args.push(format!("--controllers={c}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Every manager needs its Lease.
        Self::apply(
            cluster,
            vec![name],
            &args,
            edit,
            grantee,
            &["get", "leases.coordination.k8s.io", "-n", namespace],
        )
    }

    /// Applies what `pgpilot-manager <args>` prints (edited), then waits until `grantee` may
    /// do `probe`.
    fn apply(
        cluster: &'a LocalCluster,
        names: Vec<String>,
        args: &[&str],
        edit: impl Fn(&mut serde_json::Value),
        grantee: &str,
        probe: &[&str],
    ) -> Self {
        let out = std::process::Command::new(MANAGER)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let mut yaml = String::new();
        for doc in serde_yaml::Deserializer::from_str(&printed) {
            let mut doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            edit(&mut doc);
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&doc).unwrap());
        }
        cluster.kubectl(&["apply", "-f", "-"], Some(&yaml)).unwrap();
        // The authorizer learns of new bindings from a watch: a manager started at once can
        // be refused. Wait until the grantee may do what it surely needs.
        if let Some(user) = impersonated(grantee) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while !cluster.can_i(&user, probe).unwrap_or(false) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{grantee} still may not {} 15 s after the grant",
                    probe.join(" ")
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Grant { cluster, names }
    }
}

/// `kubectl --as` for a grantee of `pgpilot-manager rbac --bind` (`user:NAME` or
/// `serviceaccount:NS/NAME`); groups cannot be impersonated alone.
fn impersonated(grantee: &str) -> Option<String> {
    if let Some(user) = grantee.strip_prefix("user:") {
        return Some(user.to_owned());
    }
    let (ns, name) = grantee.strip_prefix("serviceaccount:")?.split_once('/')?;
    Some(format!("system:serviceaccount:{ns}:{name}"))
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.cluster.kubectl(
                &[
                    "delete",
                    "clusterrole,clusterrolebinding",
                    name,
                    "--ignore-not-found",
                ],
                None,
            );
        }
    }
}

pub fn spawn(c: &LocalCluster, ns: &str, identity: &str, extra: &[&str]) -> ManagerProcess {
    spawn_as(&c.manager_kubeconfig, ns, identity, extra)
}

/// [`spawn`] with another identity's kubeconfig.
pub fn spawn_as(kubeconfig: &Path, ns: &str, identity: &str, extra: &[&str]) -> ManagerProcess {
    spawn_leading(kubeconfig, ns, "pgpilot", identity, extra)
}

/// [`spawn_as`] electing its leader on Lease `lease`: a manager that runs beside, not
/// instead of, those on another Lease.
pub fn spawn_leading(
    kubeconfig: &Path,
    ns: &str,
    lease: &str,
    identity: &str,
    extra: &[&str],
) -> ManagerProcess {
    let mut args = vec![
        "--leader-elect".to_owned(),
        format!("--leader-election-namespace={ns}"),
        format!("--leader-election-lease-name={lease}"),
        format!("--leader-election-identity={identity}"),
        // Tests run side by side: each manager stays in its own namespace.
        format!("--namespace={ns}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ManagerProcess::spawn(Path::new(MANAGER), kubeconfig, &args).unwrap()
}

/// A kubeconfig for ServiceAccount `namespace/name` (created here), beside the cluster's:
/// an identity no other test grants anything to.
pub fn service_account_kubeconfig(c: &LocalCluster, namespace: &str, name: &str) -> PathBuf {
    c.kubectl(&["create", "serviceaccount", name, "-n", namespace], None)
        .unwrap();
    let token = c
        .kubectl(
            &["create", "token", name, "-n", namespace, "--duration=1h"],
            None,
        )
        .unwrap();
    let base = std::fs::read_to_string(&c.manager_kubeconfig).unwrap();
    let mut config: serde_json::Value = serde_yaml::from_str(&base).unwrap();
    config["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    let path = std::env::temp_dir().join(format!("{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}
