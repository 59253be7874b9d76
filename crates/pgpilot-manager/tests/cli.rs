//! The binary's behaviour before it reaches any cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

const MANAGER: &str = env!("CARGO_BIN_EXE_pgpilot-manager");

fn run(args: &[&str], kubeconfig: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(MANAGER);
    cmd.args(args).env_remove("KUBERNETES_SERVICE_HOST");
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn help_names_every_flag() {
    let (code, out) = run(&["--help"], None);
    assert_eq!(code, Some(0));
    for flag in [
        "--controllers",
        "--namespace",
        "--leader-elect",
        "--leader-election-lease-duration",
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--log-format",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
}

#[test]
fn unknown_controllers_are_refused_with_the_choices() {
    let (code, out) = run(&["--controllers=cluster,postgres"], None);
    assert_eq!(code, Some(2));
    assert!(
        out.contains(
            "unknown controller 'postgres'; choose from cluster, backup, upgrade, secret-rotation"
        ),
        "{out}"
    );
}

#[test]
fn without_a_cluster_it_exits_with_one_clear_error() {
    let dir = std::env::temp_dir().join(format!("pgpilot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let (code, out) = run(&["--log-format=text"], kubeconfig.to_str());
    assert_eq!(code, Some(1));
    assert!(
        out.contains(
            "pgpilot-manager: error: cannot reach the Kubernetes API at https://127.0.0.1:1/"
        ),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");

    let (code, out) = run(&["--log-format=text"], Some("/nonexistent/kubeconfig"));
    assert_eq!(code, Some(1));
    assert!(out.contains("no Kubernetes configuration found"), "{out}");
}

#[test]
fn the_crds_subcommand_prints_every_kind() {
    let (code, out) = run(&["crds"], None);
    assert_eq!(code, Some(0));
    for kind in [
        "PostgresCluster",
        "PostgresBackup",
        "BackupSchedule",
        "PostgresUpgrade",
        "SecretRotation",
    ] {
        assert!(out.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
}
