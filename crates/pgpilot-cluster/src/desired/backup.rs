//! What `spec.backup` adds to the instances: pgbackrest.conf, the TLS material of the
//! pgBackRest servers, and (in statefulset.rs and config.rs) the server container, the
//! secrets' environment and PostgreSQL's archive and restore commands. The backup controller
//! creates the stanza and takes the backups; the instances archive on their own.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use pgpilot_api::cluster::BackupSpec;
use pgpilot_postgres::pgbackrest;
use pgpilot_postgres::pgbackrest::restore::{self, Source};
use serde_json::{Value, json};

use super::config::{DATA_MOUNT, SOCKET_DIR};
use super::{Ctx, typed};
use crate::error::Error;

impl Ctx<'_> {
    /// The cluster's `spec.backup`, if it has one.
    pub fn backup(&self) -> Option<&BackupSpec> {
        self.cluster.spec.backup.as_ref()
    }

    /// Where `spec.bootstrap.restore` restores from, if the cluster is created that way.
    pub fn restore_source(&self) -> Option<Source<'_>> {
        let restore = self.cluster.spec.bootstrap.as_ref()?.restore.as_ref()?;
        Some(Source::new(restore, &self.namespace))
    }

    /// The cluster's pgBackRest stanza.
    pub fn stanza(&self) -> String {
        pgbackrest::stanza(&self.namespace, &self.names.cluster)
    }
}

/// ConfigMap `<cluster>-pgbackrest`: pgbackrest.conf with `spec.backup`, the restore
/// source's restore.conf with `spec.bootstrap.restore`.
pub(super) fn config_map(ctx: &Ctx<'_>) -> Result<Option<ConfigMap>, Error> {
    let mut data = serde_json::Map::new();
    if let Some(backup) = ctx.backup() {
        let conf = pgbackrest::config_file(backup, &ctx.namespace, &ctx.names.cluster)?;
        data.insert("pgbackrest.conf".into(), conf.into());
    }
    if let Some(source) = ctx.restore_source() {
        data.insert(restore::CONFIG_KEY.into(), source.config_file()?.into());
    }
    if data.is_empty() {
        return Ok(None);
    }
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": ctx.meta(&ctx.names.pgbackrest_config()),
            "data": data,
        }),
    )
    .map(Some)
}

/// Secret `<cluster>-pgbackrest-tls`: issued once and kept, like the passwords (a new CA
/// would lock out every pod still holding the old one until it restarts).
pub(super) fn tls_secret(
    ctx: &Ctx<'_>,
    existing: &BTreeMap<String, Secret>,
) -> Result<Option<Secret>, Error> {
    if ctx.backup().is_none() {
        return Ok(None);
    }
    let name = ctx.names.pgbackrest_tls();
    let keys = [
        pgbackrest::TLS_CA,
        pgbackrest::TLS_CERT,
        pgbackrest::TLS_KEY,
        pgbackrest::TLS_CLIENT_CERT,
        pgbackrest::TLS_CLIENT_KEY,
    ];
    let kept = existing.get(&name).and_then(|s| {
        let data = s.data.as_ref()?;
        keys.iter()
            .map(|k| {
                let v = String::from_utf8(data.get(*k)?.0.clone()).ok()?;
                Some(((*k).to_owned(), v))
            })
            .collect::<Option<BTreeMap<_, _>>>()
    });
    let data = match kept {
        Some(data) => data,
        None => pgbackrest::issue_tls(&ctx.names, &ctx.namespace)?,
    };
    let mut secret: Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": ctx.meta(&name),
            "type": "Opaque",
        }),
    )?;
    // `data`, as the API server returns it, so a converged Secret needs no write.
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect(),
    );
    Ok(Some(secret))
}

/// The PostgreSQL parameters archiving needs (Patroni's dynamic configuration).
pub(super) fn archive_parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, Value)> {
    if ctx.backup().is_none() {
        return Vec::new();
    }
    vec![
        ("archive_mode", Value::from("on")),
        (
            "archive_command",
            Value::from(pgbackrest::archive_command(&ctx.stanza())),
        ),
    ]
}

/// Parameters set unless the spec does: a quiet database still closes a segment every
/// minute, so the newest recoverable point is never more than a minute old.
pub(super) fn default_archive_parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, Value)> {
    if ctx.backup().is_none() {
        return Vec::new();
    }
    vec![("archive_timeout", Value::from("60s"))]
}

/// `env` entries of the secrets pgBackRest reads (S3 keys, the cipher passphrase).
pub(super) fn secret_env(ctx: &Ctx<'_>) -> Result<Vec<Value>, Error> {
    let env = ctx
        .backup()
        .map(|b| pgbackrest::secret_env(&b.repository))
        .unwrap_or_default();
    to_values(&env)
}

/// `env` entries of the restore source's secrets (for the postgres container).
pub(super) fn restore_env(ctx: &Ctx<'_>) -> Result<Vec<Value>, Error> {
    let env = ctx
        .restore_source()
        .map(|s| s.instance_env())
        .unwrap_or_default();
    to_values(&env)
}

fn to_values<T: serde::Serialize>(items: &[T]) -> Result<Vec<Value>, Error> {
    items
        .iter()
        .map(|e| serde_json::to_value(e).map_err(Error::serialize("pgBackRest pod parts")))
        .collect()
}

/// The TLS server container and the volumes pgBackRest needs; the postgres container's
/// extra mounts (the file and the object store's CA: it pushes and fetches WAL itself).
#[derive(Default)]
pub(super) struct PodParts {
    pub server: Option<Value>,
    pub volumes: Vec<Value>,
    pub postgres_mounts: Vec<Value>,
}

pub(super) fn pod_parts(ctx: &Ctx<'_>, image: &str, restricted: &Value) -> Result<PodParts, Error> {
    let mut parts = PodParts::default();
    if let Some(backup) = ctx.backup() {
        let v = pgbackrest::pod_volumes(&ctx.names, backup);
        let config = serde_json::to_value(&v.config).map_err(Error::serialize("volumes"))?;
        parts.postgres_mounts.push(config.clone());
        parts
            .postgres_mounts
            .extend(to_values(v.repo_ca.as_slice())?);
        // Backups reach the instance through this server: it reads the data directory and
        // talks to PostgreSQL over the socket; the repository is the backup Job's business.
        parts.server = Some(json!({
            "name": "pgbackrest",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["pgbackrest", "server"],
            "ports": [{"name": "pgbackrest", "containerPort": pgbackrest::TLS_PORT, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": "pgbackrest"}, "periodSeconds": 10},
            "livenessProbe": {"tcpSocket": {"port": "pgbackrest"}, "periodSeconds": 30, "failureThreshold": 6},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            // The server checks a command's options against the whole file, S3 keys included.
            "env": secret_env(ctx)?,
            "securityContext": restricted,
            "volumeMounts": [
                {"name": "data", "mountPath": DATA_MOUNT},
                {"name": "run", "mountPath": SOCKET_DIR},
                {"name": "tmp", "mountPath": "/tmp"},
                config,
                serde_json::to_value(&v.tls).map_err(Error::serialize("volumes"))?,
            ],
        }));
        parts.volumes = to_values(&v.volumes)?;
    }
    if let Some(source) = ctx.restore_source() {
        // The first instance restores with restore.conf, from the same ConfigMap.
        if parts.server.is_none() {
            let (volume, mount) = pgbackrest::config_volume(&ctx.names);
            parts.volumes.extend(to_values(&[volume])?);
            parts.postgres_mounts.extend(to_values(&[mount])?);
        }
        if let Some((volume, mount)) = pgbackrest::ca_volume(
            &source.spec.repository,
            "pgbackrest-restore-ca",
            restore::CA_DIR,
        ) {
            parts.volumes.extend(to_values(&[volume])?);
            parts.postgres_mounts.extend(to_values(&[mount])?);
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{BACKED_UP, cluster};

    #[test]
    fn no_backup_no_pgbackrest() {
        let c = cluster("instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}");
        let ctx = Ctx::new(&c).unwrap();
        assert!(config_map(&ctx).unwrap().is_none());
        assert!(tls_secret(&ctx, &BTreeMap::new()).unwrap().is_none());
        assert!(archive_parameters(&ctx).is_empty() && secret_env(&ctx).unwrap().is_empty());
        let parts = pod_parts(&ctx, "img", &json!({})).unwrap();
        assert!(parts.server.is_none() && parts.volumes.is_empty());
    }

    #[test]
    fn the_config_map_holds_the_file_and_no_secret() {
        let c = cluster(BACKED_UP);
        let ctx = Ctx::new(&c).unwrap();
        let cm = config_map(&ctx).unwrap().unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("db-pgbackrest"));
        let conf = &cm.data.unwrap()["pgbackrest.conf"];
        assert!(conf.contains("[prod-db]"), "{conf}");
        assert!(conf.contains("repo1-storage-ca-file=/etc/pgbackrest-repo-ca/ca.crt"));
        let env = secret_env(&ctx).unwrap();
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "s3");
    }

    #[test]
    fn the_tls_secret_is_issued_once_and_kept() {
        let c = cluster(BACKED_UP);
        let ctx = Ctx::new(&c).unwrap();
        let first = tls_secret(&ctx, &BTreeMap::new()).unwrap().unwrap();
        assert!(first.string_data.is_none(), "data, as the API returns it");
        let existing = BTreeMap::from([("db-pgbackrest-tls".to_owned(), first.clone())]);
        let again = tls_secret(&ctx, &existing).unwrap().unwrap();
        assert_eq!(again.data, first.data);
        let fresh = tls_secret(&ctx, &BTreeMap::new()).unwrap().unwrap();
        assert_ne!(fresh.data, first.data, "a new CA each time");
    }

    #[test]
    fn archiving_parameters_name_the_stanza() {
        let c = cluster(BACKED_UP);
        let ctx = Ctx::new(&c).unwrap();
        let p: BTreeMap<_, _> = archive_parameters(&ctx).into_iter().collect();
        assert_eq!(p["archive_mode"], "on");
        assert_eq!(
            p["archive_command"],
            "pgbackrest --stanza=prod-db archive-push \"%p\""
        );
    }

    #[test]
    fn a_restored_cluster_gets_the_sources_file_secrets_and_ca_but_no_server() {
        let c = cluster(crate::desired::fixtures::RESTORED);
        let ctx = Ctx::new(&c).unwrap();
        let cm = config_map(&ctx).unwrap().unwrap();
        let data = cm.data.unwrap();
        assert!(!data.contains_key("pgbackrest.conf"));
        assert!(data["restore.conf"].contains("[prod-old]"));
        let parts = pod_parts(&ctx, "img", &json!({})).unwrap();
        assert!(parts.server.is_none());
        let mounts: Vec<_> = parts
            .postgres_mounts
            .iter()
            .map(|m| m["mountPath"].clone())
            .collect();
        assert_eq!(
            mounts,
            [
                json!("/etc/pgbackrest"),
                json!("/etc/pgbackrest-restore-ca")
            ]
        );
        let volumes: Vec<_> = parts.volumes.iter().map(|v| v["name"].clone()).collect();
        assert_eq!(
            volumes,
            [json!("pgbackrest-config"), json!("pgbackrest-restore-ca")]
        );
        let env = restore_env(&ctx).unwrap();
        assert_eq!(env[0]["name"], "PGPILOT_RESTORE_S3_KEY");
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "s3-old");
        assert!(secret_env(&ctx).unwrap().is_empty());
    }
}
