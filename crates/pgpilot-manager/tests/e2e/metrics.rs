//! Database metrics: the exporter beside every instance and Patroni's own, scraped by a real
//! Prometheus.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::harness::{ClusterYaml, Env, connect, eventually};
use crate::minio::Minio;
use crate::prometheus::{Prometheus, Sample};

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// Prometheus scrapes every 2 s; the monitor role appears once the primary runs.
const SCRAPED: Duration = Duration::from_secs(120);

#[tokio::test]
async fn every_instance_exports_its_own_view_to_a_real_prometheus() {
    let env = Env::start_scraped("metrics").await;
    let result = exported(&env).await;
    env.finish(result).await;
}

fn by_pod(samples: &[Sample]) -> std::collections::BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| (s.label("pod").to_owned(), s.value))
        .collect()
}

async fn exported(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .spec("roles: [{name: app}]")
            .spec("databases: [{name: shop, owner: app}]")
            .spec("monitoring: {patroni: {enabled: true}}")
            .yaml(),
    )?;
    let prometheus = Prometheus::start(env).await?;
    let pg = env.wait_ready("db", 2, CREATE).await?;
    let primary = pg
        .status
        .as_ref()
        .and_then(|s| s.current_primary.clone())
        .context("no currentPrimary")?;
    let names = || async {
        prometheus
            .query(r#"count by (__name__) ({cluster="db"})"#)
            .await
            .map(|s| {
                s.iter()
                    .map(|s| s.label("__name__").to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };

    // Both instances up, each reporting its own role: the exporter reached its own
    // PostgreSQL as the monitor role.
    let up = prometheus
        .wait_for(
            "pg_up = 1 on both instances",
            SCRAPED,
            r#"pg_up{cluster="db"}"#,
            |s| match by_pod(s).values().filter(|v| **v == 1.0).count() {
                2 => Ok(()),
                n => Err(format!("{n} of 2 up")),
            },
        )
        .await;
    if let Err(e) = up {
        let logs = env
            .kubectl(&["logs", "db-0", "-c", "exporter", "--tail=20"])
            .unwrap_or_default();
        anyhow::bail!("{e:#}\nexporter log of db-0:\n{logs}");
    }
    let replica = by_pod(
        &prometheus
            .query(r#"pg_replication_is_replica{cluster="db"}"#)
            .await?,
    );
    ensure!(
        replica.len() == 2
            && replica
                .iter()
                .all(|(pod, v)| (*v == 0.0) == (*pod == primary)),
        "pg_replication_is_replica by pod {replica:?}, primary {primary}"
    );

    // Patroni's own view, through the port the NetworkPolicy opened to the scrapers: each
    // member says whether it leads, and its timeline.
    prometheus
        .wait_for(
            "patroni_primary from both members",
            SCRAPED,
            r#"patroni_primary{cluster="db"}"#,
            |s| {
                let leads = by_pod(s);
                (leads.len() == 2
                    && leads
                        .iter()
                        .all(|(pod, v)| (*v == 1.0) == (*pod == primary)))
                .then_some(())
                .ok_or(format!(
                    "patroni_primary by pod {leads:?}, primary {primary}"
                ))
            },
        )
        .await?;
    // A replica's Patroni says timeline 0 until its WAL receiver reports one: a scrape taken
    // just after it started streaming can still carry that.
    prometheus
        .wait_for(
            "patroni_postgres_timeline from both members",
            SCRAPED,
            r#"patroni_postgres_timeline{cluster="db"}"#,
            |s| {
                let timelines = by_pod(s);
                (timelines.len() == 2 && timelines.values().all(|t| *t >= 1.0))
                    .then_some(())
                    .ok_or(format!("patroni_postgres_timeline by pod {timelines:?}"))
            },
        )
        .await?;

    // What an on-call engineer reads: sizes, connections, transactions, WAL position,
    // archiving and checkpoints, present on every instance.
    let wanted = [
        r#"pg_database_size_bytes{cluster="db",datname="shop"}"#,
        r#"pg_stat_activity_count{cluster="db",datname="postgres"}"#,
        r#"pg_stat_database_xact_commit{cluster="db",datname="postgres"}"#,
        r#"pg_stat_archiver_archived_count{cluster="db"}"#,
        r#"pg_stat_checkpointer_num_timed_total{cluster="db"}"#,
        r#"pg_postmaster_start_time_seconds{cluster="db"}"#,
    ];
    for promql in wanted {
        let found = prometheus
            .wait_for(promql, SCRAPED, promql, |s| {
                (by_pod(s).len() == 2)
                    .then_some(())
                    .ok_or_else(|| "not from both instances".to_owned())
            })
            .await;
        if let Err(e) = found {
            anyhow::bail!("{e:#}\nmetric names seen: {:?}", names().await);
        }
    }
    // The WAL position moves on the primary as it is written to (what it reports beside each
    // replica it streams to: no series until the replica's WAL receiver has connected and been
    // scraped, which can come after the replica reports itself as one).
    let lsn = |v: Vec<Sample>| v.first().map(|s| s.value);
    let promql = format!(
        r#"max by (pod) (pg_stat_replication_pg_current_wal_lsn_bytes{{cluster="db",pod="{primary}"}})"#
    );
    let streaming = eventually("the primary to report its replica", SCRAPED, || async {
        lsn(prometheus.query(&promql).await.map_err(|e| e.to_string())?)
            .ok_or_else(|| format!("{promql}: no series"))
    })
    .await;
    let before = match streaming {
        Ok(before) => before,
        Err(e) => anyhow::bail!("{e:#}\nmetric names seen: {:?}", names().await),
    };
    let su = env.superuser("db").await?;
    let rw = env.connect("db-rw", &su, Duration::from_secs(60)).await?;
    rw.batch_execute("create table t as select g from generate_series(1, 100000) g")
        .await?;
    eventually("the WAL position to move", SCRAPED, || async {
        match lsn(prometheus.query(&promql).await.map_err(|e| e.to_string())?) {
            Some(after) if after > before => Ok(()),
            other => Err(format!("{other:?}, was {before}")),
        }
    })
    .await?;

    // The chart's alerts are loaded, and a healthy cluster makes none of them fire.
    let shipped = include_str!("../../../../charts/pgpilot/files/alerts.yaml")
        .matches("- alert: ")
        .count();
    eventually("every alert loaded and quiet", SCRAPED, || async {
        let alerts = prometheus.alerts().await.map_err(|e| e.to_string())?;
        let loud: Vec<_> = alerts
            .iter()
            .filter(|(_, state)| state != "inactive")
            .collect();
        (alerts.len() == shipped && loud.is_empty())
            .then_some(())
            .ok_or(format!(
                "{} of {shipped} alerts loaded; not inactive: {loud:?}",
                alerts.len()
            ))
    })
    .await?;

    // Series stay bounded: nothing labelled per table or per setting.
    let per_table = prometheus
        .query(r#"count({cluster="db", relname!=""})"#)
        .await?;
    ensure!(per_table.is_empty(), "per-table series: {per_table:?}");

    // The monitor role logs in from its own pod only, and reads statistics, nothing else.
    let monitor = env.credentials("db-pgpilot-monitor-credentials").await?;
    let config = env.pg_config("db-rw", &monitor).await?;
    let outside = connect(&config).await;
    ensure!(
        outside
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("pg_hba.conf rejects")),
        "pgpilot_monitor through db-rw: {:?}",
        outside.map(drop)
    );
    // Its privileges, assumed by the superuser: statistics yes, data and DDL no.
    rw.batch_execute("set role pgpilot_monitor").await?;
    let sessions: i64 = rw
        .query_one(
            "select count(*) from pg_stat_activity
             where pid <> pg_backend_pid() and usename = 'postgres'
               and query not in ('', '<insufficient privilege>')",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        sessions > 0,
        "pgpilot_monitor does not see the queries of the superuser's sessions"
    );
    for refused in ["select count(*) from t", "create table mine (x int)"] {
        let outcome = rw.simple_query(refused).await;
        ensure!(
            outcome.as_ref().is_err_and(|e| e
                .as_db_error()
                .is_some_and(|d| d.message().starts_with("permission denied"))),
            "{refused} as pgpilot_monitor: {:?}",
            outcome.map(drop)
        );
    }
    Ok(())
}

/// Every dashboard the chart ships, every panel's query and every variable's: run against a
/// real Prometheus scraping a manager and a cluster that archives, has a backup and a
/// rotation, each must parse and return at least one series.
#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let env = Env::start_scraped("dashboards").await;
    let result = dashboards(&env).await;
    env.finish(result).await;
}

/// The dashboards' queries with their variables: `(dashboard, panel, PromQL)`.
fn dashboard_queries() -> Result<Vec<(String, String, String)>> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/pgpilot/files/dashboards"
    );
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let board: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let title = board["title"].as_str().unwrap_or_default().to_owned();
        for var in board["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(q) = var["query"]["query"].as_str() {
                // label_values(<selector>, <label>): the selector must find series.
                let selector = q
                    .strip_prefix("label_values(")
                    .and_then(|rest| rest.rsplit_once(','))
                    .map_or(q, |(selector, _)| selector);
                let name = format!("${}", var["name"].as_str().unwrap_or_default());
                queries.push((title.clone(), name, selector.to_owned()));
            }
        }
        for panel in board["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().context("a target without expr")?;
                let name = panel["title"].as_str().unwrap_or_default().to_owned();
                queries.push((title.clone(), name, expr.to_owned()));
            }
        }
    }
    ensure!(
        queries.len() > 30,
        "only {} queries found in {dir}",
        queries.len()
    );
    Ok(queries)
}

async fn dashboards(env: &Env) -> Result<()> {
    let queries = dashboard_queries()?;
    let minio = Minio::start(env).await?;
    minio.create_bucket(env, "backups").await?;
    minio.credentials_secret(env, "s3", false)?;
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .spec(&format!(
                "backup: {{repository: {{s3: {}}}, retention: {{full: 1}}}}",
                minio.repository("backups", "s3")
            ))
            .spec("monitoring: {patroni: {enabled: true}}")
            .yaml(),
    )?;
    env.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: api}\nstringData: {token: old}\n---\n\
         apiVersion: pgpilot.io/v1alpha1\nkind: SecretRotation\nmetadata: {name: api-keys}\nspec:\n\
         \x20 target: {secret: {name: api, keys: [{key: token, generator: Hex, length: 16}]}}\n\
         \x20 rotateEvery: {interval: 720h}\n",
    )?;
    let prometheus = Prometheus::start(env).await?;
    env.wait_ready("db", 2, CREATE).await?;
    crate::backup::backup_of(env, "db", "first", "Full").await?;
    // Some WAL to archive and to stream, for the rates.
    let su = env.superuser("db").await?;
    let rw = env.connect("db-rw", &su, Duration::from_secs(60)).await?;
    rw.batch_execute(
        "create table t as select g from generate_series(1, 100000) g; select pg_switch_wal()",
    )
    .await?;

    let vars = [
        ("$namespace", env.ns.as_str()),
        ("$cluster", "db"),
        ("$__rate_interval", "1m"),
        ("$__range", "10m"),
    ];
    let mut pending: Vec<(String, String)> = queries
        .iter()
        .map(|(board, panel, expr)| {
            let promql = vars
                .iter()
                .fold(expr.clone(), |q, (var, value)| q.replace(var, value));
            (format!("{board} / {panel}"), promql)
        })
        .collect();
    // Rates need two scrapes, a backup's series a reconcile after it: one deadline for all.
    let deadline = std::time::Instant::now() + SCRAPED;
    loop {
        let mut missing = Vec::new();
        for (what, promql) in pending {
            match prometheus.query(&promql).await {
                Ok(samples) if !samples.is_empty() => {}
                Ok(_) => missing.push((what, promql, "no series".to_owned())),
                Err(e) => missing.push((what, promql, format!("{e:#}"))),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let lines: Vec<String> = missing
                .iter()
                .map(|(what, promql, why)| format!("{what}: {why}: {promql}"))
                .collect();
            anyhow::bail!(
                "{} of {} dashboard queries return nothing:\n{}",
                lines.len(),
                queries.len(),
                lines.join("\n")
            );
        }
        pending = missing.into_iter().map(|(w, q, _)| (w, q)).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
