//! pgBackRest for one cluster: its stanza and repository path, the configuration file every
//! process that touches the repository reads (instances pushing and fetching WAL, the TLS
//! server backups go through, backup Jobs), the commands PostgreSQL runs, where the secrets
//! come from, the TLS material of the servers and their clients, and what an archiving
//! failure means for a user.
//!
//! Secrets never enter the file: the S3 keys and the cipher passphrase reach pgBackRest as
//! `PGBACKREST_*` environment variables from the user's Secrets (see [`secret_env`]).

pub mod info;
pub mod restore;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, SecretVolumeSource,
    Volume, VolumeMount,
};
use pgpilot_api::cluster::{BackupRepository, BackupSpec, RetentionType};
use pgpilot_api::common::UriStyle;
use thiserror::Error;

use crate::names::{Names, PGDATA, POSTGRES_PORT, SOCKET_DIR, SUPERUSER};

/// Port of the pgBackRest TLS server in instance pods.
pub const TLS_PORT: i32 = 8432;
/// Where the ConfigMap with `pgbackrest.conf` is mounted: pgBackRest's default location, so
/// no command needs `--config`.
pub const CONFIG_DIR: &str = "/etc/pgbackrest";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/pgbackrest-tls";
/// Where the CA bundle of the object store is mounted.
pub const REPO_CA_DIR: &str = "/etc/pgbackrest-repo-ca";
/// File name of the CA bundle in [`REPO_CA_DIR`].
pub const REPO_CA_FILE: &str = "ca.crt";
/// The asynchronous archiver's queue and status files, on the data volume so a restart does
/// not lose what was pushed or fetched ahead.
pub const SPOOL_DIR: &str = "/var/lib/postgresql/data/pgbackrest/spool";
/// Common name of the client certificate backup Jobs present to the TLS servers.
pub const CLIENT_CN: &str = "pgpilot-backup";
/// Keys of the TLS Secret.
pub const TLS_CA: &str = "ca.crt";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const TLS_CLIENT_CERT: &str = "client.crt";
pub const TLS_CLIENT_KEY: &str = "client.key";

/// Environment variables pgBackRest reads its secret options from.
pub const ENV_S3_KEY: &str = "PGBACKREST_REPO1_S3_KEY";
pub const ENV_S3_KEY_SECRET: &str = "PGBACKREST_REPO1_S3_KEY_SECRET";
pub const ENV_CIPHER_PASS: &str = "PGBACKREST_REPO1_CIPHER_PASS";

#[derive(Debug, Error)]
pub enum Error {
    /// A value that cannot go into the configuration file.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Generating a key or certificate failed.
    #[error("cannot issue the pgBackRest TLS certificates: {0}")]
    Tls(#[from] rcgen::Error),
}

/// The stanza of a cluster: `<namespace>-<cluster>`.
pub fn stanza(namespace: &str, cluster: &str) -> String {
    format!("{namespace}-{cluster}")
}

/// The repository path of a cluster: the spec's prefix, then `/<namespace>/<cluster>`.
pub fn repo_path(prefix: &str, namespace: &str, cluster: &str) -> String {
    format!("{}/{namespace}/{cluster}", prefix.trim_end_matches('/'))
}

/// PostgreSQL's `archive_command`: hand the segment to pgBackRest's asynchronous pusher.
pub fn archive_command(stanza: &str) -> String {
    format!("pgbackrest --stanza={stanza} archive-push \"%p\"")
}

/// PostgreSQL's `restore_command`: fetch a segment from the archive.
pub fn restore_command(stanza: &str) -> String {
    format!("pgbackrest --stanza={stanza} archive-get %f \"%p\"")
}

/// The asynchronous pusher's error files for a segment, then for everything: a message
/// pgBackRest wrote as `<code>\n<text>`, kept until the next attempt succeeds.
pub fn archive_error_files(stanza: &str, segment: &str) -> [String; 2] {
    let queue = format!("{SPOOL_DIR}/archive/{stanza}/out");
    [
        format!("{queue}/{segment}.error"),
        format!("{queue}/global.error"),
    ]
}

/// Environment variables pgBackRest reads its secrets from, taken from the user's Secrets:
/// the S3 keys, and the cipher passphrase of an encrypted repository.
pub fn secret_env(repository: &BackupRepository) -> Vec<EnvVar> {
    secret_env_named(
        repository,
        [ENV_S3_KEY, ENV_S3_KEY_SECRET, ENV_CIPHER_PASS],
        false,
    )
}

/// [`secret_env`] under other names (key id, secret key, passphrase); `optional` lets a pod
/// start without the Secret (one it needs only once, to restore).
pub fn secret_env_named(
    repository: &BackupRepository,
    [key_id, key_secret, cipher]: [&str; 3],
    optional: bool,
) -> Vec<EnvVar> {
    let s3 = &repository.s3;
    let from = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret = &s3.credentials.secret_name;
    let mut env = vec![
        from(key_id, secret, &s3.credentials.access_key_id_key),
        from(key_secret, secret, &s3.credentials.secret_access_key_key),
    ];
    if let Some(encryption) = &repository.encryption {
        let p = &encryption.passphrase;
        env.push(from(cipher, &p.name, &p.key));
    }
    env
}

/// The volumes pgBackRest reads in a pod (the file, the TLS Secret, the object store's CA
/// bundle when the spec names one) and their mounts.
pub struct PodVolumes {
    pub volumes: Vec<Volume>,
    pub config: VolumeMount,
    pub tls: VolumeMount,
    pub repo_ca: Option<VolumeMount>,
}

pub fn pod_volumes(names: &Names, backup: &BackupSpec) -> PodVolumes {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    let (config_volume, config) = config_volume(names);
    let mut volumes = vec![
        config_volume,
        // 0440: pgBackRest accepts a key its group may read only when root owns it, which
        // is how the kubelet writes Secret volumes (the group being the pod's fsGroup).
        Volume {
            name: "pgbackrest-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.pgbackrest_tls()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let repo_ca =
        ca_volume(&backup.repository, "pgbackrest-repo-ca", REPO_CA_DIR).map(|(volume, mount)| {
            volumes.push(volume);
            mount
        });
    PodVolumes {
        volumes,
        config,
        tls: mount("pgbackrest-tls", TLS_DIR),
        repo_ca,
    }
}

/// The ConfigMap with the cluster's pgBackRest files, mounted in [`CONFIG_DIR`].
pub fn config_volume(names: &Names) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "pgbackrest-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.pgbackrest_config(),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "pgbackrest-config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// The object store's CA bundle of `repository`, when it names one, as a volume `name`
/// mounted in `dir` (file [`REPO_CA_FILE`]). Optional: a pod that needs it only to restore
/// still starts once the Secret is gone.
pub fn ca_volume(
    repository: &BackupRepository,
    name: &str,
    dir: &str,
) -> Option<(Volume, VolumeMount)> {
    let ca = repository.s3.ca_bundle.as_ref()?;
    Some((
        Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone(),
                    path: REPO_CA_FILE.into(),
                    mode: None,
                }]),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: name.to_owned(),
            mount_path: dir.to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
    ))
}

/// `pgbackrest.conf` of a cluster, the same for its instances and its backup Jobs. The
/// instances archive from it and serve backups over TLS; a Job adds the instance it backs up
/// (`PGBACKREST_PG1_HOST`… in its environment) and is then the repository host.
pub fn config_file(backup: &BackupSpec, namespace: &str, cluster: &str) -> Result<String, Error> {
    let stanza = stanza(namespace, cluster);
    let mut global = repo_options(
        &backup.repository,
        &repo_path(&backup.repository.s3.path, namespace, cluster),
        REPO_CA_DIR,
    )?;
    let retention = backup.retention.clone().unwrap_or_default();
    global.push(("repo1-retention-full", retention.full.to_string()));
    global.push((
        "repo1-retention-full-type",
        match retention.full_type {
            RetentionType::Count => "count",
            RetentionType::Time => "time",
        }
        .into(),
    ));
    if let Some(diff) = retention.differential {
        global.push(("repo1-retention-diff", diff.to_string()));
    }
    global.extend(process_options());
    global.extend([
        // The TLS server of an instance: backup Jobs connect with a client certificate of
        // the cluster's CA, and may only reach this cluster's stanza.
        ("tls-server-address", "*".into()),
        ("tls-server-port", TLS_PORT.to_string()),
        ("tls-server-ca-file", format!("{TLS_DIR}/{TLS_CA}")),
        ("tls-server-cert-file", format!("{TLS_DIR}/{TLS_CERT}")),
        ("tls-server-key-file", format!("{TLS_DIR}/{TLS_KEY}")),
        ("tls-server-auth", format!("{CLIENT_CN}={stanza}")),
    ]);
    let mut out = String::new();
    write_section(&mut out, "global", &global)?;
    out.push('\n');
    write_section(&mut out, &stanza, &instance_options())?;
    Ok(out)
}

/// Where repository `repo1` is: the object store, the path, the CA bundle (mounted in
/// `ca_dir`), encryption. Secrets are not options here (see [`secret_env`]).
pub fn repo_options(
    repository: &BackupRepository,
    path: &str,
    ca_dir: &str,
) -> Result<Vec<(&'static str, String)>, Error> {
    let s3 = &repository.s3;
    let (host, port) = match s3.endpoint.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| Error::Invalid {
                field: "repository.s3.endpoint",
                message: format!("{port:?} is not a port number"),
            })?;
            (host, Some(port))
        }
        None => (s3.endpoint.as_str(), None),
    };
    let mut options: Vec<(&str, String)> = vec![
        ("repo1-type", "s3".into()),
        ("repo1-path", path.to_owned()),
        ("repo1-s3-bucket", s3.bucket.clone()),
        ("repo1-s3-endpoint", host.to_owned()),
        ("repo1-s3-region", s3.region.clone()),
        (
            "repo1-s3-uri-style",
            match s3.uri_style {
                UriStyle::Host => "host",
                UriStyle::Path => "path",
            }
            .into(),
        ),
        ("repo1-storage-verify-tls", yes_no(s3.verify_tls)),
    ];
    if let Some(port) = port {
        options.push(("repo1-storage-port", port.to_string()));
    }
    if s3.ca_bundle.is_some() {
        options.push(("repo1-storage-ca-file", format!("{ca_dir}/{REPO_CA_FILE}")));
    }
    if repository.encryption.is_some() {
        options.push(("repo1-cipher-type", "aes-256-cbc".into()));
    }
    Ok(options)
}

/// How pgBackRest runs in pgpilot's pods, whatever the repository.
pub fn process_options() -> Vec<(&'static str, String)> {
    vec![
        // PostgreSQL hands over a segment and goes on; a background process pushes (and,
        // for replicas and restores, fetches ahead) several at a time.
        ("archive-async", "y".into()),
        ("spool-path", SPOOL_DIR.into()),
        // Measured on a 1.1 GB database (docs/benchmarks.md, "Backups"): zst at level 3 is as
        // fast as lz4 and stores less than half as much (5 % of the database against 11 %);
        // gz takes twice as long; more processes than cores gain nothing.
        ("process-max", "2".into()),
        ("compress-type", "zst".into()),
        ("compress-level", "3".into()),
        // The root filesystem is read-only: no log files. Errors reach PostgreSQL's log (and
        // the async pusher's status files), the Jobs' output reaches their pods' logs.
        ("log-level-file", "off".into()),
        ("log-level-console", "info".into()),
        ("log-level-stderr", "off".into()),
        // A backup starts with an immediate checkpoint, not a spread one.
        ("start-fast", "y".into()),
    ]
}

/// The PostgreSQL instance of an instance pod, as a stanza section.
fn instance_options() -> Vec<(&'static str, String)> {
    vec![
        ("pg1-path", PGDATA.into()),
        ("pg1-socket-path", SOCKET_DIR.into()),
        ("pg1-port", POSTGRES_PORT.to_string()),
        ("pg1-user", SUPERUSER.into()),
    ]
}

/// The environment that makes a Job the repository host of a backup reading from `pod` as
/// pgBackRest's `pg<index>` (1 the primary, 2… standbys), reached over TLS with the client
/// certificate.
pub fn job_host_env(names: &Names, namespace: &str, index: usize, pod: &str) -> Vec<EnvVar> {
    let tls = |file: &str| format!("{TLS_DIR}/{file}");
    [
        ("HOST", names.pod_host(pod, namespace)),
        ("HOST_TYPE", "tls".into()),
        ("HOST_PORT", TLS_PORT.to_string()),
        ("HOST_CA_FILE", tls(TLS_CA)),
        ("HOST_CERT_FILE", tls(TLS_CLIENT_CERT)),
        ("HOST_KEY_FILE", tls(TLS_CLIENT_KEY)),
        ("PATH", PGDATA.into()),
        ("SOCKET_PATH", SOCKET_DIR.into()),
        ("PORT", POSTGRES_PORT.to_string()),
        ("USER", SUPERUSER.into()),
    ]
    .into_iter()
    .map(|(option, value)| EnvVar {
        name: format!("PGBACKREST_PG{index}_{option}"),
        value: Some(value),
        ..Default::default()
    })
    .collect()
}

fn yes_no(b: bool) -> String {
    if b { "y" } else { "n" }.into()
}

fn write_section(out: &mut String, name: &str, options: &[(&str, String)]) -> Result<(), Error> {
    let _ = writeln!(out, "[{name}]");
    for (key, value) in options {
        // One option per line: a line break (or a bracket at the start) in a value from the
        // spec would smuggle in options of its own.
        if value.chars().any(char::is_control) || value.trim() != value {
            return Err(Error::Invalid {
                field: "spec.backup",
                message: format!(
                    "the value of pgBackRest option {key} has a control character or surrounding spaces"
                ),
            });
        }
        let _ = writeln!(out, "{key}={value}");
    }
    Ok(())
}

/// Certificates for the TLS servers of a cluster's instances and for the clients allowed to
/// use them: a CA of its own (whose key is discarded once the two are signed), a server
/// certificate for every pod name behind the headless Service, a client certificate with
/// [`CLIENT_CN`]. Keys of the TLS Secret to their PEM text.
pub fn issue_tls(names: &Names, namespace: &str) -> Result<BTreeMap<String, String>, Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pgpilot");
        dn.push(DnType::CommonName, cn);
        dn
    };
    let validity = |p: &mut CertificateParams| {
        let now = std::time::SystemTime::now();
        p.not_before = (now - std::time::Duration::from_secs(3600)).into();
        p.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
    };

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn(&format!(
        "pgpilot pgBackRest CA {namespace}/{}",
        names.cluster
    ));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let pods = names.pods_service();
    let mut server = CertificateParams::new(vec![
        format!("*.{pods}.{namespace}.svc"),
        format!("*.{pods}.{namespace}.svc.cluster.local"),
    ])?;
    server.distinguished_name = dn(&format!("{}.{namespace}", names.cluster));
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    validity(&mut server);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = dn(CLIENT_CN);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.use_authority_key_identifier_extension = true;
    validity(&mut client);
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    Ok(BTreeMap::from([
        (TLS_CA.to_owned(), ca_cert.pem()),
        (TLS_CERT.to_owned(), server_cert.pem()),
        (TLS_KEY.to_owned(), server_key.serialize_pem()),
        (TLS_CLIENT_CERT.to_owned(), client_cert.pem()),
        (TLS_CLIENT_KEY.to_owned(), client_key.serialize_pem()),
    ]))
}

/// Why WAL archiving fails, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFailure {
    /// A condition reason.
    pub reason: &'static str,
    /// What happened and what to check.
    pub message: String,
}

/// The error in pgBackRest's console output: its `ERROR: [code]: …` line and the indented
/// lines continuing it, without the timestamp; else the output's last line.
pub fn error_in(output: &str) -> String {
    let mut lines = output.lines().skip_while(|l| !l.contains(" ERROR: ["));
    match lines.next() {
        Some(first) => {
            let first = first.split_once(" ERROR: ").map_or(first, |(_, e)| e);
            std::iter::once(first.trim())
                .chain(
                    lines
                        .take_while(|l| l.starts_with(char::is_whitespace))
                        .map(str::trim),
                )
                .collect::<Vec<_>>()
                .join("\n")
        }
        None => output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Reads pgBackRest's error (`<code>\n<message>` from the async pusher's status file, its
/// console output, or a message alone) and says what it means.
pub fn archive_failure(error: &str, repository: &BackupRepository) -> ArchiveFailure {
    let s3 = &repository.s3;
    let extracted;
    let text = match error.split_once('\n') {
        Some((code, rest)) if code.trim().parse::<i32>().is_ok() => rest,
        _ if error.contains(" ERROR: [") => {
            extracted = error_in(error);
            &extracted
        }
        _ => error,
    };
    let detail: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = truncate(&detail, 400);
    let has = |needle: &str| text.contains(needle);
    let (reason, what) = if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("[403]")
        || has("403 Forbidden")
    {
        (
            "AccessDenied",
            format!(
                "the object store refused the credentials from Secret {} (keys {} and {}): check the key id and secret, and that they may write to bucket {}",
                s3.credentials.secret_name,
                s3.credentials.access_key_id_key,
                s3.credentials.secret_access_key_key,
                s3.bucket
            ),
        )
    } else if has("NoSuchBucket") {
        (
            "BucketNotFound",
            format!(
                "bucket {} does not exist at {}: create it",
                s3.bucket, s3.endpoint
            ),
        )
    } else if has("certificate") || has("TLS") || has("SSL") {
        (
            "TLSFailure",
            format!(
                "the TLS connection to {} failed: check that its certificate is signed by {} and names that host",
                s3.endpoint,
                match &s3.ca_bundle {
                    Some(ca) => format!("the CA in Secret {} (key {})", ca.name, ca.key),
                    None =>
                        "a public CA (set spec.backup.repository.s3.caBundle for a private one)"
                            .into(),
                }
            ),
        )
    } else if has("unable to connect") || has("unable to get address") || has("timeout") {
        (
            "EndpointUnreachable",
            format!(
                "cannot reach the object store at {}: check the endpoint and that the pods may connect to it",
                s3.endpoint
            ),
        )
    } else if has("stanza-create been performed") || (has("stanza") && has("does not exist")) {
        (
            "StanzaMissing",
            "the repository has no stanza for this cluster yet: the backup controller creates it"
                .into(),
        )
    } else {
        ("ArchiveFailed", "pgBackRest could not archive WAL".into())
    };
    ArchiveFailure {
        reason,
        message: format!("{what}. pgBackRest said: {detail}"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(yaml: &str) -> BackupSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const MINIO: &str = "repository:\n  s3:\n    endpoint: minio.storage.svc:9000\n    bucket: backups\n    credentials: {secretName: s3}\n    caBundle: {name: minio-ca, key: ca.crt}\n";

    fn options(conf: &str) -> BTreeMap<String, String> {
        conf.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_minio_repository_over_tls_with_a_private_ca() {
        let conf = config_file(&backup(MINIO), "prod", "db").unwrap();
        assert!(conf.starts_with("[global]\n"));
        assert!(conf.contains("\n[prod-db]\npg1-path=/var/lib/postgresql/data/pgdata\n"));
        let o = options(&conf);
        assert_eq!(o["repo1-type"], "s3");
        assert_eq!(o["repo1-path"], "/pgbackrest/prod/db");
        assert_eq!(o["repo1-s3-endpoint"], "minio.storage.svc");
        assert_eq!(o["repo1-storage-port"], "9000");
        assert_eq!(o["repo1-s3-uri-style"], "path");
        assert_eq!(o["repo1-s3-region"], "us-east-1");
        assert_eq!(o["repo1-storage-verify-tls"], "y");
        assert_eq!(o["repo1-storage-ca-file"], "/etc/pgbackrest-repo-ca/ca.crt");
        assert_eq!(o["repo1-retention-full"], "2");
        assert_eq!(o["repo1-retention-full-type"], "count");
        assert_eq!(o["archive-async"], "y");
        assert_eq!(o["tls-server-auth"], "pgpilot-backup=prod-db");
        assert!(!o.contains_key("repo1-cipher-type"));
        assert!(!o.contains_key("repo1-retention-diff"));
    }

    #[test]
    fn an_aws_bucket_with_encryption_and_time_based_retention() {
        let b = backup(
            "repository:\n  s3:\n    endpoint: s3.eu-west-1.amazonaws.com\n    bucket: acme-db\n    region: eu-west-1\n    uriStyle: host\n    path: /pg/\n    credentials: {secretName: aws}\n  encryption: {passphrase: {name: repo-key, key: passphrase}}\nretention: {full: 14, fullType: Time, differential: 3}\n",
        );
        let o = options(&config_file(&b, "shop", "orders").unwrap());
        assert_eq!(o["repo1-s3-endpoint"], "s3.eu-west-1.amazonaws.com");
        assert!(!o.contains_key("repo1-storage-port"));
        assert!(!o.contains_key("repo1-storage-ca-file"));
        assert_eq!(o["repo1-path"], "/pg/shop/orders");
        assert_eq!(o["repo1-s3-uri-style"], "host");
        assert_eq!(o["repo1-cipher-type"], "aes-256-cbc");
        assert_eq!(
            (
                o["repo1-retention-full"].as_str(),
                o["repo1-retention-full-type"].as_str(),
                o["repo1-retention-diff"].as_str()
            ),
            ("14", "time", "3")
        );
        let env = secret_env(&b.repository);
        let from = |e: &EnvVar| {
            let r = e.value_from.clone().unwrap().secret_key_ref.unwrap();
            format!("{}<-{}/{}", e.name, r.name, r.key)
        };
        assert_eq!(
            env.iter().map(from).collect::<Vec<_>>(),
            [
                "PGBACKREST_REPO1_S3_KEY<-aws/AWS_ACCESS_KEY_ID",
                "PGBACKREST_REPO1_S3_KEY_SECRET<-aws/AWS_SECRET_ACCESS_KEY",
                "PGBACKREST_REPO1_CIPHER_PASS<-repo-key/passphrase"
            ]
        );
    }

    #[test]
    fn secrets_never_enter_the_file() {
        let conf = config_file(&backup(MINIO), "prod", "db").unwrap();
        assert!(!conf.contains("key=") && !conf.contains("cipher-pass"));
    }

    #[test]
    fn a_value_with_a_line_break_is_refused() {
        let b = backup(&MINIO.replace("bucket: backups", "bucket: \"backups\\n[x]\""));
        let err = config_file(&b, "prod", "db").unwrap_err();
        assert!(err.to_string().contains("repo1-s3-bucket"), "{err}");
        let b = backup(&MINIO.replace("minio.storage.svc:9000", "minio:http"));
        assert!(config_file(&b, "prod", "db").is_err());
    }

    proptest::proptest! {
        // The repository's place comes from users: whatever it holds, pgbackrest.conf is
        // refused or has exactly two sections, one option per line, and the user's values
        // read back as given (none can add an option or a section of its own).
        #[test]
        fn pgbackrest_conf_reads_back_as_built(
            bucket in "\\PC{0,20}|[ \\n\\r\\t\\[\\]=a-z]{0,12}",
            region in "\\PC{0,12}",
            path in "(/[a-z0-9=\\[\\]. -]{0,8}){0,3}",
            endpoint in "[a-z.]{1,12}(:[0-9a-z]{0,6})?",
        ) {
            let mut b = backup(MINIO);
            b.repository.s3.bucket = bucket.clone();
            b.repository.s3.region = region.clone();
            b.repository.s3.path = path;
            b.repository.s3.endpoint = endpoint;
            let Ok(conf) = config_file(&b, "prod", "db") else { return Ok(()) };
            // The same spec with plain values: the same lines, keys and sections.
            b.repository.s3.bucket = "b".into();
            b.repository.s3.region = "r".into();
            let plain = config_file(&b, "prod", "db").unwrap();
            let shape = |c: &str| -> Vec<String> {
                c.lines().map(|l| l.split_once('=').map_or(l, |(k, _)| k).to_owned()).collect()
            };
            proptest::prop_assert_eq!(shape(&conf), shape(&plain));
            let o = options(&conf);
            proptest::prop_assert_eq!(&o["repo1-s3-bucket"], &bucket);
            proptest::prop_assert_eq!(&o["repo1-s3-region"], &region);
        }
    }

    #[test]
    fn postgresql_hands_segments_to_pgbackrest() {
        assert_eq!(
            archive_command("prod-db"),
            "pgbackrest --stanza=prod-db archive-push \"%p\""
        );
        assert_eq!(
            restore_command("prod-db"),
            "pgbackrest --stanza=prod-db archive-get %f \"%p\""
        );
        assert_eq!(
            archive_error_files("prod-db", "000000010000000000000003"),
            [
                "/var/lib/postgresql/data/pgbackrest/spool/archive/prod-db/out/000000010000000000000003.error",
                "/var/lib/postgresql/data/pgbackrest/spool/archive/prod-db/out/global.error"
            ]
        );
    }

    #[test]
    fn a_job_reaches_the_instance_over_tls() {
        let env: BTreeMap<_, _> = job_host_env(&Names::new("db"), "prod", 2, "db-1")
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(env["PGBACKREST_PG2_HOST"], "db-1.db-pods.prod.svc");
        assert_eq!(env["PGBACKREST_PG2_HOST_TYPE"], "tls");
        assert_eq!(
            env["PGBACKREST_PG2_HOST_CERT_FILE"],
            "/etc/pgbackrest-tls/client.crt"
        );
        assert_eq!(
            env["PGBACKREST_PG2_PATH"],
            "/var/lib/postgresql/data/pgdata"
        );
    }

    #[test]
    fn pods_mount_the_file_the_tls_secret_and_the_stores_ca() {
        let v = pod_volumes(&Names::new("db"), &backup(MINIO));
        let names: Vec<_> = v.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["pgbackrest-config", "pgbackrest-tls", "pgbackrest-repo-ca"]
        );
        let ca = v.volumes[2].secret.clone().unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("minio-ca"));
        assert_eq!(ca.items.unwrap()[0].path, "ca.crt");
        assert_eq!(v.repo_ca.unwrap().mount_path, "/etc/pgbackrest-repo-ca");
        assert_eq!(
            v.volumes[1].secret.clone().unwrap().default_mode,
            Some(0o440)
        );
        let without_ca = MINIO.replace("    caBundle: {name: minio-ca, key: ca.crt}\n", "");
        assert!(
            pod_volumes(&Names::new("db"), &backup(&without_ca))
                .repo_ca
                .is_none()
        );
    }

    #[test]
    fn the_tls_secret_holds_a_ca_a_server_and_a_client_certificate() {
        let tls = issue_tls(&Names::new("db"), "prod").unwrap();
        assert_eq!(
            tls.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ca.crt", "client.crt", "client.key", "tls.crt", "tls.key"]
        );
        for key in ["ca.crt", "tls.crt", "client.crt"] {
            assert!(tls[key].starts_with("-----BEGIN CERTIFICATE-----"), "{key}");
        }
        assert!(tls["tls.key"].starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(tls["tls.key"], tls["client.key"]);
    }

    // Messages as pgBackRest 2.55 wrote them into the async pusher's status files.
    #[test]
    fn the_error_is_found_in_the_console_output() {
        let output = "2026-12-05 21:48:10.557 P00   INFO: stanza-create command begin 2.55.1: --exec-id=7-f4460fe3 --log-level-console=info\n2026-12-05 21:48:42.232 P00  ERROR: [103]: unable to find a valid repository:\n                                    repo1: [FileMissingError] unable to load info file\n                                    HINT: has a stanza-create been performed?\n2026-12-05 21:48:42.233 P00   INFO: stanza-create command end: aborted with exception [103]\n";
        assert_eq!(
            error_in(output),
            "[103]: unable to find a valid repository:\nrepo1: [FileMissingError] unable to load info file\nHINT: has a stanza-create been performed?"
        );
        assert_eq!(error_in("just this\n"), "just this");
        let f = archive_failure(output, &backup(MINIO).repository);
        assert_eq!(f.reason, "StanzaMissing");
        assert!(!f.message.contains("command begin"), "{}", f.message);
    }

    #[test]
    fn failures_are_explained() {
        let b = backup(MINIO);
        let cases = [
            (
                "104\nraised from local-1 shim process: HTTP request failed with 403 (Forbidden):\n*** Path/Query ***:\nPUT /backups/pgbackrest/prod/db/archive/prod-db/17-1/0000000100000000/000000010000000000000003-1b5d.lz4\n*** Response Content ***:\n<Error><Code>InvalidAccessKeyId</Code><Message>The Access Key Id you provided does not exist in our records.</Message></Error>",
                "AccessDenied",
                "Secret s3",
            ),
            (
                "39\nraised from local-1 shim process: unable to connect to 'minio.storage.svc:9000 (10.0.0.9)': [111] Connection refused",
                "EndpointUnreachable",
                "minio.storage.svc:9000",
            ),
            (
                "95\nunable to verify certificate presented by 'minio.storage.svc:9000 (10.0.0.9)': [20] unable to get local issuer certificate",
                "TLSFailure",
                "Secret minio-ca",
            ),
            (
                "104\nHTTP request failed with 404 (Not Found): <Code>NoSuchBucket</Code>",
                "BucketNotFound",
                "bucket backups",
            ),
            (
                "55\nunable to load info file '/pgbackrest/prod/db/archive/prod-db/archive.info' or '/pgbackrest/prod/db/archive/prod-db/archive.info.copy':\nFileMissingError: ...\nHINT: is archive_command configured correctly?\nHINT: has a stanza-create been performed?\nHINT: use --no-archive-check to disable archive checks during backup if you have an alternate archiving scheme.",
                "StanzaMissing",
                "no stanza",
            ),
            (
                "25\nWAL file '000000010000000000000003' already exists in the repo1 archive with a different checksum",
                "ArchiveFailed",
                "already exists",
            ),
        ];
        for (error, reason, mentions) in cases {
            let f = archive_failure(error, &b.repository);
            assert_eq!(f.reason, reason, "{error}");
            assert!(f.message.contains(mentions), "{}", f.message);
            assert!(!f.message.contains('\n'));
        }
    }
}
