//! Helpers shared by the manager's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use pgpilot_testkit::{LocalCluster, ManagerProcess};

pub const MANAGER: &str = env!("CARGO_BIN_EXE_pgpilot-manager");

/// Grants the `pgpilot-manager` user what `pgpilot-manager rbac` prints, under a name unique
/// to the test; returns a guard that deletes the cluster-scoped objects.
pub struct Grant<'a> {
    cluster: &'a LocalCluster,
    name: String,
}

impl<'a> Grant<'a> {
    pub fn new(cluster: &'a LocalCluster, namespace: &str) -> Self {
        let name = format!("pgpilot-manager-{namespace}");
        let out = std::process::Command::new(MANAGER)
            .args([
                "rbac",
                "--name",
                &name,
                "--namespace",
                namespace,
                "--bind",
                "user:pgpilot-manager",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        cluster.kubectl(&["apply", "-f", "-"], Some(&yaml)).unwrap();
        Grant { cluster, name }
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &self.name,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

pub fn spawn(c: &LocalCluster, ns: &str, identity: &str, extra: &[&str]) -> ManagerProcess {
    let mut args = vec![
        "--leader-elect".to_owned(),
        format!("--leader-election-namespace={ns}"),
        "--leader-election-lease-name=pgpilot".to_owned(),
        format!("--leader-election-identity={identity}"),
        // Tests run side by side: each manager stays in its own namespace.
        format!("--namespace={ns}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ManagerProcess::spawn(Path::new(MANAGER), &c.manager_kubeconfig, &args).unwrap()
}
