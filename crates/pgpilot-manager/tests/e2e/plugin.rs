//! `kubectl pgpilot`: every subcommand through kubectl's own plugin discovery (the binary on
//! the PATH), against a two-instance cluster archiving to MinIO.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::{PostgresBackup, PostgresCluster};

use crate::harness::{Env, eventually, instance};
use crate::restore::archiving_cluster;

const READY: Duration = Duration::from_secs(300);

#[tokio::test]
async fn every_subcommand_of_the_kubectl_plugin_works_on_a_real_cluster() {
    let env = Env::start("plugin").await;
    let result = plugin(&env).await;
    env.finish(result).await;
}

/// `target/debug/kubectl-pgpilot`, beside this test's own directory (`just e2e` builds it).
fn plugin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary has no target directory")?
        .to_owned();
    ensure!(
        dir.join("kubectl-pgpilot").is_file(),
        "no kubectl-pgpilot in {}: cargo build -p kubectl-pgpilot",
        dir.display()
    );
    Ok(dir)
}

/// `kubectl pgpilot -n <ns> <args>`, found by kubectl on the PATH.
fn pgpilot(env: &Env, args: &[&str]) -> Result<Output> {
    let path = format!(
        "{}:{}",
        plugin_dir()?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Ok(std::process::Command::new(&env.c.kubectl)
        .arg("pgpilot")
        .args(["-n", &env.ns])
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &env.c.admin_kubeconfig)
        .env("KUBECTL", &env.c.kubectl)
        .output()?)
}

/// Its stdout, or an error with both streams.
fn ok(env: &Env, args: &[&str]) -> Result<String> {
    let out = pgpilot(env, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kubectl pgpilot {}: {}\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

fn has(text: &str, wants: &[&str]) -> Result<()> {
    for want in wants {
        ensure!(text.contains(want), "no {want:?} in:\n{text}");
    }
    Ok(())
}

async fn primary(env: &Env) -> Result<String> {
    env.cluster("db")
        .await?
        .status
        .and_then(|s| s.current_primary)
        .context("no currentPrimary")
}

async fn plugin(env: &Env) -> Result<()> {
    let _minio = archiving_cluster(env, "db").await?;
    env.patch_spec("db", serde_json::json!({"instances": 2}))
        .await?;
    env.wait_ready("db", 2, READY).await?;

    // version: this plugin, and what the API server serves.
    has(
        &ok(env, &["version"])?,
        &[
            concat!("kubectl-pgpilot ", env!("CARGO_PKG_VERSION")),
            "PostgresCluster: v1alpha1 (storage)",
        ],
    )?;

    // psql on the primary, as the superuser; a row the backup below must carry.
    let out = ok(
        env,
        &[
            "psql",
            "db",
            "--",
            "-XAtc",
            "create table kept as select 42 as answer; select answer from kept",
        ],
    )?;
    ensure!(out.trim().ends_with("42"), "psql printed {out:?}");

    // backup --wait: a PostgresBackup that completes.
    let out = ok(env, &["backup", "db", "--name", "by-plugin", "--wait"])?;
    has(&out, &["postgresbackup/by-plugin created", "completed: "])?;
    let backup = env.api::<PostgresBackup>().get("by-plugin").await?;
    ensure!(
        backup.status.and_then(|s| s.phase) == Some(BackupPhase::Completed),
        "by-plugin not Completed"
    );

    // status: one screen.
    let first = primary(env).await?;
    let status = ok(env, &["status", "db"])?;
    has(
        &status,
        &[
            &format!("Cluster     {}/db   PostgreSQL 17   phase Ready", env.ns),
            "Instances   2/2 ready",
            &format!("{first:<24} primary"),
            "streaming",
            "repository s3://backups/",
            "recoverable from ",
            "by-plugin",
            "CA (ConfigMap db-ca-cert): expires in",
            "server (Secret db-tls): expires in",
            "Events (latest 10)",
        ],
    )?;

    // switchover: the other instance serves.
    let out = ok(env, &["switchover", "db"])?;
    let second = if first == "db-0" { "db-1" } else { "db-0" };
    has(&out, &[&format!("switched over from {first} to {second}")])?;
    // (and the old one streaming from it again, after Patroni restarted it as a replica).
    env.wait_cluster(
        "db",
        "the new primary, the old one streaming",
        READY,
        |pg| {
            let p = pg
                .status
                .as_ref()
                .and_then(|s| s.current_primary.as_deref());
            let old = instance(pg, &first)?;
            (p == Some(second) && old.ready && old.state.as_deref() == Some("streaming"))
                .then_some(())
                .ok_or(format!("primary {p:?}, {first} {old:?}"))
        },
    )
    .await?;

    // restart: PostgreSQL restarts in place (a new postmaster, the same pod).
    let started = |pod: &str| {
        env.kubectl(&[
            "exec",
            pod,
            "-c",
            "postgres",
            "--",
            "psql",
            "-XAtc",
            "select pg_postmaster_start_time()",
        ])
    };
    let uid = |pod: Pod| pod.metadata.uid;
    let before = (
        started(first.as_str())?,
        uid(env.api::<Pod>().get(&first).await?),
    );
    has(
        &ok(env, &["restart", "db", &first])?,
        &[&format!("restarted PostgreSQL in {first}")],
    )?;
    let after = (
        started(first.as_str())?,
        uid(env.api::<Pod>().get(&first).await?),
    );
    ensure!(
        before.0 != after.0,
        "postmaster start time unchanged: {}",
        after.0
    );
    ensure!(before.1 == after.1, "the pod was replaced");

    // pause / resume, and a field a GitOps tool owns: refused with who owns it, --force
    // takes it over.
    ok(env, &["pause", "db"])?;
    ensure!(env.cluster("db").await?.spec.paused, "not paused");
    ok(env, &["resume", "db"])?;
    ensure!(!env.cluster("db").await?.spec.paused, "still paused");
    env.c
        .kubectl(
            &[
                "apply",
                "-n",
                &env.ns,
                "--server-side",
                "--force-conflicts",
                "--field-manager=argocd",
                "-f",
                "-",
            ],
            Some(
                "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: db}\n\
                 spec: {paused: true}\n",
            ),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let refused = pgpilot(env, &["resume", "db"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && stderr.contains("argocd") && stderr.contains("--force"),
        "resume of a field argocd owns: {} {stderr}",
        refused.status
    );
    ok(env, &["resume", "db", "--force"])?;
    ensure!(!env.cluster("db").await?.spec.paused, "still paused");

    // maintenance: Patroni's pause, as Patroni reports it. (argocd's apply above owns
    // spec.maintenance too, as the API server defaulted it in that apply.)
    for (state, on) in [("on", true), ("off", false)] {
        ok(env, &["maintenance", state, "db", "--force"])?;
        eventually(
            &format!("Patroni's maintenance mode {state}"),
            Duration::from_secs(60),
            || async {
                let list = env
                    .patronictl(second, &["list"])
                    .map_err(|e| e.to_string())?;
                (list.contains("Maintenance mode: on") == on)
                    .then_some(())
                    .ok_or(list)
            },
        )
        .await?;
    }

    // logs: both instances, merged.
    let logs = ok(env, &["logs", "db", "--tail", "20"])?;
    has(&logs, &["db-0 | ", "db-1 | "])?;

    // report: the bundle, and no secret value of the namespace in any file of it.
    let dir = std::env::temp_dir().join(format!("{}-report", env.ns));
    let _ = std::fs::remove_dir_all(&dir);
    has(
        &ok(env, &["report", "db", "-o", &dir.display().to_string()])?,
        &["wrote "],
    )?;
    let mut files = Vec::new();
    for entry in walk(&dir)? {
        let text = std::fs::read_to_string(&entry)?;
        files.push((entry.display().to_string(), text));
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "postgrescluster.yaml",
        "postgresbackups.yaml",
        "pods.yaml",
        "events.yaml",
        "secrets.yaml",
        "logs/db-0.postgres.log",
        "patroni/db-1.list.txt",
    ] {
        ensure!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} in {names:?}"
        );
    }
    env.no_secret_in(&files).await?;
    let _ = std::fs::remove_dir_all(&dir);

    // restore: a new one-instance cluster from db's backups, with the row.
    has(
        &ok(
            env,
            &["restore", "copy", "--from", "db", "--instances", "1"],
        )?,
        &["postgrescluster/copy created"],
    )?;
    env.wait_ready("copy", 1, Duration::from_secs(420)).await?;
    let copy: PostgresCluster = env.cluster("copy").await?;
    ensure!(
        copy.spec.backup.is_none(),
        "the copy shares db's repository"
    );
    let out = ok(
        env,
        &["psql", "copy", "--", "-XAtc", "select answer from kept"],
    )?;
    ensure!(out.trim() == "42", "the restored row: {out:?}");
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
