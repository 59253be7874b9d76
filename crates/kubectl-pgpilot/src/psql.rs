//! `psql`: psql in the primary's (or a replica's) pod, as the superuser over the local
//! socket, through `kubectl exec` so a terminal gets a real TTY.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use kube::ResourceExt;
use pgpilot_api::labels;
use pgpilot_postgres::version::CONTAINER;

use crate::client::{Target, role};

/// `kubectl exec` arguments for psql in `pod`.
pub fn exec_args(namespace: &str, pod: &str, tty: bool, psql: &[String]) -> Vec<String> {
    let mut args = vec!["exec".to_owned()];
    args.push(if tty { "-it" } else { "-i" }.to_owned());
    for a in ["-n", namespace, pod, "-c", CONTAINER, "--", "psql"] {
        args.push(a.to_owned());
    }
    args.extend(psql.iter().cloned());
    args
}

pub async fn run(target: &Target, cluster: &str, replica: bool, psql: &[String]) -> Result<()> {
    target.cluster(cluster).await?;
    let pod = if replica {
        target
            .instances(cluster)
            .await?
            .into_iter()
            .find(|p| role(p) == Some(labels::ROLE_REPLICA))
            .with_context(|| format!("cluster {cluster} has no replica now"))?
    } else {
        target.primary(cluster).await?
    };
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let status = target
        .kubectl()
        .args(exec_args(&target.namespace, &pod.name_any(), tty, psql))
        .status()
        .context("running kubectl (set KUBECTL to its path if it is not on the PATH)")?;
    if !status.success() {
        bail!("psql in {} ended with {status}", pod.name_any());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn psql_runs_in_the_postgres_container() {
        let args = super::exec_args("prod", "db-0", false, &["-c".into(), "select 1".into()]);
        assert_eq!(
            args,
            [
                "exec", "-i", "-n", "prod", "db-0", "-c", "postgres", "--", "psql", "-c",
                "select 1"
            ]
        );
    }
}
