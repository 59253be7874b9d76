//! End-to-end tests on a real node: PostgreSQL really runs in pods, Patroni really fails over,
//! and the tests talk SQL to the clusters' Services.
//!
//! Needs the node cluster of the e2e tier, already running (it is shared: the tests never
//! start, stop or restart it) and the `e2e` feature:
//!
//! ```sh
//! . e2e/scripts/e2e-env.sh; . e2e/scripts/env.sh
//! cargo test -p pgpilot-manager --features e2e --test e2e -- --test-threads=1
//! ```
//!
//! Each test has a namespace `e2e-<test>-<random>` of its own and its own manager process
//! confined to it, running as user `pgpilot-manager` with exactly the RBAC that
//! `pgpilot-manager rbac --controllers <its controllers>` prints. The host reaches pod IPs and Service
//! ClusterIPs directly (but cannot resolve cluster DNS names).

#[path = "e2e/backup.rs"]
mod backup;
#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/gitops.rs"]
mod gitops;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/major.rs"]
mod major;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/minio.rs"]
mod minio;
#[path = "e2e/network.rs"]
mod network;
#[path = "e2e/operator.rs"]
mod operator;
#[path = "e2e/plugin.rs"]
mod plugin;
#[path = "e2e/prometheus.rs"]
mod prometheus;
#[path = "e2e/repair.rs"]
mod repair;
#[path = "e2e/restore.rs"]
mod restore;
#[path = "e2e/roll.rs"]
mod roll;
#[path = "e2e/rotation.rs"]
mod rotation;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/traces.rs"]
mod traces;
#[path = "e2e/upgrade.rs"]
mod upgrade;
