//! TLS from the cluster's own CA: clients verify the servers (`verify-full`) with the published
//! CA, plain connections are refused when TLS is required, replication runs over TLS, and a
//! new server certificate reaches every instance by a reload, under a writer, without a
//! failover.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use pgpilot_testkit::writer::{Writer, WriterTls};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::harness::{
    ClusterYaml, Credentials, Env, PG_PORT, condition_is, connect, eventually, lost_writes,
    secret_value, timeline,
};

const CREATE: Duration = Duration::from_secs(300);

/// The server certificates (DER) a client accepted, in order.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// Checks like rustls' own verifier (CA and name) and remembers every certificate it accepted.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(end_entity.to_vec());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS client that trusts only `ca` and records the server certificates it accepted.
fn tls_client(ca: &str) -> Result<(rustls::ClientConfig, Seen)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recording {
            inner,
            seen: seen.clone(),
        }))
        .with_no_client_auth();
    Ok((config, seen))
}

/// A connection to `ip` that must present a certificate for `name`.
async fn connect_tls(
    ip: &str,
    name: &str,
    creds: &Credentials,
    tls: &rustls::ClientConfig,
) -> Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(name)
        .hostaddr(ip.parse()?)
        .port(PG_PORT)
        .user(&creds.username)
        .password(&creds.password)
        .dbname(&creds.dbname)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()))
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn published_ca(env: &Env) -> Result<String> {
    let cm = env.api::<ConfigMap>().get("db-ca-cert").await?;
    cm.data
        .and_then(|d| d.get("ca.crt").cloned())
        .context("no ca.crt in ConfigMap db-ca-cert")
}

fn der(pem: &str) -> Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
}

/// `tls: {mode: Required}`: verify-full through `-rw` with the published CA (rustls, and
/// libpq's psql in a pod), another name refused, a plain connection refused, replication
/// over TLS, pgpilot's own SQL (roles and databases) over TLS, the credential Secret
/// carrying the CA and asking for TLS, and Patroni's API refusing an unauthenticated
/// switchover (checked against the CA by name from another pod).
#[tokio::test]
async fn required_tls_verifies_the_servers_and_refuses_plain_connections() {
    let mut env = Env::start("tls-required").await;
    let result = required(&mut env).await;
    env.finish(result).await;
}

async fn required(env: &mut Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .spec("tls: {mode: Required}")
            .spec("roles: [{name: app}]")
            .spec("databases: [{name: app, owner: app}]")
            .yaml(),
    )?;
    env.wait_ready("db", 2, CREATE).await?;
    // pgpilot creates roles and databases over TLS, or not at all.
    env.wait_cluster("db", "RolesAndDatabasesReady=True", CREATE, |pg| {
        condition_is(pg, "RolesAndDatabasesReady", "True")
    })
    .await?;

    let ca = published_ca(env).await?;
    let app_secret = env.secret("db-app-credentials").await?;
    ensure!(
        secret_value(&app_secret, "ca.crt")? == ca,
        "the credential Secret carries the published CA"
    );
    let uri = secret_value(&app_secret, "uri")?;
    ensure!(
        uri.ends_with("/app?sslmode=require"),
        "uri asks for TLS: {uri}"
    );

    let app = env.credentials("db-app-credentials").await?;
    let rw = env.service_ip("db-rw").await?;
    let name = format!("db-rw.{}.svc", env.ns);
    let (tls, _) = tls_client(&ca)?;
    let client = eventually("a verify-full connection to db-rw", CREATE, || async {
        connect_tls(&rw, &name, &app, &tls)
            .await
            .map_err(|e| format!("{e:#}"))
    })
    .await?;
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0);
    ensure!(ssl, "the session is encrypted");

    match connect_tls(&rw, &format!("other.{}.svc", env.ns), &app, &tls).await {
        Ok(_) => bail!("a certificate for another name was accepted"),
        Err(e) => ensure!(
            format!("{e:#}").contains("certificate"),
            "refused for another reason: {e:#}"
        ),
    }
    match connect(&env.pg_config("db-rw", &app).await?).await {
        Ok(_) => bail!("a connection without TLS was let in"),
        Err(e) => ensure!(
            format!("{e:#}").contains("no encryption"),
            "refused for another reason: {e:#}"
        ),
    }

    // libpq itself, in an instance pod, with the CA mounted there.
    let psql = env.kubectl(&[
        "exec",
        "db-0",
        "-c",
        "postgres",
        "--",
        "env",
        &format!("PGPASSWORD={}", app.password),
        "psql",
        &format!(
            "host={name} user=app dbname=app sslmode=verify-full sslrootcert=/etc/patroni/ca.crt"
        ),
        "-Atc",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ])?;
    ensure!(psql.trim() == "t", "psql verify-full: {psql}");

    // Patroni's REST API: HTTPS with the cluster's certificate, and an unsafe call without
    // the API's credentials is refused, from another pod of the cluster itself.
    let ns = &env.ns;
    let call = |auth: &str| {
        format!(
            "import ssl, urllib.request, urllib.error\n\
             ctx = ssl.create_default_context(cafile='/etc/patroni/ca.crt')\n\
             r = urllib.request.Request('https://db-0.db-pods.{ns}.svc:8008/switchover', \
             data=b'{{\"leader\": \"db-0\"}}', method='POST', headers={{{auth}}})\n\
             try:\n    print(urllib.request.urlopen(r, context=ctx, timeout=10).status)\n\
             except urllib.error.HTTPError as e:\n    print(e.code)\n"
        )
    };
    let refused = env.kubectl(&[
        "exec",
        "db-1",
        "-c",
        "postgres",
        "--",
        "python3",
        "-c",
        &call(""),
    ])?;
    ensure!(
        refused.trim() == "401",
        "an unauthenticated POST /switchover answered {refused}"
    );
    let wrong = env.kubectl(&[
        "exec",
        "db-1",
        "-c",
        "postgres",
        "--",
        "python3",
        "-c",
        &call("'Authorization': 'Basic cGdwaWxvdDp3cm9uZw=='"),
    ])?;
    ensure!(
        wrong.trim() == "401",
        "a POST /switchover with a wrong password answered {wrong}"
    );

    // Replication: the standby's WAL receiver connects over TLS too.
    let su = env.superuser("db").await?;
    let primary = connect_tls(&rw, &name, &su, &tls).await?;
    eventually(
        "the standby streaming over TLS",
        Duration::from_secs(60),
        || async {
            let rows = primary
                .query(
                    "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
                     WHERE r.state = 'streaming'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            let ssl: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
            (ssl == [true]).then_some(()).ok_or(format!("{ssl:?}"))
        },
    )
    .await?;
    Ok(())
}

/// A new server certificate (the Secret deleted: pgpilot issues another) reaches both
/// instances by a reload while a writer inserts over TLS: no write lost, no failover, and new
/// connections get the new certificate.
#[tokio::test]
async fn a_new_server_certificate_is_served_without_a_restart_or_a_lost_write() {
    let mut env = Env::start("tls-renew").await;
    let result = renewal(&mut env).await;
    env.finish(result).await;
}

async fn renewal(env: &mut Env) -> Result<()> {
    env.apply(&ClusterYaml::new("db").instances(2).yaml())?;
    let pg = env.wait_ready("db", 2, CREATE).await?;
    let before_timeline = timeline(&pg);
    let before_primary = pg.status.as_ref().and_then(|s| s.current_primary.clone());
    let ca = published_ca(env).await?;
    let old = secret_value(&env.secret("db-tls").await?, "tls.crt")?;
    let (tls, seen) = tls_client(&ca)?;

    let mut config = env.rw_writer("db").await?;
    config.interval = Duration::from_millis(50);
    config.tls = Some(WriterTls {
        server_name: format!("db-rw.{}.svc", env.ns),
        config: Arc::new(tls.clone()),
    });
    let writer = Writer::start(config);
    if !writer
        .wait_until(Duration::from_secs(60), |acks| acks.len() >= 20)
        .await
    {
        let log = writer.stop().await;
        bail!("the writer never got going over TLS: {:?}", log.failures);
    }
    let old_der = der(&old)?;
    ensure!(
        seen.lock()
            .map(|s| s.last() == Some(&old_der))
            .unwrap_or(false),
        "the writer was served the current certificate"
    );

    env.kubectl(&["delete", "secret", "db-tls"])?;
    let new = eventually(
        "a new server certificate",
        Duration::from_secs(60),
        || async {
            let s = env
                .api::<Secret>()
                .get("db-tls")
                .await
                .map_err(|e| e.to_string())?;
            let cert = secret_value(&s, "tls.crt").map_err(|e| e.to_string())?;
            (cert != old)
                .then_some(cert)
                .ok_or("the old one".to_owned())
        },
    )
    .await?;
    let su = env.superuser("db").await?;
    let rw = env.service_ip("db-rw").await?;
    let name = format!("db-rw.{}.svc", env.ns);
    served_everywhere(env, &tls, &seen, &su, der(&new)?).await?;
    let log = writer.stop().await;
    let client = connect_tls(&rw, &name, &su, &tls).await?;
    let lost = lost_writes(&client, &log).await?;
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let pg = env.cluster("db").await?;
    ensure!(
        pg.status.as_ref().and_then(|s| s.current_primary.clone()) == before_primary
            && timeline(&pg) == before_timeline,
        "a failover happened"
    );
    no_restarts(env).await?;
    Ok(())
}

/// A CA of the user's and server certificates it signs, made with openssl as an outside PKI
/// would (cert-manager's CA issuer writes the same three keys).
struct UsersPki {
    dir: std::path::PathBuf,
    ca: String,
}

impl UsersPki {
    fn new(ns: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("pgpilot-{ns}-pki"));
        std::fs::create_dir_all(&dir)?;
        let mut pki = UsersPki {
            dir,
            ca: String::new(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=users CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        pki.ca = std::fs::read_to_string(pki.dir.join("ca.crt"))?;
        Ok(pki)
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .context("running openssl")?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A new key and certificate for cluster `db` of `ns`, with the DNS names
    /// docs/security.md asks for: (tls.crt, tls.key).
    fn server(&self, ns: &str) -> Result<(String, String)> {
        let mut names = Vec::new();
        for svc in ["db-rw", "db-ro", "db-r"] {
            for suffix in [
                "",
                &format!(".{ns}"),
                &format!(".{ns}.svc"),
                &format!(".{ns}.svc.cluster.local"),
            ] {
                names.push(format!("DNS:{svc}{suffix}"));
            }
        }
        names.push(format!("DNS:*.db-pods.{ns}.svc"));
        names.push(format!("DNS:*.db-pods.{ns}.svc.cluster.local"));
        std::fs::write(
            self.dir.join("server.ext"),
            format!(
                "subjectAltName={}\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n\
                 authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n",
                names.join(",")
            ),
        )?;
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=db",
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-out",
            "tls.crt",
            "-extfile",
            "server.ext",
        ])?;
        Ok((
            std::fs::read_to_string(self.dir.join("tls.crt"))?,
            std::fs::read_to_string(self.dir.join("tls.key"))?,
        ))
    }

    /// Writes (or replaces) the Secret `name` as cert-manager would, from the last
    /// [`UsersPki::server`].
    fn secret(&self, env: &Env, name: &str) -> Result<()> {
        let file = |key: &str| format!("--from-file={key}={}", self.dir.join(key).display());
        let yaml = env.kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            "--type=kubernetes.io/tls",
            &file("tls.crt"),
            &file("tls.key"),
            &file("ca.crt"),
            "--dry-run=client",
            "-o",
            "yaml",
        ])?;
        env.apply(&yaml)
    }
}

impl Drop for UsersPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `spec.tls.certificate`: a certificate from the user's own CA is served by every instance
/// and its CA published; pgpilot verifies the servers with it (the cluster gets Ready: roles,
/// Patroni's API over HTTPS); a renewal written into the user's Secret reaches both instances
/// by a reload, without a restart.
#[tokio::test]
async fn a_certificate_from_the_users_own_ca_is_served_and_its_renewal_followed() {
    let mut env = Env::start("tls-own").await;
    let result = own_certificate(&mut env).await;
    env.finish(result).await;
}

async fn own_certificate(env: &mut Env) -> Result<()> {
    let pki = UsersPki::new(&env.ns)?;
    let (cert, _) = pki.server(&env.ns)?;
    // The cluster first: it waits, saying why, until the Secret is there.
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .spec("tls: {certificate: {secretName: db-server-cert}}")
            .spec("roles: [{name: app}]")
            .yaml(),
    )?;
    env.wait_cluster(
        "db",
        "waiting for the Secret",
        Duration::from_secs(60),
        |pg| {
            condition_is(pg, "Ready", "False")?;
            let ready = pg
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            ready
                .contains("Secret db-server-cert does not exist")
                .then_some(())
                .ok_or(ready)
        },
    )
    .await?;
    pki.secret(env, "db-server-cert")?;
    env.wait_ready("db", 2, CREATE).await?;

    ensure!(
        published_ca(env).await? == pki.ca,
        "ConfigMap db-ca-cert holds the user's CA"
    );
    let app = env.secret("db-app-credentials").await?;
    ensure!(
        secret_value(&app, "ca.crt")? == pki.ca,
        "the credential Secret carries the user's CA"
    );

    let (tls, seen) = tls_client(&pki.ca)?;
    let su = env.superuser("db").await?;
    served_everywhere(env, &tls, &seen, &su, der(&cert)?).await?;
    let rw = env.service_ip("db-rw").await?;
    connect_tls(&rw, &format!("db-rw.{}.svc", env.ns), &su, &tls)
        .await
        .context("verify-full through -rw with the user's CA")?;

    // Renewal, as cert-manager does it: a new key and certificate in the same Secret.
    let (renewed, _) = pki.server(&env.ns)?;
    ensure!(renewed != cert, "openssl made a new certificate");
    pki.secret(env, "db-server-cert")?;
    served_everywhere(env, &tls, &seen, &su, der(&renewed)?).await?;
    no_restarts(env).await?;
    Ok(())
}

/// Every instance serves the certificate `want` (DER), checked by name with `tls`.
async fn served_everywhere(
    env: &Env,
    tls: &rustls::ClientConfig,
    seen: &Seen,
    su: &Credentials,
    want: Vec<u8>,
) -> Result<()> {
    for pod in env.pods("db").await? {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("a pod IP")?;
        let name = format!(
            "{}.db-pods.{}.svc",
            pod.metadata.name.clone().unwrap_or_default(),
            env.ns
        );
        // The kubelet updates the mounted files within a minute or so; the reload follows.
        eventually(
            &format!("{name} serving the expected certificate"),
            Duration::from_secs(180),
            || async {
                drop(
                    connect_tls(&ip, &name, su, tls)
                        .await
                        .map_err(|e| format!("{e:#}"))?,
                );
                let last = seen.lock().map_err(|e| e.to_string())?.last().cloned();
                (last.as_ref() == Some(&want))
                    .then_some(())
                    .ok_or("another certificate".to_owned())
            },
        )
        .await?;
    }
    Ok(())
}

/// No container of the cluster's pods restarted.
async fn no_restarts(env: &Env) -> Result<()> {
    for pod in env.pods("db").await? {
        let restarts: i32 = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c.iter().map(|c| c.restart_count).sum())
            .unwrap_or_default();
        ensure!(restarts == 0, "{:?} restarted", pod.metadata.name);
    }
    Ok(())
}
