//! `kubectl pgpilot`: day-2 operations on pgpilot's PostgreSQL clusters, through the same
//! API the operator watches (its custom resources, Patroni in the instance pods). Installed
//! as `kubectl-pgpilot` on the PATH (krew manifest: `plugin.yaml`); see
//! docs/kubectl-plugin.md.

mod backup;
mod client;
mod logs;
mod patroni;
mod psql;
mod report;
mod restore;
mod spec;
mod status;
mod version;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubectl pgpilot",
    version,
    about = "Day-2 operations on pgpilot PostgreSQL clusters"
)]
struct Cli {
    /// Namespace of the cluster (default: the kubeconfig context's).
    #[arg(short, long, global = true, env = "PGPILOT_NAMESPACE")]
    namespace: Option<String>,
    /// kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One screen: instances, roles, lag, timeline, endpoints, backups and the
    /// recoverability window, certificates, upgrades, rotations, recent Events.
    Status { cluster: String },
    /// psql on the primary (or a replica) as the superuser, inside its pod.
    Psql {
        cluster: String,
        /// Connect to a replica instead of the primary.
        #[arg(long)]
        replica: bool,
        /// Arguments for psql, after `--` (e.g. `-- -c 'select 1'`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Take a backup now (a PostgresBackup).
    Backup(backup::Args),
    /// Create a new cluster from the backups of another, optionally to a point in time.
    Restore(restore::Args),
    /// Move the primary role to another instance (Patroni switchover).
    Switchover {
        cluster: String,
        /// The instance to promote (default: the synchronous standby, else the replica
        /// that lags least).
        #[arg(long)]
        to: Option<String>,
    },
    /// Restart PostgreSQL in place (Patroni restart): one instance, or every instance,
    /// replicas first.
    Restart {
        cluster: String,
        instance: Option<String>,
    },
    /// Stop reconciling the cluster (spec.paused: true).
    Pause(spec::Args),
    /// Reconcile the cluster again (spec.paused: false).
    Resume(spec::Args),
    /// Patroni maintenance mode (spec.maintenance): no automatic failover while on.
    Maintenance {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[command(flatten)]
        target: spec::Args,
    },
    /// Logs of every instance, merged, each line prefixed with its pod.
    Logs(logs::Args),
    /// A support bundle: the cluster's objects, Events and logs, every secret value redacted.
    Report(report::Args),
    /// This plugin's version, the API versions served and the operator's image.
    Version,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Version = cli.command {
        // Works without a cluster: what it serves is best effort.
        println!("kubectl-pgpilot {}", env!("CARGO_PKG_VERSION"));
        return match client::Target::connect(cli.namespace, cli.context).await {
            Ok(target) => version::run(&target).await,
            Err(e) => {
                println!("cluster: unknown ({e:#})");
                Ok(())
            }
        };
    }
    let target = client::Target::connect(cli.namespace, cli.context).await?;
    match cli.command {
        Command::Status { cluster } => status::run(&target, &cluster).await,
        Command::Psql {
            cluster,
            replica,
            args,
        } => psql::run(&target, &cluster, replica, &args).await,
        Command::Backup(args) => backup::run(&target, args).await,
        Command::Restore(args) => restore::run(&target, args).await,
        Command::Switchover { cluster, to } => patroni::switchover(&target, &cluster, to).await,
        Command::Restart { cluster, instance } => {
            patroni::restart(&target, &cluster, instance).await
        }
        Command::Pause(args) => spec::set(&target, args, "paused", true).await,
        Command::Resume(args) => spec::set(&target, args, "paused", false).await,
        Command::Maintenance {
            state,
            target: args,
        } => spec::set(&target, args, "maintenance", state == "on").await,
        Command::Logs(args) => logs::run(&target, args).await,
        Command::Report(args) => report::run(&target, args).await,
        Command::Version => Ok(()), // answered above, cluster or not
    }
}
