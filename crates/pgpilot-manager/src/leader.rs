//! Leader election on a `coordination.k8s.io` Lease: only the holder runs controllers.
//!
//! kube-lease-manager does the locking. A standby on its own only looks at the Lease again
//! when the holder's term runs out; we also watch the Lease, and when a holder releases it
//! on a graceful stop, the standby re-reads it at once and takes over in well under a second
//! instead of a lease duration.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lease settings from the command line.
#[derive(Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_secs: u64,
}

/// A running election: a channel that says whether we lead, and the task holding the lease.
pub struct Election {
    pub leading: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
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

async fn build_manager(client: &Client, cfg: &LeaseConfig) -> anyhow::Result<LeaseManager> {
    // Renew well before expiry: a third of the duration leaves two renewals' worth of slack.
    let grace = (cfg.duration_secs / 3).max(1);
    LeaseManagerBuilder::new(client.clone(), &cfg.name)
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
        })
}

/// Starts competing for the lease.
pub async fn start(client: Client, cfg: LeaseConfig) -> anyhow::Result<Election> {
    let manager = build_manager(&client, &cfg).await?;
    let (tx, leading) = watch::channel(false);
    let stop = CancellationToken::new();
    let task = tokio::spawn(campaign(client, cfg, manager, tx, stop.clone()));
    Ok(Election {
        leading,
        stop,
        task,
    })
}

fn is_free(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

async fn campaign(
    client: Client,
    cfg: LeaseConfig,
    mut manager: LeaseManager,
    tx: watch::Sender<bool>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let freed = watcher(
        leases,
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.name)),
    )
    .default_backoff()
    .applied_objects()
    .filter_map(|r| async move { r.ok().filter(is_free).map(|_| ()) });
    tokio::pin!(freed);
    // Since when the Lease API has failed us, if it has: a leader that cannot renew for a
    // whole lease duration must assume a standby took over, and stop.
    let mut failing_since: Option<Instant> = None;
    let lease_duration = Duration::from_secs(cfg.duration_secs);
    loop {
        let leading = *tx.borrow();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(()) = freed.next(), if !leading => {
                // The holder let go: a fresh manager reads the Lease now and locks it.
                match build_manager(&client, &cfg).await {
                    Ok(m) => manager = m,
                    Err(e) => tracing::warn!(error = %e, "re-reading the released Lease"),
                }
            }
            changed = manager.changed() => match changed {
                Ok(now_leading) => {
                    failing_since = None;
                    tx.send_replace(now_leading);
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if leading && since.elapsed() >= lease_duration {
                        tracing::warn!(error = %e, "leader election: the Lease could not be renewed for its whole duration; stepping down");
                        tx.send_replace(false);
                    } else {
                        tracing::warn!(error = %e, "leader election: Lease API error; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    let result = manager
        .release()
        .await
        .context("releasing the leader-election Lease");
    tx.send_replace(false);
    result
}

impl Election {
    /// Releases the lease (if held) so a standby takes over at once, not after expiry.
    pub async fn release(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("leader-election task")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = default_identity(Some("pod-a".into()));
        let b = default_identity(Some("pod-a".into()));
        assert!(a.starts_with("pod-a-"));
        assert_ne!(a, b);
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let held = |h: Option<&str>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: h.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(is_free(&held(None)));
        assert!(is_free(&held(Some(""))));
        assert!(!is_free(&held(Some("pod-a-1"))));
        assert!(is_free(&Lease::default()));
    }
}
