//! Baseline (a): the same steps as a cluster's creation, run directly on the machine with
//! the host's PostgreSQL (Debian's, `/usr/lib/postgresql/<v>/bin`, as the `postgres` user):
//! initdb and start a primary, then clone each replica with pg_basebackup (in parallel, as
//! the pods do) and start it streaming. Timed until `pg_stat_replication` on the primary
//! shows every replica streaming (one instance: until the primary answers a query).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::kube_util::poll;

/// The newest PostgreSQL installed under /usr/lib/postgresql.
pub fn bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no host PostgreSQL (/usr/lib/postgresql); apt-get install postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

/// `postgres --version` of the host's server.
pub async fn version() -> Result<String> {
    let out = Command::new(bin_dir()?.join("postgres"))
        .arg("--version")
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
    password: String,
}

impl Scratch {
    /// `program` from the server's bin dir, as `postgres` (initdb refuses root).
    fn run(&self, program: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"])
            .arg(format!("PGPASSWORD={}", self.password))
            .arg(self.bin.join(program));
        c
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.join(format!("data{i}"))
    }

    async fn check(&self, what: &str, c: &mut Command) -> Result<()> {
        let out = c
            .output()
            .await
            .with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn start(&self, i: usize, port: u16) -> Result<()> {
        let data = self.data(i);
        let log = self.dir.join(format!("log{i}"));
        self.check(
            "pg_ctl start",
            self.run("pg_ctl")
                .args(["-w", "-D"])
                .arg(&data)
                .arg(format!(
                    "-o -p {port} -k {} -c listen_addresses=127.0.0.1 -c wal_keep_size=128MB",
                    self.dir.display()
                ))
                .arg(format!("-l{}", log.display()))
                .arg("start"),
        )
        .await
    }

    async fn stop_all(&self, n: usize) {
        for i in 0..n {
            let data = self.data(i);
            if data.join("postmaster.pid").exists() {
                let _ = self
                    .run("pg_ctl")
                    .args(["-m", "immediate", "-D"])
                    .arg(&data)
                    .arg("stop")
                    .output()
                    .await;
            }
        }
    }
}

/// How many replicas the server at `host:port` sees streaming (as `postgres`).
pub async fn streaming(host: &str, port: u16, password: &str) -> Result<i64> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select count(*) from pg_stat_replication where state = 'streaming'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// One run with `instances` servers; returns the time from initdb to all replicas streaming.
pub async fn run_once(instances: usize, sample: usize) -> Result<Duration> {
    let bin = bin_dir()?;
    let dir = PathBuf::from(format!(
        "/var/tmp/pgpilot-bench-host-{}-{sample}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let password = format!("bench{nanos:x}");
    std::fs::write(dir.join("pwfile"), &password)?;
    chown_postgres(&dir).await?;
    let s = Scratch { dir, bin, password };
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect::<Result<_>>()?;
    let result = measure(&s, &ports).await;
    s.stop_all(instances).await;
    let _ = std::fs::remove_dir_all(&s.dir);
    result
}

async fn chown_postgres(dir: &Path) -> Result<()> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .await?;
    if !status.success() {
        bail!("chown postgres {}", dir.display());
    }
    Ok(())
}

async fn measure(s: &Scratch, ports: &[u16]) -> Result<Duration> {
    let t0 = Instant::now();
    s.check(
        "initdb",
        s.run("initdb")
            .args([
                "--username=postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--data-checksums",
            ])
            .arg(format!("--pwfile={}", s.dir.join("pwfile").display()))
            .arg("-D")
            .arg(s.data(0)),
    )
    .await?;
    s.start(0, ports[0]).await?;
    let primary = ports[0];
    let replicas = (1..ports.len()).map(|i| async move {
        s.check(
            "pg_basebackup",
            s.run("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-R",
                ])
                .arg(format!("-p{primary}"))
                .arg("-D")
                .arg(s.data(i)),
        )
        .await?;
        s.start(i, ports[i]).await
    });
    futures::future::try_join_all(replicas).await?;
    let want = (ports.len() - 1) as i64;
    poll(
        "host replicas streaming",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async {
            Ok((streaming("127.0.0.1", primary, &s.password).await? >= want).then_some(()))
        },
    )
    .await?;
    Ok(t0.elapsed())
}
