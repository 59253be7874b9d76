//! What `spec.backup` adds to the instances: pgbackrest.conf, the TLS material of the
//! pgBackRest servers, and (in statefulset.rs and config.rs) the server container, the
//! secrets' environment and PostgreSQL's archive and restore commands. The backup controller
//! creates the stanza and takes the backups; the instances archive on their own.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use pgpilot_api::cluster::BackupSpec;
use pgpilot_postgres::pgbackrest;
use serde_json::{Value, json};

use super::config::{DATA_MOUNT, SOCKET_DIR};
use super::{Ctx, typed};
use crate::error::Error;

impl Ctx<'_> {
    /// The cluster's `spec.backup`, if it has one.
    pub fn backup(&self) -> Option<&BackupSpec> {
        self.cluster.spec.backup.as_ref()
    }

    /// The cluster's pgBackRest stanza.
    pub fn stanza(&self) -> String {
        pgbackrest::stanza(&self.namespace, &self.names.cluster)
    }
}

/// ConfigMap `<cluster>-pgbackrest` with pgbackrest.conf.
pub(super) fn config_map(ctx: &Ctx<'_>) -> Result<Option<ConfigMap>, Error> {
    let Some(backup) = ctx.backup() else {
        return Ok(None);
    };
    let conf = pgbackrest::config_file(backup, &ctx.namespace, &ctx.names.cluster)?;
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": ctx.meta(&ctx.names.pgbackrest_config()),
            "data": {"pgbackrest.conf": conf},
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
    let env = ctx.backup().map(pgbackrest::secret_env).unwrap_or_default();
    env.iter()
        .map(|e| serde_json::to_value(e).map_err(Error::serialize("env")))
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
    let Some(backup) = ctx.backup() else {
        return Ok(PodParts::default());
    };
    let v = pgbackrest::pod_volumes(&ctx.names, backup);
    let to = |x: serde_json::Result<Value>| x.map_err(Error::serialize("pgBackRest volumes"));
    let config = to(serde_json::to_value(&v.config))?;
    let mut postgres_mounts = vec![config.clone()];
    if let Some(ca) = &v.repo_ca {
        postgres_mounts.push(to(serde_json::to_value(ca))?);
    }
    // Backups reach the instance through this server: it reads the data directory and
    // talks to PostgreSQL over the socket; the repository is the backup Job's business.
    let server = json!({
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
            to(serde_json::to_value(&v.tls))?,
        ],
    });
    Ok(PodParts {
        server: Some(server),
        volumes: to(serde_json::to_value(&v.volumes))?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        postgres_mounts,
    })
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
}
