//! GitOps: `examples/` applied the way Argo CD and Flux apply them (server-side, a field
//! manager of their own), judged by pgpilot's Argo CD health scripts and by kstatus (Flux)
//! through e2e/gitops's `pgpilot-health`, re-applied and diffed after convergence.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail, ensure};

use crate::harness::{Env, Verdict, eventually};

/// Every example but restore.yaml, which needs a repository holding the demo's backups
/// (restores have their own tests).
const EXAMPLES: [&str; 5] = [
    "cluster.yaml",
    "backup.yaml",
    "backupschedule.yaml",
    "secretrotation.yaml",
    "upgrade.yaml",
];
/// Three instances from nothing on the shared node.
const CONVERGE: Duration = Duration::from_secs(360);

#[tokio::test]
async fn examples_applied_by_a_gitops_field_manager_converge_healthy_without_conflict_or_diff() {
    let env = Env::start("gitops").await;
    let result = gitops(&env).await;
    env.finish(result).await;
}

fn said<'a>(verdicts: &'a [Verdict], kind: &str, name: &str) -> Result<&'a Verdict, String> {
    verdicts
        .iter()
        .find(|v| v.kind == kind && v.name == name)
        .ok_or_else(|| format!("no {kind} {name} in {verdicts:?}"))
}

fn is(v: &Verdict, argo: &str, kstatus: &str) -> Result<(), String> {
    (v.argo.status == argo && v.kstatus.status == kstatus)
        .then_some(())
        .ok_or_else(|| format!("{} {}: want {argo}/{kstatus}, got {v:?}", v.kind, v.name))
}

/// `kubectl <verb> --server-side --field-manager=argocd -f <every example>` in the
/// namespace: its exit status, stdout and stderr.
fn as_argocd(env: &Env, verb: &str) -> Result<(bool, String, String)> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut cmd = env.c.kubectl_command();
    cmd.args([
        "-n",
        &env.ns,
        verb,
        "--server-side",
        "--field-manager=argocd",
    ]);
    for file in EXAMPLES {
        cmd.arg("-f").arg(examples.join(file));
    }
    let out = cmd.output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn gitops(env: &Env) -> Result<()> {
    let (ok, _, err) = as_argocd(env, "apply")?;
    ensure!(ok, "first apply: {err}");

    // Until the cluster is Ready, Argo CD sees it Progressing and, once the operator wrote a
    // status, kstatus InProgress (before that kstatus says Current: it cannot tell an object
    // nobody reconciled yet from a converged one).
    let seen: Mutex<Vec<Verdict>> = Mutex::new(Vec::new());
    eventually("the demo cluster healthy", CONVERGE, || async {
        let verdicts = env.health().map_err(|e| format!("{e:#}"))?;
        let cluster = said(&verdicts, "PostgresCluster", "demo")?.clone();
        let healthy = cluster.argo.status == "Healthy";
        if let Ok(mut seen) = seen.lock() {
            seen.push(cluster.clone());
        }
        healthy.then_some(()).ok_or(format!("{cluster:?}"))
    })
    .await?;
    let seen = seen.into_inner().unwrap_or_default();
    let before_ready = &seen[..seen.len() - 1];
    if let Some(v) = before_ready.iter().find(|v| v.argo.status != "Progressing") {
        bail!("before Ready, Argo CD saw {v:?}");
    }
    ensure!(
        before_ready
            .iter()
            .any(|v| v.kstatus.status == "InProgress"),
        "kstatus never said InProgress while the cluster was created: {before_ready:?}"
    );
    is(&seen[seen.len() - 1], "Healthy", "Current").map_err(anyhow::Error::msg)?;

    // Everything else as it should settle: the schedule and the rotation healthy; the backup
    // waits for a repository the demo has not (Progressing); the upgrade awaits approval
    // (Suspended for Argo CD, InProgress for Flux).
    let verdicts = eventually(
        "every example settled",
        Duration::from_secs(120),
        || async {
            let verdicts = env.health().map_err(|e| format!("{e:#}"))?;
            for (kind, name, argo, kstatus) in [
                ("PostgresCluster", "demo", "Healthy", "Current"),
                ("BackupSchedule", "demo-nightly", "Healthy", "Current"),
                ("SecretRotation", "demo-app", "Healthy", "Current"),
                (
                    "PostgresBackup",
                    "demo-manual-1",
                    "Progressing",
                    "InProgress",
                ),
                ("PostgresUpgrade", "demo-to-17", "Suspended", "InProgress"),
            ] {
                is(said(&verdicts, kind, name)?, argo, kstatus)?;
            }
            Ok(verdicts)
        },
    )
    .await?;
    let backup = said(&verdicts, "PostgresBackup", "demo-manual-1").map_err(anyhow::Error::msg)?;
    ensure!(
        backup.argo.message.contains("no spec.backup"),
        "the backup says why it waits: {backup:?}"
    );

    // Argo CD's second sync and its diff: the operator wrote no field the GitOps manager
    // owns, so nothing conflicts and nothing differs.
    let (ok, out, err) = as_argocd(env, "apply")?;
    ensure!(ok, "second apply: {err}");
    ensure!(
        out.lines().all(|l| l.ends_with("serverside-applied")),
        "second apply: {out}"
    );
    let (same, diff, err) = as_argocd(env, "diff")?;
    ensure!(
        same && diff.is_empty(),
        "kubectl diff --server-side after convergence:\n{diff}{err}"
    );

    // What cannot go on without a change from its user: Degraded for Argo CD, Failed for
    // Flux, with the reason.
    env.apply(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: no-image}\n\
         spec: {instances: 1, postgresql: {version: 16}, storage: {size: 1Gi}}\n---\n\
         apiVersion: pgpilot.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: on-mars}\n\
         spec: {cluster: {name: demo}, schedule: '@daily', timeZone: Mars/Olympus}\n",
    )?;
    eventually(
        "stalled objects Degraded and Failed",
        Duration::from_secs(60),
        || async {
            let verdicts = env.health().map_err(|e| format!("{e:#}"))?;
            for (kind, name, hint) in [
                ("PostgresCluster", "no-image", "spec.postgresql.image"),
                ("BackupSchedule", "on-mars", "Mars/Olympus"),
            ] {
                let v = said(&verdicts, kind, name)?;
                is(v, "Degraded", "Failed")?;
                if !v.argo.message.contains(hint) || !v.kstatus.message.contains(hint) {
                    return Err(format!("{kind} {name} does not say why: {v:?}"));
                }
            }
            Ok(())
        },
    )
    .await?;

    // Paused by its user: Suspended for Argo CD; still Current for kstatus (it serves).
    env.kubectl(&[
        "patch",
        "postgrescluster",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ])?;
    eventually(
        "the paused cluster Suspended",
        Duration::from_secs(60),
        || async {
            let verdicts = env.health().map_err(|e| format!("{e:#}"))?;
            is(
                said(&verdicts, "PostgresCluster", "demo")?,
                "Suspended",
                "Current",
            )
        },
    )
    .await?;
    Ok(())
}
