//! TLS cost (`just bench-tls`): pgbench against a one-instance cluster through its `-rw`
//! Service, from a pgclient pod on the same node, without TLS (`sslmode=disable`) and with it
//! (`sslmode=verify-full` against the published CA), alternating in one run: on persistent
//! connections, and with a new connection for every transaction (`-C`). Select-only (`-S`), so
//! TLS' share of a transaction shows rather than hides behind writes.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use pgpilot_api::PostgresCluster;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kube_util::{kubectl, load1, loadavg, poll};
use crate::model::Summary;
use crate::pgc;

pub const BEGIN: &str = "<!-- tls:begin -->";
pub const END: &str = "<!-- tls:end -->";
const CLUSTER: &str = "tlsb";
const CLIENT: &str = "tlsb-client";
const CLIENT_IMAGE: &str = "localhost/pgpilot/pgclient:17";
const SCALE: u32 = 10;

pub struct Options {
    pub repeat: usize,
    pub seconds: u32,
    pub clients: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TlsResults {
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    pub postgres: String,
    pub clients: u32,
    pub seconds: u32,
    pub scale: u32,
    pub runs: Vec<TlsRun>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsRun {
    /// A new connection for every transaction (`pgbench -C`).
    pub reconnect: bool,
    pub tls: bool,
    pub tps: f64,
}

pub async fn run(client: &Client, ns: &str, opts: &Options) -> TlsResults {
    let mut r = TlsResults {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        load_start: loadavg(),
        clients: opts.clients,
        seconds: opts.seconds,
        scale: SCALE,
        ..Default::default()
    };
    if let Err(e) = measure(client, ns, opts, &mut r).await {
        r.errors.push(format!("{e:#}"));
    }
    let _ = kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        CLIENT,
        "--ignore-not-found",
        "--wait=false",
    ])
    .await;
    if let Err(e) = pgc::delete_cluster(client, ns, CLUSTER).await {
        r.errors.push(format!("deleting {CLUSTER}: {e:#}"));
    }
    r.load_end = loadavg();
    r
}

async fn measure(client: &Client, ns: &str, opts: &Options, r: &mut TlsResults) -> Result<()> {
    // A fresh cluster (one left from an earlier run may still be shutting down), with
    // Patroni's default timing: the example's one-second loop and 4 s retry timeout demote a
    // primary whose API calls starve on a saturated two-core machine, and pgbench at full
    // speed saturates it.
    pgc::delete_cluster(client, ns, CLUSTER).await?;
    let mut spec = pgc::spec(1)?;
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("patroni");
        fields.remove("replication");
    }
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    let cluster = json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": CLUSTER}, "spec": spec,
    });
    clusters
        .create(&PostParams::default(), &serde_json::from_value(cluster)?)
        .await
        .context("creating the benchmark's cluster")?;
    pgc::wait_ready(&clusters, CLUSTER, Duration::from_secs(300)).await?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CLIENT, "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "pgbench", "image": CLIENT_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "infinity"],
                "env": [
                    {"name": "PGHOST", "value": format!("{CLUSTER}-rw")},
                    {"name": "PGDATABASE", "value": "postgres"},
                    {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": format!("{CLUSTER}-superuser"), "key": "username"}}},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{CLUSTER}-superuser"), "key": "password"}}},
                    {"name": "PGSSLROOTCERT", "value": "/etc/ca/ca.crt"},
                ],
                "volumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": true}],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "ca", "configMap": {"name": format!("{CLUSTER}-ca-cert")}}],
        },
    });
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    if pods.get_opt(CLIENT).await?.is_none() {
        pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
            .await
            .context("creating the pgbench pod")?;
    }
    poll(
        "the pgbench pod running",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let phase = kubectl(&[
                "-n",
                ns,
                "get",
                "pod",
                CLIENT,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .await?;
            Ok((phase == "Running").then_some(()))
        },
    )
    .await?;
    let pgbench = |args: Vec<String>, tls: bool| {
        let mode = if tls { "verify-full" } else { "disable" };
        let mut all: Vec<String> = ["-n", ns, "exec", CLIENT, "--", "env"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.push(format!("PGSSLMODE={mode}"));
        all.push("pgbench".into());
        all.extend(args);
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            kubectl(&refs).await
        }
    };
    pgbench(
        vec!["-i".into(), "-q".into(), "-s".into(), SCALE.to_string()],
        false,
    )
    .await
    .context("pgbench -i")?;
    r.postgres = pgbench(vec!["--version".into()], false)
        .await
        .unwrap_or_default()
        .trim()
        .to_owned();
    let c = opts.clients.to_string();
    for _ in 0..opts.repeat {
        for reconnect in [false, true] {
            for tls in [false, true] {
                let mut args: Vec<String> = ["-S", "-n", "-c", &c, "-j", &c, "-T"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                args.push(opts.seconds.to_string());
                if reconnect {
                    args.push("-C".into());
                }
                let out = pgbench(args, tls).await?;
                let tps = crate::backup::tps(&out).with_context(|| format!("no tps in {out}"))?;
                println!(
                    "{} {}: {tps:.0} tps (load {:.2})",
                    if reconnect {
                        "connection per transaction"
                    } else {
                        "persistent"
                    },
                    if tls { "TLS" } else { "plain" },
                    load1()
                );
                r.runs.push(TlsRun {
                    reconnect,
                    tls,
                    tps,
                });
            }
        }
    }
    Ok(())
}

fn tps_of(r: &TlsResults, reconnect: bool, tls: bool) -> Option<Summary> {
    Summary::of(
        r.runs
            .iter()
            .filter(|x| x.reconnect == reconnect && x.tls == tls)
            .map(|x| x.tps),
    )
}

pub fn render(r: &TlsResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{BEGIN}");
    let _ = writeln!(o, "## TLS cost (`just bench-tls`)\n");
    let _ = writeln!(
        o,
        "Measured {} on the node cluster (load {} at the start, {} at the end); {}. One instance \
         (examples/cluster.yaml with Patroni's default timing), pgbench scale {}, select-only (`-S`), {} pgbench client(s) for {} s per \
         run, from a pgclient pod on the same node (client and server share the machine's two \
         cores) through the `-rw` Service; `sslmode=disable` and `sslmode=verify-full` \
         (the cluster's ECDSA P-256 certificate; a new connection also pays the SCRAM exchange, with or without TLS) alternate. TPS: median (min–max) of \
         the runs.\n",
        r.date,
        r.load_start,
        r.load_end,
        if r.postgres.is_empty() {
            "pgbench ?"
        } else {
            &r.postgres
        },
        r.scale,
        r.clients,
        r.seconds
    );
    let _ = writeln!(
        o,
        "| connections | without TLS | with TLS | TLS costs |\n|---|---|---|---|"
    );
    for (reconnect, what) in [
        (false, "persistent"),
        (true, "a new one per transaction (`-C`)"),
    ] {
        let plain = tps_of(r, reconnect, false);
        let tls = tps_of(r, reconnect, true);
        let fmt = |s: Option<Summary>| {
            s.map_or("—".into(), |s| {
                format!("{:.0} ({:.0}–{:.0}, n={})", s.median, s.min, s.max, s.n)
            })
        };
        let cost = match (plain, tls) {
            (Some(p), Some(t)) if p.median > 0.0 => {
                format!("{:+.1} %", (t.median / p.median - 1.0) * 100.0)
            }
            _ => "—".into(),
        };
        let _ = writeln!(o, "| {what} | {} | {} | {cost} |", fmt(plain), fmt(tls));
    }
    for e in &r.errors {
        let _ = writeln!(o, "\nError: {e}");
    }
    let _ = writeln!(o, "{END}");
    o
}

pub fn splice(page: &str, section: &str) -> String {
    crate::report::splice(page, section, BEGIN, END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_sets_tls_beside_plain_for_both_connection_modes() {
        let run = |reconnect, tls, tps| TlsRun {
            reconnect,
            tls,
            tps,
        };
        let r = TlsResults {
            clients: 4,
            seconds: 30,
            scale: 10,
            runs: vec![
                run(false, false, 1000.0),
                run(false, true, 900.0),
                run(true, false, 200.0),
                run(true, true, 100.0),
            ],
            ..Default::default()
        };
        let s = render(&r);
        assert!(
            s.contains("| persistent | 1000 (1000–1000, n=1) | 900 (900–900, n=1) | -10.0 % |"),
            "{s}"
        );
        assert!(
            s.contains("| 200 (200–200, n=1) | 100 (100–100, n=1) | -50.0 % |"),
            "{s}"
        );
        let page = splice("# Benchmarks\n", &s);
        assert_eq!(splice(&page, &s), page, "replaces only itself");
    }
}
