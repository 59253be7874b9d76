//! `pgpilot-bench`: the benchmarks of the cluster controller (`just bench`). Prints figures
//! and writes them to docs/benchmarks.md; nothing is asserted on timings.
//!
//! Needs the node cluster (`e2e/scripts/cluster-up.sh --node`), KUBECONFIG pointing at it,
//! its kubectl on PATH, the postgres:17 image imported, and a pgpilot manager watching the
//! namespace: `e2e/scripts/bench-run.sh` sets all of that up.

mod backup;
mod backup_report;
mod chaos_report;
mod host;
mod kube_util;
mod milestones;
mod model;
mod pgc;
mod pods;
mod report;
mod rotation;
mod rotation_report;
mod scale;
mod tls;
mod upgrade;
mod upgrade_report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kube::Client;

use crate::kube_util::{ensure_namespace, load1, loadavg};
use crate::model::{Environment, EventResult, ReadyResult, Results, Sample};
use crate::pgc::Disruption;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Namespace the benchmarks create their objects in (the manager must watch it).
    #[arg(
        long,
        global = true,
        default_value = "bench",
        env = "PGPILOT_BENCH_NAMESPACE"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every measurement, then the report.
    All {
        /// Samples per measurement.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Where the Markdown report goes.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Where the raw figures go (JSON), to render again with `render`.
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
        /// The node's containerd socket (for the container kill).
        #[arg(long, env = "PGPILOT_CONTAINERD_SOCKET")]
        containerd_socket: String,
        /// Disruptions to measure.
        #[arg(long, value_delimiter = ',', default_values = ["delete-pod", "kill-container", "kill-postmaster", "switchover"])]
        disruptions: Vec<Disruption>,
        /// Instance counts for time-to-Ready (0: skip time-to-Ready).
        #[arg(long, value_delimiter = ',', default_values = ["1", "3"])]
        instances: Vec<usize>,
    },
    /// Time to Ready of a PostgresCluster.
    Ready {
        #[arg(long, default_value_t = 3)]
        instances: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Baseline (a): initdb, start, pg_basebackup, streaming, on the host.
    HostBaseline {
        #[arg(long, default_value_t = 3)]
        instances: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Baseline (b): the same steps as plain pods.
    PodsBaseline {
        #[arg(long, default_value_t = 3)]
        instances: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Failover or switchover write gap on a three-instance cluster.
    Disrupt {
        #[arg(long, value_enum)]
        mode: Disruption,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[arg(long, env = "PGPILOT_CONTAINERD_SOCKET", default_value = "")]
        containerd_socket: String,
        /// Delete the cluster afterwards.
        #[arg(long)]
        cleanup: bool,
    },
    /// The backup benchmarks (a one-instance cluster archiving to MinIO): the backup section
    /// of the report. Needs the backup controller and root (to drop the page cache).
    Backup {
        /// pgbench scale of the database (70 ≈ 1.05 GB).
        #[arg(long, default_value_t = 70)]
        scale: u32,
        /// Samples of the backup, its raw paths and the restore.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Seconds of pgbench load while the archive lag is sampled.
        #[arg(long, default_value_t = 60)]
        load_seconds: u64,
        /// pgbench clients.
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Leave the source cluster and MinIO running afterwards (to look at them).
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long, default_value = "target/bench/backup.json")]
        json: PathBuf,
        /// Only render the section again from the JSON.
        #[arg(long)]
        render: bool,
    },
    /// The upgrade benchmarks (minor write gap beside a switchover; major downtime beside
    /// pg_upgrade --link by hand): the upgrade section of the report. Needs the cluster and
    /// upgrade controllers.
    Upgrade {
        /// pgbench scale of the major upgrade's database (70 ≈ 1.05 GB).
        #[arg(long, default_value_t = 70)]
        scale: u32,
        /// Instances of the major upgrade's cluster.
        #[arg(long, default_value_t = 3)]
        instances: usize,
        /// Samples of each.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Only the minor upgrade, or only the major one.
        #[arg(long, value_parser = ["minor", "major"])]
        only: Option<String>,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long, default_value = "target/bench/upgrade.json")]
        json: PathBuf,
        /// Only render the section again from the JSON.
        #[arg(long)]
        render: bool,
    },
    /// The secret-rotation benchmarks (AlternatingUsers rotations under clients that connect
    /// for every insert: each milestone's time, refused logins, the load added, beside a
    /// rollout restart): the rotation section of the report. Needs the cluster and
    /// secret-rotation controllers.
    Rotation {
        /// Rotations.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Client pods.
        #[arg(long, default_value_t = 2)]
        clients: u32,
        /// The SecretRotation's grace period, in seconds.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long, default_value = "target/bench/rotation.json")]
        json: PathBuf,
        /// Only render the section again from the JSON.
        #[arg(long)]
        render: bool,
    },
    /// TLS cost: pgbench TPS without and with TLS, on persistent connections and with a new
    /// connection per transaction: the TLS section of the report. Needs the cluster controller.
    Tls {
        /// Runs of each kind.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// pgbench clients (and threads). Two cores: one client and its backend leave the
        /// API server and Patroni room.
        #[arg(long, default_value_t = 1)]
        clients: u32,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long, default_value = "target/bench/tls.json")]
        json: PathBuf,
        /// Only render the section again from the JSON.
        #[arg(long)]
        render: bool,
    },
    /// The results section of docs/reliability.md from the chaos tests' rows (`just chaos`).
    ChaosReport {
        /// The rows, one JSON line per injected fault.
        #[arg(long, default_value = "target/chaos/results.jsonl")]
        input: PathBuf,
        #[arg(long, default_value = "docs/reliability.md")]
        out: PathBuf,
        /// The command that made the rows, for the heading.
        #[arg(long, default_value = "just chaos")]
        command: String,
    },
    /// Many PostgresClusters on one manager, on the control plane with kwok's fake nodes
    /// (one size per call, on a fresh cluster: `just bench-scale` runs the sizes): the scale
    /// section of the report.
    Scale {
        /// PostgresClusters to create.
        #[arg(long, default_value_t = 1000)]
        clusters: usize,
        /// The manager binary (a release build).
        #[arg(long, default_value = "target/release/pgpilot-manager")]
        manager: PathBuf,
        /// Seconds of the steady window after convergence.
        #[arg(long, default_value_t = 60)]
        steady: u64,
        /// Seconds to wait for convergence (and again after the restart).
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// More manager flags, e.g. `--manager-arg=--concurrency=16`.
        #[arg(long = "manager-arg", allow_hyphen_values = true)]
        manager_args: Vec<String>,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long, default_value = "target/bench/scale.json")]
        json: PathBuf,
        /// Only render the section again from the JSON.
        #[arg(long)]
        render: bool,
    },
    /// Render the report from a results file.
    Render {
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
}

const HA_CLUSTER: &str = "bench-ha";

/// The three time-to-Ready measurements of one sample.
#[derive(Clone, Copy)]
enum ReadyMeasurement {
    Host,
    Pods,
    Pgpilot,
}

impl ReadyMeasurement {
    /// Sample `k`'s order: the three rotated by `k`, so over three samples each runs once first,
    /// once second and once last.
    fn rotated(k: usize) -> [Self; 3] {
        let mut order = [Self::Host, Self::Pods, Self::Pgpilot];
        order.rotate_left(k % 3);
        order
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Render { json, out } => {
            let results: Results = serde_json::from_str(
                &std::fs::read_to_string(&json)
                    .with_context(|| format!("reading {}", json.display()))?,
            )?;
            write_report(&results, &out)
        }
        Command::ChaosReport {
            input,
            out,
            command,
        } => {
            let rows = chaos_report::load(&input)?;
            let when = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
            let section = chaos_report::render(&rows, &format!("`{command}` ({when})"));
            let page = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, chaos_report::splice(&page, &section))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{section}");
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Scale {
            clusters,
            manager,
            steady,
            timeout,
            manager_args,
            out,
            json,
            render,
        } => {
            let mut results = scale::load(&json);
            if !render {
                let opts = scale::Options {
                    clusters,
                    manager,
                    steady,
                    timeout: Duration::from_secs(timeout),
                    manager_args,
                };
                let run = scale::run(pgpilot_testkit::running_cluster(), &opts).await?;
                results = scale::merge(results, run);
                scale::save(&json, &results)?;
            }
            let section = scale::render(&results);
            let page = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, scale::splice(&page, &section))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{section}");
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Command::Backup {
            scale,
            repeat,
            load_seconds,
            clients,
            keep,
            out,
            json,
            render,
        } => {
            let save = |r: &backup::BackupResults| -> Result<()> {
                if let Some(dir) = json.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&json, serde_json::to_string_pretty(r)?)?;
                let page = std::fs::read_to_string(&out).unwrap_or_default();
                std::fs::write(
                    &out,
                    backup_report::splice(&page, &backup_report::render(r)),
                )
                .with_context(|| format!("writing {}", out.display()))
            };
            if render {
                let r = serde_json::from_str(
                    &std::fs::read_to_string(&json)
                        .with_context(|| format!("reading {}", json.display()))?,
                )?;
                return save(&r);
            }
            let client = client(ns).await?;
            let opts = backup::Options {
                scale,
                repeat,
                load_seconds,
                clients,
                keep,
                work_dir: PathBuf::from("target/bench/backup"),
            };
            backup::run(&client, ns, &opts, &save).await?;
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Command::Upgrade {
            scale,
            instances,
            repeat,
            only,
            out,
            json,
            render,
        } => {
            let r: upgrade::UpgradeResults = if render {
                serde_json::from_str(
                    &std::fs::read_to_string(&json)
                        .with_context(|| format!("reading {}", json.display()))?,
                )?
            } else {
                let client = client(ns).await?;
                let opts = upgrade::Options {
                    scale,
                    instances,
                    repeat,
                    minor: only.as_deref() != Some("major"),
                    major: only.as_deref() != Some("minor"),
                };
                upgrade::run(&client, ns, &opts).await
            };
            if let Some(dir) = json.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
            let page = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(
                &out,
                upgrade_report::splice(&page, &upgrade_report::render(&r)),
            )
            .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", upgrade_report::render(&r));
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Command::Rotation {
            repeat,
            clients,
            grace,
            out,
            json,
            render,
        } => {
            let r: rotation::RotationResults = if render {
                serde_json::from_str(
                    &std::fs::read_to_string(&json)
                        .with_context(|| format!("reading {}", json.display()))?,
                )?
            } else {
                let client = client(ns).await?;
                let opts = rotation::Options {
                    repeat,
                    clients,
                    grace,
                };
                rotation::run(&client, ns, &opts).await
            };
            if let Some(dir) = json.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
            let section = rotation_report::render(&r);
            let page = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, rotation_report::splice(&page, &section))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{section}");
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Command::Tls {
            repeat,
            seconds,
            clients,
            out,
            json,
            render,
        } => {
            let r: tls::TlsResults = if render {
                serde_json::from_str(
                    &std::fs::read_to_string(&json)
                        .with_context(|| format!("reading {}", json.display()))?,
                )?
            } else {
                let client = client(ns).await?;
                let opts = tls::Options {
                    repeat,
                    seconds,
                    clients,
                };
                tls::run(&client, ns, &opts).await
            };
            if let Some(dir) = json.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
            let section = tls::render(&r);
            let page = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, tls::splice(&page, &section))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{section}");
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Command::Ready { instances, repeat } => {
            let client = client(ns).await?;
            for k in 0..repeat {
                let (t, steps) =
                    pgc::time_to_ready(&client, ns, &format!("bench-r{instances}-{k}"), instances)
                        .await?;
                sample(
                    t,
                    load1(),
                    steps,
                    &format!("pgpilot {instances} instance(s): Ready"),
                );
            }
            Ok(())
        }
        Command::HostBaseline { instances, repeat } => {
            for k in 0..repeat {
                let t = host::run_once(instances, k).await?;
                println!(
                    "host {instances} instance(s): streaming after {:.2} s (load {})",
                    t.as_secs_f64(),
                    loadavg()
                );
            }
            Ok(())
        }
        Command::PodsBaseline { instances, repeat } => {
            let client = client(ns).await?;
            for k in 0..repeat {
                let (t, steps) =
                    pods::run_once(&client, ns, &format!("base{instances}-{k}"), instances).await?;
                sample(
                    t,
                    load1(),
                    steps,
                    &format!("plain pods {instances} instance(s): streaming"),
                );
            }
            Ok(())
        }
        Command::Disrupt {
            mode,
            repeat,
            containerd_socket,
            cleanup,
        } => {
            let client = client(ns).await?;
            pgc::ensure_cluster(&client, ns, HA_CLUSTER, 3).await?;
            for k in 0..repeat {
                let s = pgc::disruption_once(&client, ns, HA_CLUSTER, mode, k, &containerd_socket)
                    .await?;
                println!("{}: {}", mode.label(), serde_json::to_string_pretty(&s)?);
            }
            if cleanup {
                pgc::delete_cluster(&client, ns, HA_CLUSTER).await?;
            }
            Ok(())
        }
        Command::All {
            repeat,
            out,
            json,
            containerd_socket,
            disruptions,
            instances,
        } => {
            let client = client(ns).await?;
            let mut results = Results {
                environment: environment(repeat).await,
                ..Default::default()
            };
            let save = |r: &Results| -> Result<()> {
                if let Some(dir) = json.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&json, serde_json::to_string_pretty(r)?)?;
                write_report(r, &out)
            };
            for &n in instances.iter().filter(|&&n| n > 0) {
                let mut r = ReadyResult {
                    instances: n,
                    ..Default::default()
                };
                for k in 0..repeat {
                    // Interleaved, so a change of the machine's load hits all three alike, and in
                    // an order rotated per sample, so none always follows another's clean-up.
                    for m in ReadyMeasurement::rotated(k) {
                        let load = load1();
                        let (outcome, into, label, what) = match m {
                            ReadyMeasurement::Host => {
                                // The host is shared: retry a sample once if something else
                                // disturbed it.
                                let mut host_run = host::run_once(n, k).await;
                                if let Err(e) = &host_run {
                                    error(
                                        &mut results.errors,
                                        &format!("host baseline {n}/{k} (retried)"),
                                        e,
                                    );
                                    host_run = host::run_once(n, k).await;
                                }
                                (
                                    host_run.map(|t| (t, Default::default())),
                                    &mut r.host,
                                    "host baseline",
                                    "host baseline",
                                )
                            }
                            ReadyMeasurement::Pods => (
                                pods::run_once(&client, ns, &format!("base{n}-{k}"), n).await,
                                &mut r.pods,
                                "plain pods",
                                "pods baseline",
                            ),
                            ReadyMeasurement::Pgpilot => (
                                pgc::time_to_ready(&client, ns, &format!("bench-r{n}-{k}"), n)
                                    .await,
                                &mut r.pgpilot,
                                "pgpilot",
                                "pgpilot time-to-Ready",
                            ),
                        };
                        match outcome {
                            Ok((t, steps)) => into.push(sample(
                                t,
                                load,
                                steps,
                                &format!("{label}, {n} instance(s), #{k}"),
                            )),
                            Err(e) => error(&mut results.errors, &format!("{what} {n}/{k}"), &e),
                        }
                    }
                }
                results.ready.push(r);
                save(&results)?;
            }
            if !disruptions.is_empty() {
                if let Err(e) = pgc::ensure_cluster(&client, ns, HA_CLUSTER, 3).await {
                    error(
                        &mut results.errors,
                        "three-instance cluster for failovers",
                        &e,
                    );
                } else {
                    let primary = format!("{HA_CLUSTER}-0");
                    results.environment.patroni = pgc::patroni_version(ns, &primary).await;
                    results.environment.image_postgres =
                        pgc::image_postgres(&client, ns, HA_CLUSTER).await;
                    if results.environment.image_postgres.is_empty() {
                        results.environment.image_postgres = kube_util::kubectl(&[
                            "-n",
                            ns,
                            "exec",
                            &primary,
                            "-c",
                            "postgres",
                            "--",
                            "postgres",
                            "--version",
                        ])
                        .await
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default();
                    }
                    for &mode in &disruptions {
                        let mut r = EventResult {
                            mode: mode.label().to_owned(),
                            samples: vec![],
                        };
                        for k in 0..repeat {
                            match pgc::disruption_once(
                                &client,
                                ns,
                                HA_CLUSTER,
                                mode,
                                k,
                                &containerd_socket,
                            )
                            .await
                            {
                                Ok(s) => {
                                    println!(
                                        "{}, #{k}: write gap {:.2} s ({} → {}), back to Ready after {}, {} of {} acknowledged writes missing (load {:.2})",
                                        mode.label(),
                                        s.gap_seconds,
                                        s.old_primary,
                                        s.new_primary,
                                        s.back_to_ready_seconds
                                            .map(|b| format!("{b:.1} s"))
                                            .unwrap_or_else(|| "-".into()),
                                        s.missing,
                                        s.acked,
                                        s.load1
                                    );
                                    r.samples.push(s);
                                }
                                Err(e) => error(
                                    &mut results.errors,
                                    &format!("{} #{k}", mode.label()),
                                    &e,
                                ),
                            }
                        }
                        if mode == Disruption::Switchover {
                            results.switchover = Some(r);
                        } else {
                            results.failover.push(r);
                        }
                        save(&results)?;
                    }
                }
                if let Err(e) = pgc::delete_cluster(&client, ns, HA_CLUSTER).await {
                    error(
                        &mut results.errors,
                        "deleting the three-instance cluster",
                        &e,
                    );
                }
            }
            results.environment.load_end = loadavg();
            save(&results)?;
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
    }
}

fn sample(t: Duration, load: f64, steps: BTreeMap<String, f64>, what: &str) -> Sample {
    let detail = steps
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("{what}: {:.2} s (load {load:.2}) {detail}", t.as_secs_f64());
    Sample {
        seconds: t.as_secs_f64(),
        load1: load,
        steps,
    }
}

fn error(errors: &mut Vec<String>, what: &str, e: &anyhow::Error) {
    eprintln!("FAILED {what}: {e:#}");
    errors.push(format!("{what}: {e:#}"));
}

async fn client(ns: &str) -> Result<Client> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client: source e2e/scripts/e2e-env.sh and e2e/scripts/env.sh")?;
    ensure_namespace(&client, ns).await?;
    Ok(client)
}

/// Writes the report, keeping the sections other recipes write (`bench-requests.sh`'s and
/// `pgpilot-bench backup`'s, `upgrade`'s, `rotation`'s and `tls`'s).
fn write_report(results: &Results, out: &Path) -> Result<()> {
    let mut report = report::render(results).trim_end().to_owned();
    let previous = std::fs::read_to_string(out).unwrap_or_default();
    for (begin, end) in [
        ("<!-- requests:begin -->", "<!-- requests:end -->"),
        (backup_report::BEGIN, backup_report::END),
        (upgrade_report::BEGIN, upgrade_report::END),
        (rotation_report::BEGIN, rotation_report::END),
        (tls::BEGIN, tls::END),
    ] {
        if let (Some(start), Some(stop)) = (previous.find(begin), previous.find(end))
            && start < stop
        {
            report = format!("{report}\n\n{}", &previous[start..stop + end.len()]);
        }
    }
    std::fs::write(out, report + "\n").with_context(|| format!("writing {}", out.display()))
}

fn first_line_with(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_default()
}

async fn environment(repeat: usize) -> Environment {
    let kubernetes = kube_util::kubectl(&["version", "-o", "json"])
        .await
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Environment {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model: first_line_with("/proc/cpuinfo", "model name"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        memory: first_line_with("/proc/meminfo", "MemTotal"),
        load_start: loadavg(),
        load_end: String::new(),
        host_postgres: host::version()
            .await
            .unwrap_or_else(|e| format!("unknown ({e})")),
        image_postgres: String::new(),
        patroni: String::new(),
        kubernetes,
        repeat,
        cluster_spec: pgc::spec(3)
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("unreadable ({e:#})")),
    }
}
