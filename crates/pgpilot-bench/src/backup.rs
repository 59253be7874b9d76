//! Backup benchmarks (`just bench-backup`): a ≥ 1 GiB pgbench database in a one-instance
//! cluster archiving to MinIO over TLS; its full backup (a PostgresBackup) beside two raw
//! paths over the same bytes on the same machine in the same run (tar of the data directory
//! to local disk; that tar PUT to the same MinIO); pgBackRest's settings varied; restore
//! time; WAL archive lag under a pgbench load with and without `archive-async`.
//!
//! Caches are dropped before every measured read (the data directory is on the same disk
//! for all three paths), so no path reads what another left in memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::{PostgresBackup, PostgresCluster};
use pgpilot_testkit::minio::{self, Minio};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kube_util::{kubectl, load1, loadavg, poll};
use crate::pgc;

pub const SOURCE: &str = "bench-backup";
const BUCKET: &str = "bench";
const CREDENTIALS: &str = "bench-s3";
/// The data directory inside the instance's volume.
const PGDATA_IN_VOLUME: &str = "pgdata";

/// One measured transfer of `bytes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Transfer {
    pub seconds: f64,
    pub bytes: u64,
    pub load1: f64,
}

impl Transfer {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// One full backup.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupRun {
    /// pgBackRest settings that differ from pgpilot's, e.g. `process-max=4`; empty: pgpilot's.
    pub settings: String,
    /// Create → PostgresBackup Completed (or Job created → Job complete, for variants).
    pub wall_seconds: f64,
    /// pgBackRest's own start and stop (whole seconds).
    pub pgbackrest_seconds: f64,
    /// What pgBackRest copied (the database size it reports).
    pub bytes: u64,
    /// What it wrote to the repository.
    pub repository_bytes: u64,
    pub load1: f64,
}

impl BackupRun {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall_seconds
    }
}

/// One restore: PostgresCluster create → Ready.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreRun {
    pub seconds: f64,
    /// Create → the backup controller chose the backup (`status.restore`).
    pub chosen_seconds: f64,
    /// Create → the instance's container started (whole seconds, from the pod's status).
    #[serde(default)]
    pub container_started_seconds: Option<f64>,
    /// pgBackRest's own restore time (its `restore command end` line).
    #[serde(default)]
    pub pgbackrest_seconds: Option<f64>,
    pub load1: f64,
}

/// PostgreSQL's archiver seen from outside every `SAMPLE_EVERY`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiverSample {
    /// Seconds since the load started.
    pub t: f64,
    /// The segment being written.
    pub current: String,
    /// `pg_stat_archiver.last_archived_wal`.
    pub last_archived: Option<String>,
    pub failed_count: i64,
}

/// WAL archiving under a pgbench load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveRun {
    pub archive_async: bool,
    pub load_seconds: f64,
    pub clients: u32,
    pub tps: f64,
    pub wal_bytes: u64,
    /// Per segment: from the first sample that saw PostgreSQL past it to the first that saw
    /// it archived.
    pub lags: Vec<f64>,
    /// Segments completed but not archived when sampling ended.
    pub unarchived: usize,
    pub max_pending: u64,
    pub failed: i64,
    pub samples: Vec<ArchiverSample>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupResults {
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    pub scale: u32,
    pub pgbackrest_version: String,
    /// `pg_database_size` of every database.
    pub database_bytes: u64,
    pub init_seconds: f64,
    pub tar: Vec<Transfer>,
    pub put: Vec<Transfer>,
    pub backup: Vec<BackupRun>,
    pub variants: Vec<BackupRun>,
    pub restore: Vec<RestoreRun>,
    pub archive: Vec<ArchiveRun>,
    pub errors: Vec<String>,
}

pub struct Options {
    pub scale: u32,
    pub repeat: usize,
    pub load_seconds: u64,
    pub clients: u32,
    /// Leave the source cluster and MinIO running afterwards (to look at them).
    pub keep: bool,
    pub work_dir: PathBuf,
}

/// The variants of pgBackRest's settings measured beside pgpilot's (process-max 2, zst at
/// level 3): environment variables pgBackRest reads over its config file.
pub const VARIANTS: &[&[(&str, &str)]] = &[
    &[("PROCESS_MAX", "1")],
    &[("PROCESS_MAX", "4")],
    &[("COMPRESS_TYPE", "lz4"), ("COMPRESS_LEVEL", "1")],
    &[("COMPRESS_TYPE", "zst"), ("COMPRESS_LEVEL", "6")],
    &[("COMPRESS_TYPE", "gz"), ("COMPRESS_LEVEL", "6")],
    &[("COMPRESS_TYPE", "none")],
];

fn settings_label(variant: &[(&str, &str)]) -> String {
    variant
        .iter()
        .map(|(k, v)| format!("{}={v}", k.to_lowercase().replace('_', "-")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(
    client: &Client,
    ns: &str,
    opts: &Options,
    save: &dyn Fn(&BackupResults) -> Result<()>,
) -> Result<BackupResults> {
    let mut r = BackupResults {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        load_start: loadavg(),
        scale: opts.scale,
        ..Default::default()
    };
    std::fs::create_dir_all(&opts.work_dir)?;
    let (minio, minio_ip) = start_minio(ns).await?;
    let repository = json!({"s3": {
        "endpoint": minio.endpoint, "bucket": BUCKET,
        "credentials": {"secretName": CREDENTIALS},
        "caBundle": {"name": minio::CA_SECRET, "key": "ca.crt"},
    }});
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    let primary = format!("{SOURCE}-0");
    // Always a new cluster: MinIO above is new (empty, with new keys). An earlier run's
    // backups go first: their Jobs' pods carry the cluster's label.
    let backups = Api::<PostgresBackup>::namespaced(client.clone(), ns);
    clear(client, ns).await?;
    let mut spec = pgc::spec(1)?;
    spec["storage"]["size"] = json!("8Gi");
    // Every backup of the run stays (the restores use the last one taken with pgpilot's
    // settings, before the variants).
    spec["backup"] = json!({"repository": repository, "retention": {"full": 20}});
    clusters
        .create(&PostParams::default(), &cluster(SOURCE, spec)?)
        .await
        .context("creating the source cluster")?;
    pgc::wait_ready(&clusters, SOURCE, Duration::from_secs(300)).await?;
    wait_archiving(&clusters).await?;
    println!(
        "pgbench -i -s {} (about {} MB)…",
        opts.scale,
        opts.scale * 15
    );
    let t = Instant::now();
    exec(
        ns,
        &primary,
        &[
            "pgbench",
            "-h",
            "/run/postgresql",
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            &opts.scale.to_string(),
            "postgres",
        ],
    )
    .await?;
    r.init_seconds = t.elapsed().as_secs_f64();
    println!("pgbench -i: {:.0} s", r.init_seconds);
    r.pgbackrest_version = exec(ns, &primary, &["pgbackrest", "version"])
        .await
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let target = pgc::rw_target(client, ns, SOURCE).await?;
    let db = connect(&target.host, &target.password).await?;
    r.database_bytes = db
        .query_one(
            "select sum(pg_database_size(oid))::bigint from pg_database",
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64;
    // Nothing left for the checkpoint or the archiver to do while the paths are measured.
    db.batch_execute("checkpoint").await?;
    wait_archived(&db, Duration::from_secs(600)).await?;
    save(&r)?;

    let data_dir = data_dir(client, ns, &primary).await?;
    let tar_file = opts.work_dir.join("pgdata.tar");
    let mut last_backup = None;
    for k in 0..opts.repeat {
        // Interleaved, so a change of the machine's load falls on all three alike.
        match tar_to_disk(&data_dir, &tar_file).await {
            Ok(t) => {
                println!(
                    "tar to local disk #{k}: {:.1} s, {:.1} MB/s",
                    t.seconds,
                    t.mb_per_s()
                );
                r.tar.push(t);
            }
            Err(e) => error(&mut r.errors, &format!("tar #{k}"), &e),
        }
        match put_to_minio(&minio, &minio_ip, &tar_file).await {
            Ok(t) => {
                println!(
                    "PUT to MinIO #{k}: {:.1} s, {:.1} MB/s",
                    t.seconds,
                    t.mb_per_s()
                );
                r.put.push(t);
            }
            Err(e) => error(&mut r.errors, &format!("PUT #{k}"), &e),
        }
        match postgres_backup(client, ns, &format!("bench-full-{k}")).await {
            Ok((b, name)) => {
                println!(
                    "PostgresBackup full #{k}: {:.1} s ({:.0} s in pgBackRest), {:.1} MB/s, {} MB in the repository",
                    b.wall_seconds,
                    b.pgbackrest_seconds,
                    b.mb_per_s(),
                    b.repository_bytes / 1_000_000
                );
                r.backup.push(b);
                last_backup = Some(name);
            }
            Err(e) => error(&mut r.errors, &format!("PostgresBackup #{k}"), &e),
        }
        save(&r)?;
    }
    let _ = std::fs::remove_file(&tar_file);

    if let Some(template) = &last_backup {
        for (i, variant) in VARIANTS.iter().enumerate() {
            match variant_backup(client, ns, template, i, variant).await {
                Ok(b) => {
                    println!(
                        "full backup with {}: {:.1} s ({:.0} s in pgBackRest), {} MB in the repository",
                        b.settings,
                        b.wall_seconds,
                        b.pgbackrest_seconds,
                        b.repository_bytes / 1_000_000
                    );
                    r.variants.push(b);
                }
                Err(e) => error(
                    &mut r.errors,
                    &format!("backup with {}", settings_label(variant)),
                    &e,
                ),
            }
            save(&r)?;
        }
    }

    // Restores of the last backup taken with pgpilot's settings.
    let backup_id = match &last_backup {
        Some(name) => backups
            .get(name)
            .await?
            .status
            .and_then(|s| s.backup_id)
            .context("the last PostgresBackup has no backupId")?,
        None => bail!("no PostgresBackup completed: {:?}", r.errors),
    };
    for k in 0..opts.repeat {
        match restore_once(client, ns, &repository, &backup_id, k).await {
            Ok(x) => {
                println!(
                    "restore #{k}: Ready after {:.1} s (backup chosen after {:.1} s)",
                    x.seconds, x.chosen_seconds
                );
                r.restore.push(x);
            }
            Err(e) => error(&mut r.errors, &format!("restore #{k}"), &e),
        }
        save(&r)?;
    }

    for archive_async in [true, false] {
        match archive_under_load(ns, &primary, &db, archive_async, opts).await {
            Ok(a) => {
                let s = crate::model::Summary::of(a.lags.iter().copied());
                println!(
                    "archive-async={}: {:.0} tps, {} MB of WAL, lag per segment median {:.2} s max {:.2} s, {} pending at most, {} unarchived",
                    if archive_async { "y" } else { "n" },
                    a.tps,
                    a.wal_bytes / 1_000_000,
                    s.map_or(f64::NAN, |s| s.median),
                    s.map_or(f64::NAN, |s| s.max),
                    a.max_pending,
                    a.unarchived
                );
                r.archive.push(a);
            }
            Err(e) => error(
                &mut r.errors,
                &format!("archive lag, archive-async={archive_async}"),
                &e,
            ),
        }
        save(&r)?;
    }
    // Whatever happened above, the instance archives as pgpilot configured it again.
    reset_archive_command(&db).await?;

    if !opts.keep {
        clear(client, ns).await?;
        let _ = kubectl(&["-n", ns, "delete", "pod,service", minio::NAME, "--wait"]).await;
    }
    r.load_end = loadavg();
    save(&r)?;
    Ok(r)
}

/// Deletes the source cluster with the run's backups and variant Jobs, the backups first:
/// their Jobs' pods carry the cluster's label, which the cluster's deletion waits on.
async fn clear(client: &Client, ns: &str) -> Result<()> {
    Api::<PostgresBackup>::namespaced(client.clone(), ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    for k in 0..VARIANTS.len() {
        delete_job(&jobs, &format!("bench-variant-{k}")).await?;
    }
    pgc::delete_cluster(client, ns, SOURCE).await
}

fn error(errors: &mut Vec<String>, what: &str, e: &anyhow::Error) {
    eprintln!("FAILED {what}: {e:#}");
    errors.push(format!("{what}: {e:#}"));
}

fn cluster(name: &str, spec: Value) -> Result<PostgresCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": name}, "spec": spec,
    }))?)
}

async fn start_minio(ns: &str) -> Result<(Minio, String)> {
    let (minio, objects) = Minio::new(ns).map_err(|e| anyhow::anyhow!("{e}"))?;
    // A running MinIO keeps its root credentials: a new one starts empty with new ones.
    let _ = kubectl(&["-n", ns, "delete", "pod", minio::NAME, "--wait"]).await;
    apply(ns, &objects).await?;
    apply(ns, &minio.credentials_secret(CREDENTIALS, false)).await?;
    kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        &format!("pod/{}", minio::NAME),
        "--timeout=120s",
    ])
    .await?;
    let ip = kubectl(&[
        "-n",
        ns,
        "get",
        "service",
        minio::NAME,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
    .await?;
    let path = format!("/{BUCKET}");
    poll(
        "the bucket",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match minio.request(&ip, "PUT", &path, None).await {
                Ok((200, _)) => Ok(Some(())),
                Ok((code, body)) => bail!("HTTP {code}: {body}"),
                Err(e) => bail!("{e}"),
            }
        },
    )
    .await?;
    Ok((minio, ip))
}

async fn apply(ns: &str, object: &Value) -> Result<()> {
    let file = std::env::temp_dir().join(format!("pgpilot-bench-{}.json", std::process::id()));
    std::fs::write(&file, object.to_string())?;
    let out = kubectl(&["-n", ns, "apply", "-f", &file.to_string_lossy()]).await;
    let _ = std::fs::remove_file(&file);
    out.map(drop)
}

async fn wait_archiving(clusters: &Api<PostgresCluster>) -> Result<()> {
    poll(
        "ContinuousArchiving=True",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || async {
            let c = clusters.get(SOURCE).await?;
            Ok(c.status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| {
                    c.type_ == pgpilot_api::cluster::condition::CONTINUOUS_ARCHIVING
                        && c.status == "True"
                })
                .then_some(()))
        },
    )
    .await
}

/// Runs a command in the instance's postgres container; its stdout.
async fn exec(ns: &str, pod: &str, command: &[&str]) -> Result<String> {
    let mut args = vec!["-n", ns, "exec", pod, "-c", "postgres", "--"];
    args.extend_from_slice(command);
    kubectl(&args).await
}

async fn connect(host: &str, password: &str) -> Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the source cluster")?;
    tokio::spawn(conn);
    Ok(c)
}

/// The segment being written and the last one archived.
async fn archiver(db: &tokio_postgres::Client) -> Result<(String, Option<String>, i64)> {
    let row = db
        .query_one(
            "select pg_walfile_name(pg_current_wal_lsn()), last_archived_wal, failed_count \
             from pg_stat_archiver",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Switches to a new segment and waits until every completed one is archived.
async fn wait_archived(db: &tokio_postgres::Client, timeout: Duration) -> Result<()> {
    db.batch_execute("select pg_switch_wal()").await?;
    let (current, _, _) = archiver(db).await?;
    let current = segno(&current).context("segment name")?;
    poll(
        "the archive to catch up",
        timeout,
        Duration::from_millis(500),
        || async {
            let (_, last, _) = archiver(db).await?;
            Ok(last
                .as_deref()
                .and_then(segno)
                .filter(|&s| s + 1 >= current)
                .map(drop))
        },
    )
    .await
}

/// The host directory of the instance's data directory (local-path volumes are host dirs).
async fn data_dir(client: &Client, ns: &str, pod: &str) -> Result<PathBuf> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get(pod).await?;
    let claim = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .find_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .context("the instance pod has no claim")?;
    let pv_name = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(&claim)
        .await?
        .spec
        .and_then(|s| s.volume_name)
        .context("the claim is not bound")?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await?;
    let spec = pv.spec.context("volume without spec")?;
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .context("the volume is neither hostPath nor local")?;
    Ok(Path::new(&path).join(PGDATA_IN_VOLUME))
}

/// Writes dirty pages and drops the page cache: every path reads from the disk.
async fn drop_caches() -> Result<()> {
    let status = tokio::process::Command::new("sync").status().await?;
    if !status.success() {
        bail!("sync failed");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache (needs root)")?;
    Ok(())
}

/// Raw path 1: tar of the data directory (without pg_wal, which a backup does not copy
/// either: WAL comes from the archive) to a file on the same disk, written through.
async fn tar_to_disk(data_dir: &Path, out: &Path) -> Result<Transfer> {
    drop_caches().await?;
    let load = load1();
    let t = Instant::now();
    let status = tokio::process::Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("--exclude=./pg_wal/*")
        .arg("--warning=no-file-changed")
        .arg("-C")
        .arg(data_dir)
        .arg(".")
        .status()
        .await?;
    // 1: some file changed while read (the instance is running), which is fine here.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("tar failed: {status}");
    }
    let synced = tokio::process::Command::new("sync")
        .arg(out)
        .status()
        .await?;
    if !synced.success() {
        bail!("sync {} failed", out.display());
    }
    Ok(Transfer {
        seconds: t.elapsed().as_secs_f64(),
        bytes: std::fs::metadata(out)?.len(),
        load1: load,
    })
}

/// Raw path 2: the same bytes, one PUT to the same MinIO over TLS.
async fn put_to_minio(minio: &Minio, ip: &str, file: &Path) -> Result<Transfer> {
    drop_caches().await?;
    let load = load1();
    let t = Instant::now();
    let (code, body) = minio
        .request(ip, "PUT", &format!("/{BUCKET}/raw/pgdata.tar"), Some(file))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if code != 200 {
        bail!("PUT: HTTP {code}: {body}");
    }
    Ok(Transfer {
        seconds: t.elapsed().as_secs_f64(),
        bytes: std::fs::metadata(file)?.len(),
        load1: load,
    })
}

/// A full PostgresBackup, created → Completed; the run and the object's name.
async fn postgres_backup(client: &Client, ns: &str, name: &str) -> Result<(BackupRun, String)> {
    let api = Api::<PostgresBackup>::namespaced(client.clone(), ns);
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
        poll(
            "the old PostgresBackup to go",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
        )
        .await?;
    }
    let backup: PostgresBackup = serde_json::from_value(json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
        "metadata": {"name": name},
        "spec": {"cluster": {"name": SOURCE}, "type": "Full"},
    }))?;
    drop_caches().await?;
    let load = load1();
    let t = Instant::now();
    api.create(&PostParams::default(), &backup).await?;
    let status = poll(
        "the backup to complete",
        Duration::from_secs(1800),
        Duration::from_millis(200),
        || async {
            let s = api.get(name).await?.status.unwrap_or_default();
            match s.phase {
                Some(BackupPhase::Completed) => Ok(Some(s)),
                Some(BackupPhase::Failed) => bail!("backup failed: {:?}", s.error),
                _ => Ok(None),
            }
        },
    )
    .await?;
    let wall = t.elapsed().as_secs_f64();
    let (start, stop) = status
        .start_time
        .zip(status.stop_time)
        .context("no start or stop time")?;
    Ok((
        BackupRun {
            settings: String::new(),
            wall_seconds: wall,
            pgbackrest_seconds: (stop.0.as_second() - start.0.as_second()) as f64,
            bytes: status.size_bytes.unwrap_or(0) as u64,
            repository_bytes: status.repository_size_bytes.unwrap_or(0) as u64,
            load1: load,
        },
        name.to_owned(),
    ))
}

/// A full backup with other pgBackRest settings: a copy of the Job pgpilot ran for
/// PostgresBackup `template`, with the variant's `PGBACKREST_*` variables added. pgBackRest
/// reads its environment over its config file; its log line `backup command begin` shows the
/// options in force.
async fn variant_backup(
    client: &Client,
    ns: &str,
    template: &str,
    index: usize,
    variant: &[(&str, &str)],
) -> Result<BackupRun> {
    let job_name = Api::<PostgresBackup>::namespaced(client.clone(), ns)
        .get(template)
        .await?
        .status
        .and_then(|s| s.job)
        .context("the template backup has no Job")?;
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let source = jobs.get(&job_name).await?;
    let mut pod = serde_json::to_value(
        source
            .spec
            .context("the Job has no spec")?
            .template
            .spec
            .context("the Job has no pod spec")?,
    )?;
    let uid = format!("bench-variant-{index}");
    let name = format!("bench-variant-{index}");
    let env = pod["containers"][0]["env"]
        .as_array_mut()
        .context("the Job's container has no env")?;
    for e in env.iter_mut() {
        if e["name"] == "PGPILOT_BACKUP_UID" {
            e["value"] = json!(uid);
        }
    }
    for (k, v) in variant {
        env.push(json!({"name": format!("PGBACKREST_{k}"), "value": v}));
    }
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pgpilot-bench"}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "pgpilot-bench"}},
            "spec": pod}},
    }))?;
    delete_job(&jobs, &name).await?;
    drop_caches().await?;
    let load = load1();
    let t = Instant::now();
    jobs.create(&PostParams::default(), &job).await?;
    poll(
        "the Job to complete",
        Duration::from_secs(1800),
        Duration::from_millis(200),
        || async {
            let j = jobs.get(&name).await?;
            let conds = j.status.and_then(|s| s.conditions).unwrap_or_default();
            if conds
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True")
            {
                bail!("the Job failed");
            }
            Ok(conds
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some(()))
        },
    )
    .await?;
    let wall = t.elapsed().as_secs_f64();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?;
    let report = pods
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .context("no report from the Job")?;
    let info = backup_info(&report, &uid)?;
    delete_job(&jobs, &name).await?;
    Ok(BackupRun {
        settings: settings_label(variant),
        wall_seconds: wall,
        load1: load,
        ..info
    })
}

async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<()> {
    if jobs.get_opt(name).await?.is_some() {
        jobs.delete(
            name,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            },
        )
        .await?;
        poll(
            "the Job to go",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async { Ok(jobs.get_opt(name).await?.is_none().then_some(())) },
        )
        .await?;
    }
    Ok(())
}

/// Duration and sizes of the backup annotated with `uid` in pgBackRest's `info` JSON.
pub fn backup_info(report: &str, uid: &str) -> Result<BackupRun> {
    let info: Value = serde_json::from_str(report).context("the report is not JSON")?;
    let backup = info
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|stanza| stanza["backup"].as_array().into_iter().flatten())
        .find(|b| b["annotation"]["pgpilot.io/backup"] == uid)
        .with_context(|| format!("no backup annotated {uid} in the report"))?;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(BackupRun {
        pgbackrest_seconds: n(&backup["timestamp"]["stop"])
            .saturating_sub(n(&backup["timestamp"]["start"])) as f64,
        bytes: n(&backup["info"]["size"]),
        repository_bytes: n(&backup["info"]["repository"]["size"]),
        ..Default::default()
    })
}

/// A one-instance cluster restored from `backup_id`: create → Ready, then deleted.
async fn restore_once(
    client: &Client,
    ns: &str,
    repository: &Value,
    backup_id: &str,
    k: usize,
) -> Result<RestoreRun> {
    let name = format!("bench-restored-{k}");
    pgc::delete_cluster(client, ns, &name).await?;
    let api = Api::<PostgresCluster>::namespaced(client.clone(), ns);
    let mut spec = pgc::spec(1)?;
    spec["storage"]["size"] = json!("8Gi");
    spec["bootstrap"] = json!({"restore": {
        "source": {"name": SOURCE}, "repository": repository, "backupId": backup_id,
    }});
    drop_caches().await?;
    let load = load1();
    let t = Instant::now();
    let created = chrono::Utc::now().timestamp_millis();
    api.create(&PostParams::default(), &cluster(&name, spec)?)
        .await?;
    let chosen = poll(
        "the backup controller to choose the backup",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || async {
            let c = api.get(&name).await?;
            Ok(c.status
                .and_then(|s| s.restore)
                .map(|_| t.elapsed().as_secs_f64()))
        },
    )
    .await?;
    let ready = pgc::wait_ready(&api, &name, Duration::from_secs(1800)).await;
    let seconds = t.elapsed().as_secs_f64();
    // Where the time went: the container's start, and pgBackRest's own account.
    let pod = format!("{name}-0");
    let container_started_seconds = Api::<Pod>::namespaced(client.clone(), ns)
        .get(&pod)
        .await
        .ok()
        .and_then(|p| p.status?.container_statuses)
        .and_then(|cs| {
            let c = cs.into_iter().find(|c| c.name == "postgres")?;
            Some(c.state?.running?.started_at?.0.as_millisecond())
        })
        .map(|ms| (ms - created) as f64 / 1000.0);
    let logs = kubectl(&["-n", ns, "logs", &pod, "-c", "postgres"])
        .await
        .unwrap_or_default();
    let deleted = pgc::delete_cluster(client, ns, &name).await;
    ready?;
    deleted?;
    Ok(RestoreRun {
        seconds,
        chosen_seconds: chosen,
        container_started_seconds,
        pgbackrest_seconds: restore_ms(&logs).map(|ms| ms as f64 / 1000.0),
        load1: load,
    })
}

/// The duration pgBackRest gives in `restore command end: completed successfully (1234ms)`.
fn restore_ms(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| {
            l.split("restore command end: completed successfully (")
                .nth(1)
        })?
        .split("ms)")
        .next()?
        .parse()
        .ok()
}

const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// pgbench (TPC-B-like) for `load_seconds` on the instance while sampling the archiver; then
/// sampling goes on until every completed segment is archived (at most two minutes).
async fn archive_under_load(
    ns: &str,
    pod: &str,
    db: &tokio_postgres::Client,
    archive_async: bool,
    opts: &Options,
) -> Result<ArchiveRun> {
    if archive_async {
        reset_archive_command(db).await?;
    } else {
        let current: String = db.query_one("show archive_command", &[]).await?.get(0);
        if !current.contains("archive-push") {
            bail!("unexpected archive_command {current:?}");
        }
        let sync = current.replace("archive-push", "--no-archive-async archive-push");
        // One statement per call: several in one string run as one transaction, and
        // ALTER SYSTEM refuses to run in one.
        db.batch_execute(&format!(
            "alter system set archive_command = '{}'",
            sync.replace('\'', "''")
        ))
        .await?;
        db.batch_execute("select pg_reload_conf()").await?;
    }
    wait_archived(db, Duration::from_secs(300)).await?;
    let lsn0: String = db
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let secs = opts.load_seconds.to_string();
    let clients = opts.clients.to_string();
    let (ns, pod) = (ns.to_owned(), pod.to_owned());
    let load = tokio::spawn(async move {
        exec(
            &ns,
            &pod,
            &[
                "pgbench",
                "-h",
                "/run/postgresql",
                "-U",
                "postgres",
                "-c",
                &clients,
                "-j",
                "2",
                "-T",
                &secs,
                "postgres",
            ],
        )
        .await
    });
    let t0 = Instant::now();
    let mut samples = vec![];
    let mut load_done = None;
    let mut output = String::new();
    loop {
        let (current, last, failed) = archiver(db).await?;
        samples.push(ArchiverSample {
            t: t0.elapsed().as_secs_f64(),
            current,
            last_archived: last,
            failed_count: failed,
        });
        if load_done.is_none() && load.is_finished() {
            load_done = Some(t0.elapsed().as_secs_f64());
            db.batch_execute("select pg_switch_wal()").await?;
        }
        if let Some(done) = load_done {
            let caught_up = samples.last().is_some_and(|s| {
                let (c, l) = (
                    segno(&s.current),
                    s.last_archived.as_deref().and_then(segno),
                );
                matches!((c, l), (Some(c), Some(l)) if l + 1 >= c)
            });
            if caught_up || t0.elapsed().as_secs_f64() > done + 120.0 {
                break;
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    if let Ok(out) = load.await {
        output = out?;
    }
    let wal_bytes = db
        .query_one(
            "select (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
            &[&lsn0],
        )
        .await?
        .get::<_, i64>(0) as u64;
    let lag = segment_lags(&samples);
    Ok(ArchiveRun {
        archive_async,
        load_seconds: opts.load_seconds as f64,
        clients: opts.clients,
        tps: tps(&output).unwrap_or(f64::NAN),
        wal_bytes,
        lags: lag.lags,
        unarchived: lag.unarchived,
        max_pending: lag.max_pending,
        failed: samples.last().map_or(0, |s| s.failed_count)
            - samples.first().map_or(0, |s| s.failed_count),
        samples,
    })
}

/// The archive_command as pgpilot configured it (ALTER SYSTEM's override removed).
async fn reset_archive_command(db: &tokio_postgres::Client) -> Result<()> {
    db.batch_execute("alter system reset archive_command")
        .await?;
    db.batch_execute("select pg_reload_conf()").await?;
    Ok(())
}

/// pgbench's `tps = N (without initial connection time)`.
pub fn tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.starts_with("tps = "))?
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The segment number of a WAL file name (16 MB segments), ignoring the timeline.
pub fn segno(name: &str) -> Option<u64> {
    if name.len() != 24 {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 0x100 + seg)
}

#[derive(Debug, PartialEq)]
pub struct Lags {
    pub lags: Vec<f64>,
    pub unarchived: usize,
    pub max_pending: u64,
}

/// Archive lag per segment from the samples. A segment counts as completed at the last sample
/// that still saw it being written (the earliest it can have been, so the lag is never
/// understated), and as archived at the first sample whose last archived segment is it or a
/// later one. Only segments completed during the samples count.
pub fn segment_lags(samples: &[ArchiverSample]) -> Lags {
    let mut completed: std::collections::BTreeMap<u64, f64> = Default::default();
    let mut archived: std::collections::BTreeMap<u64, f64> = Default::default();
    let mut max_pending = 0;
    let mut prev: Option<(u64, f64)> = None;
    for s in samples {
        let Some(cur) = segno(&s.current) else {
            continue;
        };
        if let Some((p, pt)) = prev {
            for seg in p..cur {
                completed.entry(seg).or_insert(pt);
            }
        }
        prev = Some((cur, s.t));
        if let Some(last) = s.last_archived.as_deref().and_then(segno) {
            for (&seg, _) in completed.range(..=last) {
                archived.entry(seg).or_insert(s.t);
            }
            max_pending = max_pending.max(cur.saturating_sub(last + 1));
        }
    }
    let mut lags = vec![];
    let mut unarchived = 0;
    for (seg, c) in &completed {
        match archived.get(seg) {
            Some(a) => lags.push(a - c),
            None => unarchived += 1,
        }
    }
    Lags {
        lags,
        unarchived,
        max_pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, current: u64, last: Option<u64>) -> ArchiverSample {
        ArchiverSample {
            t,
            current: format!("00000001{:08X}{:08X}", current / 0x100, current % 0x100),
            last_archived: last.map(|l| format!("00000001{:08X}{:08X}", l / 0x100, l % 0x100)),
            failed_count: 0,
        }
    }

    #[test]
    fn segment_numbers_carry_across_log_ids() {
        assert_eq!(segno("0000000100000000000000FF"), Some(0xFF));
        assert_eq!(segno("000000020000000100000000"), Some(0x100));
        assert_eq!(segno("00000001"), None);
    }

    #[test]
    fn a_segment_is_completed_at_the_last_sample_that_saw_it_written() {
        // Segment 0xFF written at t=0 and 1, the writer is past it at 2; archived seen at 3.
        let lags = segment_lags(&[
            s(0.0, 0xFF, Some(0xFE)),
            s(1.0, 0xFF, Some(0xFE)),
            s(2.0, 0x100, Some(0xFE)),
            s(3.0, 0x101, Some(0xFF)),
            s(4.0, 0x101, Some(0x100)),
        ]);
        // 0xFF: completed 1.0, archived 3.0; 0x100: completed 2.0, archived 4.0.
        assert_eq!(lags.lags, vec![2.0, 2.0]);
        assert_eq!(lags.unarchived, 0);
        assert_eq!(lags.max_pending, 1);
    }

    #[test]
    fn segments_never_archived_are_counted_not_timed() {
        let lags = segment_lags(&[s(0.0, 10, Some(9)), s(1.0, 13, Some(10))]);
        assert_eq!(lags.lags, vec![1.0]);
        assert_eq!(lags.unarchived, 2);
        assert_eq!(lags.max_pending, 2);
    }

    #[test]
    fn a_variant_reads_as_pgbackrest_options() {
        assert_eq!(
            settings_label(&[("COMPRESS_TYPE", "zst"), ("PROCESS_MAX", "4")]),
            "compress-type=zst process-max=4"
        );
    }

    #[test]
    fn the_report_gives_the_annotated_backup() {
        let report = r#"[{"backup":[
            {"annotation":{"pgpilot.io/backup":"old"},"timestamp":{"start":100,"stop":110},"info":{"size":1,"repository":{"size":1}}},
            {"annotation":{"pgpilot.io/backup":"b-1"},"timestamp":{"start":200,"stop":233},"info":{"size":1100000000,"repository":{"size":90000000}}}
        ],"name":"x"}]"#;
        let b = backup_info(report, "b-1").unwrap();
        assert_eq!(
            (b.pgbackrest_seconds, b.bytes, b.repository_bytes),
            (33.0, 1_100_000_000, 90_000_000)
        );
        assert!(backup_info(report, "nope").is_err());
    }

    #[test]
    fn the_restore_time_comes_from_pgbackrests_last_line() {
        let log = "2026-12-06 03:59:01.123 P00   INFO: restore command begin 2.55.1: --delta\n\
                   2026-12-06 03:59:07.456 P00   INFO: restore command end: completed successfully (6333ms)\n";
        assert_eq!(restore_ms(log), Some(6333));
        assert_eq!(restore_ms("nothing"), None);
    }

    #[test]
    fn tps_comes_from_pgbench_summary() {
        let out = "latency average = 2.1 ms\ntps = 1876.512 (without initial connection time)\n";
        assert_eq!(tps(out), Some(1876.512));
        assert_eq!(tps("nothing"), None);
    }
}
