//! A sequence writer: the client side of failover, switchover and no-data-loss checks.
//!
//! [`Writer::start`] connects to PostgreSQL (typically through a cluster's `<name>-rw`
//! Service), creates its table if missing and inserts increasing ids, one transaction each,
//! every [`WriterConfig::interval`]. Every insert returns `inet_server_addr()`, so each
//! acknowledged id is recorded with the server that acknowledged it and the [`Instant`] the
//! acknowledgement arrived. Any error (refused connection, a read-only server, a timeout)
//! drops the connection and reconnects with a short connect timeout; an id that was not
//! acknowledged is never reused, so a later read-back can tell lost writes from failed ones.
//!
//! [`Writer::stop`] returns a [`WriteLog`], whose pure methods compute the failover gap
//! ([`WriteLog::failover`]), the longest pause between acknowledgements
//! ([`WriteLog::longest_gap`]) and which acknowledged ids are missing from what was read
//! back ([`WriteLog::missing`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    /// Table to create and insert into (a plain identifier).
    pub table: String,
    /// Pause between two inserts.
    pub interval: Duration,
    /// Connect timeout of each (re)connection attempt.
    pub connect_timeout: Duration,
    /// Longest wait for one insert; a connection to a vanished server may never answer.
    pub statement_timeout: Duration,
    /// TLS: `host` is then an IP address, and the server must present a certificate for
    /// this name that `config` trusts.
    pub tls: Option<WriterTls>,
}

/// A TLS connection's server name and client configuration.
#[derive(Clone, Debug)]
pub struct WriterTls {
    pub server_name: String,
    pub config: Arc<rustls::ClientConfig>,
}

impl WriterConfig {
    /// Defaults for failover measurements: an insert every 10 ms, 1 s timeouts.
    pub fn new(host: &str, port: u16, user: &str, password: &str, dbname: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            dbname: dbname.to_owned(),
            table: "pgpilot_writer".to_owned(),
            interval: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        match (&self.tls, self.host.parse()) {
            (Some(tls), Ok(ip)) => {
                c.host(&tls.server_name)
                    .hostaddr(ip)
                    .ssl_mode(tokio_postgres::config::SslMode::Require);
            }
            _ => {
                c.host(&self.host);
            }
        }
        c.port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name("pgpilot-writer")
            .connect_timeout(self.connect_timeout);
        c
    }
}

/// One acknowledged insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    /// The server that acknowledged it (`host(inet_server_addr())`, e.g. a pod IP).
    pub server: String,
    pub at: Instant,
}

/// One failed attempt (connect or insert), for the report.
#[derive(Clone, Debug)]
pub struct Failure {
    pub at: Instant,
    pub message: String,
}

/// A pause between two consecutive acknowledgements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub last_before: Ack,
    pub first_after: Ack,
}

impl Gap {
    pub fn duration(&self) -> Duration {
        self.first_after
            .at
            .saturating_duration_since(self.last_before.at)
    }
}

/// What a writer saw, in order.
#[derive(Clone, Debug)]
pub struct WriteLog {
    pub started: Instant,
    pub acks: Vec<Ack>,
    pub failures: Vec<Failure>,
}

impl WriteLog {
    /// The first change of server: the last acknowledgement by the first server and the
    /// first by another one. `None` while only one server acknowledged.
    pub fn failover(&self) -> Option<Gap> {
        let first = self.acks.first()?;
        let switch = self.acks.iter().position(|a| a.server != first.server)?;
        // `switch` > 0 because acks[0] is on the first server.
        let before = self.acks[..switch]
            .iter()
            .rev()
            .find(|a| a.server == first.server)?;
        Some(Gap {
            last_before: before.clone(),
            first_after: self.acks[switch].clone(),
        })
    }

    /// The longest pause between two consecutive acknowledgements at or after `from`
    /// (the acknowledgement just before `from` counts as the start of a pause that spans it).
    pub fn longest_gap(&self, from: Instant) -> Option<Gap> {
        let start = self
            .acks
            .iter()
            .rposition(|a| a.at < from)
            .unwrap_or_default();
        self.acks[start..]
            .windows(2)
            .map(|w| Gap {
                last_before: w[0].clone(),
                first_after: w[1].clone(),
            })
            .max_by_key(Gap::duration)
    }

    /// Acknowledged ids that are not in `present` (ids read back later), in order.
    pub fn missing(&self, present: &HashSet<i64>) -> Vec<i64> {
        self.acks
            .iter()
            .map(|a| a.id)
            .filter(|id| !present.contains(id))
            .collect()
    }

    /// Servers in the order they first acknowledged.
    pub fn servers(&self) -> Vec<String> {
        let mut seen = Vec::<String>::new();
        for a in &self.acks {
            if !seen.contains(&a.server) {
                seen.push(a.server.clone());
            }
        }
        seen
    }

    /// The highest acknowledged id.
    pub fn last_id(&self) -> Option<i64> {
        self.acks.last().map(|a| a.id)
    }
}

#[derive(Default)]
struct Shared {
    acks: Vec<Ack>,
    failures: Vec<Failure>,
}

/// A running writer; [`Writer::stop`] ends it.
pub struct Writer {
    started: Instant,
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts writing in a Tokio task. Connection errors are recorded, not returned: the
    /// writer keeps trying until stopped.
    pub fn start(config: WriterConfig) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(config, shared.clone(), stopped));
        Self {
            started: Instant::now(),
            shared,
            stop,
            task,
        }
    }

    /// The acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared
            .lock()
            .map(|s| s.acks.clone())
            .unwrap_or_default()
    }

    /// The last acknowledgement so far.
    pub fn last_ack(&self) -> Option<Ack> {
        self.shared.lock().ok().and_then(|s| s.acks.last().cloned())
    }

    /// Waits until `pred` holds for the acknowledgements so far, up to `timeout`.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Ack]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.shared.lock().map(|s| pred(&s.acks)).unwrap_or(false);
            if ok {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops writing (an insert in flight finishes or times out) and returns the log.
    pub async fn stop(self) -> WriteLog {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let shared = match self.shared.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        WriteLog {
            started: self.started,
            acks: shared.acks,
            failures: shared.failures,
        }
    }
}

async fn connect(config: &WriterConfig) -> Result<Client, String> {
    let failed = |e: tokio_postgres::Error| format!("connect: {}", causes(&e));
    let pg = config.pg_config();
    let client = match &config.tls {
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone());
            let (client, connection) = pg.connect(tls).await.map_err(failed)?;
            tokio::spawn(connection);
            client
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

/// An error with its causes (tokio-postgres's own message leaves them out: "error connecting
/// to server", "db error").
fn causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message = format!("{message}: {c}");
        cause = c.source();
    }
    message
}

fn record_failure(shared: &Mutex<Shared>, message: String) {
    if let Ok(mut s) = shared.lock() {
        s.failures.push(Failure {
            at: Instant::now(),
            message,
        });
    }
}

async fn run(config: WriterConfig, shared: Arc<Mutex<Shared>>, mut stopped: watch::Receiver<bool>) {
    let create = format!(
        "create table if not exists {} (id bigint primary key, written_at timestamptz not null default clock_timestamp())",
        config.table
    );
    let insert = format!(
        "insert into {} (id) values ($1) returning host(inet_server_addr())",
        config.table
    );
    let mut next_id: i64 = 1;
    let mut client: Option<Client> = None;
    while !*stopped.borrow() {
        if client.is_none() {
            let attempt = tokio::time::timeout(config.connect_timeout * 2, async {
                let c = connect(&config).await?;
                c.batch_execute(&create)
                    .await
                    .map_err(|e| format!("create table: {}", causes(&e)))?;
                Ok::<_, String>(c)
            })
            .await;
            match attempt {
                Ok(Ok(c)) => client = Some(c),
                Ok(Err(e)) => record_failure(&shared, e),
                Err(_) => record_failure(&shared, "connect: timed out".to_owned()),
            }
            if client.is_none() {
                pause(&mut stopped, Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = client.as_ref() else { continue };
        let id = next_id;
        next_id += 1;
        match tokio::time::timeout(config.statement_timeout, c.query_one(&insert, &[&id])).await {
            Ok(Ok(row)) => {
                let at = Instant::now();
                let server: Option<String> = row.try_get(0).ok().flatten();
                if let Ok(mut s) = shared.lock() {
                    s.acks.push(Ack {
                        id,
                        server: server.unwrap_or_else(|| "local".to_owned()),
                        at,
                    });
                }
            }
            Ok(Err(e)) => {
                record_failure(&shared, format!("insert: {}", causes(&e)));
                client = None;
            }
            Err(_) => {
                record_failure(&shared, "insert: timed out".to_owned());
                client = None;
            }
        }
        pause(&mut stopped, config.interval).await;
    }
}

/// Sleeps, waking early when stopped.
async fn pause(stopped: &mut watch::Receiver<bool>, d: Duration) {
    let _ = tokio::time::timeout(d, stopped.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(acks: &[(i64, &str, u64)]) -> WriteLog {
        let t0 = Instant::now();
        WriteLog {
            started: t0,
            acks: acks
                .iter()
                .map(|&(id, server, ms)| Ack {
                    id,
                    server: server.to_owned(),
                    at: t0 + Duration::from_millis(ms),
                })
                .collect(),
            failures: vec![],
        }
    }

    #[test]
    fn failover_gap_runs_from_the_last_ack_on_the_first_server_to_the_first_on_another() {
        let l = log(&[
            (1, "a", 0),
            (2, "a", 10),
            (3, "a", 20),
            (7, "b", 2520),
            (8, "b", 2530),
        ]);
        let gap = l.failover().unwrap();
        assert_eq!((gap.last_before.id, gap.first_after.id), (3, 7));
        assert_eq!(gap.duration(), Duration::from_millis(2500));
        assert_eq!(l.servers(), ["a", "b"]);
    }

    #[test]
    fn no_failover_while_one_server_acknowledges() {
        let l = log(&[(1, "a", 0), (2, "a", 3000)]);
        assert_eq!(l.failover(), None);
        assert_eq!(log(&[]).failover(), None);
    }

    #[test]
    fn a_restarted_primary_is_no_failover_but_its_pause_is_the_longest_gap() {
        let l = log(&[(1, "a", 0), (2, "a", 10), (3, "a", 4010), (4, "a", 4020)]);
        assert_eq!(l.failover(), None);
        let gap = l.longest_gap(l.started).unwrap();
        assert_eq!((gap.last_before.id, gap.first_after.id), (2, 3));
        assert_eq!(gap.duration(), Duration::from_millis(4000));
    }

    #[test]
    fn longest_gap_ignores_pauses_that_ended_before_the_event() {
        let l = log(&[(1, "a", 0), (2, "a", 5000), (3, "a", 5010), (4, "a", 6010)]);
        let from = l.started + Duration::from_millis(5005);
        let gap = l.longest_gap(from).unwrap();
        assert_eq!((gap.last_before.id, gap.first_after.id), (3, 4));
        // The ack just before the event starts a pause that spans it.
        let from = l.started + Duration::from_millis(4000);
        assert_eq!(l.longest_gap(from).unwrap().last_before.id, 1);
    }

    #[test]
    fn missing_lists_acknowledged_ids_not_read_back() {
        let l = log(&[(1, "a", 0), (2, "a", 10), (4, "b", 900), (5, "b", 910)]);
        let present: HashSet<i64> = [1, 3, 5].into();
        assert_eq!(l.missing(&present), [2, 4]);
        assert!(l.missing(&[1, 2, 4, 5].into()).is_empty());
        assert_eq!(l.last_id(), Some(5));
    }
}
