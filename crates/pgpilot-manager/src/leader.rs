//! Leader election on a `coordination.k8s.io` Lease: only the holder runs controllers.

use anyhow::Context;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease settings from the command line.
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_secs: u64,
}

/// A running election: a channel that says whether we lead, and the task holding the lease.
pub struct Election {
    pub leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

/// A unique identity: the pod (or host) name plus a random suffix, so a restarted process
/// never mistakes the previous holder's lease for its own.
pub fn default_identity(base: Option<String>) -> String {
    let base = base
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pgpilot-manager".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{base}-{suffix:08x}")
}

/// Starts competing for the lease.
pub async fn start(client: Client, cfg: LeaseConfig) -> anyhow::Result<Election> {
    // Renew well before expiry: a third of the duration leaves two renewals' worth of slack.
    let grace = (cfg.duration_secs / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_secs)
        .with_grace(grace)
        .with_field_manager("pgpilot-manager-leader-election")
        .build()
        .await
        .with_context(|| {
            format!(
                "preparing the leader-election Lease {}/{}",
                cfg.namespace, cfg.name
            )
        })?;
    let (leading, task) = manager.watch().await;
    Ok(Election { leading, task })
}

impl Election {
    /// Releases the lease (if held) so a standby takes over at once, not after expiry.
    pub async fn release(self) -> anyhow::Result<()> {
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e).context("releasing the leader-election Lease"),
            Err(e) => Err(e).context("leader-election task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = default_identity(Some("pod-a".into()));
        let b = default_identity(Some("pod-a".into()));
        assert!(a.starts_with("pod-a-"));
        assert_ne!(a, b);
    }
}
