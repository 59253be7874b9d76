//! The children a PostgresCluster should have: pure functions from the spec (and the
//! Secrets that already exist) to Kubernetes objects. No I/O; unit-tested from fixtures.

pub(crate) mod auth;
mod backup;
pub(crate) mod config;
pub(crate) mod network;
mod rbac;
pub(crate) mod secrets;

pub(crate) use secrets::{monitor_role, wanted as credential_secrets};
mod services;
mod statefulset;
mod tls;
pub use tls::{Provided, provided as provided_certificate};

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use pgpilot_postgres::credentials::PasswordSource;
use pgpilot_postgres::patroni;

use crate::error::Error;
use pgpilot_postgres::names::{COMPONENT_INSTANCE, Names};

/// What the builders need besides the cluster itself.
pub struct Inputs<'a> {
    pub cluster: &'a PostgresCluster,
    /// Image of the instances (the spec's, or the manager's default for the version).
    pub image: String,
    /// Image of the metrics exporter sidecar (`spec.monitoring.exporter`).
    pub exporter_image: &'a str,
    /// Secrets of this cluster that exist, by name: their passwords are kept forever.
    pub existing_secrets: &'a BTreeMap<String, Secret>,
    /// When the certificates are checked (and issued).
    pub now: std::time::SystemTime,
    /// pgpilot's own pods, let in by the NetworkPolicy; unknown when the manager runs
    /// outside the cluster.
    pub operator: Option<&'a network::OperatorPods>,
    /// The server certificate of `spec.tls.certificate`, checked ([`provided_certificate`]).
    pub provided_certificate: Option<&'a tls::Provided>,
    /// Some volume of the cluster exists or is about to (see `reconcile::volumes_exist`):
    /// with `whenDeleted: Retain` its credential Secrets then outlive the cluster.
    pub volumes_exist: bool,
}

/// Every child of a cluster, in apply order: identity and RBAC first, configuration and
/// Services next, the workload last. `Debug` names the children and never prints the
/// Secrets' data.
#[derive(Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub secrets: Vec<Secret>,
    pub patroni_config: ConfigMap,
    /// The CA certificate, for clients to mount.
    pub ca_config_map: ConfigMap,
    /// pgbackrest.conf, with `spec.backup`.
    pub pgbackrest_config: Option<ConfigMap>,
    pub services: Vec<Service>,
    pub pdb: Option<PodDisruptionBudget>,
    pub network_policy: Option<NetworkPolicy>,
    pub statefulset: StatefulSet,
    /// Patroni's dynamic configuration (`bootstrap.dcs` at first start, PATCH /config later).
    pub patroni_dcs: Value,
    /// The version of the credentials every member must have loaded (see [`auth`]).
    pub auth_token: String,
    /// Why the server certificate was issued in this build, if it was.
    pub certificate_issued: Option<pgpilot_postgres::tls::Reissue>,
    /// When the server certificate expires (Unix time).
    pub certificate_expiry: Option<i64>,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |objects: &[&dyn ResourceName]| -> Vec<String> {
            objects.iter().map(|o| o.kind_and_name()).collect()
        };
        let mut children: Vec<&dyn ResourceName> = vec![
            &self.service_account,
            &self.role,
            &self.role_binding,
            &self.patroni_config,
            &self.ca_config_map,
            &self.statefulset,
        ];
        children.extend(self.secrets.iter().map(|s| s as &dyn ResourceName));
        children.extend(self.services.iter().map(|s| s as &dyn ResourceName));
        children.extend(self.pdb.iter().map(|p| p as &dyn ResourceName));
        children.extend(self.network_policy.iter().map(|p| p as &dyn ResourceName));
        children.extend(
            self.pgbackrest_config
                .iter()
                .map(|c| c as &dyn ResourceName),
        );
        f.debug_struct("Desired")
            .field("children", &names(&children))
            .finish_non_exhaustive()
    }
}

impl Desired {
    /// How pgpilot reaches the members' REST APIs: the cluster's CA, the pods' domain, the
    /// API's password; `https` names the members that answer HTTPS.
    pub fn patroni_access(&self, https: BTreeSet<String>) -> patroni::Access {
        let names = Names::new(
            self.statefulset
                .metadata
                .name
                .as_deref()
                .unwrap_or_default(),
        );
        let namespace = self
            .statefulset
            .metadata
            .namespace
            .clone()
            .unwrap_or_default();
        let api = self
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(names.patroni_api_secret().as_str()));
        patroni::Access {
            ca: self
                .ca_config_map
                .data
                .as_ref()
                .and_then(|d| d.get(pgpilot_postgres::tls::CA_CERT).cloned()),
            domain: format!("{}.{namespace}.svc", names.pods_service()),
            password: api.and_then(pgpilot_postgres::credentials::password_of),
            https,
        }
    }
}

/// `Kind/name` of an object, for `Debug` output that carries no data.
trait ResourceName {
    fn kind_and_name(&self) -> String;
}

impl<K: Resource<DynamicType = ()>> ResourceName for K {
    fn kind_and_name(&self) -> String {
        format!(
            "{}/{}",
            K::kind(&()),
            self.meta().name.as_deref().unwrap_or_default()
        )
    }
}

/// Builds every child. `passwords` makes new passwords (a CSPRNG in production).
pub fn build(inputs: &Inputs<'_>, passwords: &mut dyn PasswordSource) -> Result<Desired, Error> {
    let mut ctx = Ctx::new(inputs.cluster)?;
    ctx.volumes_exist = inputs.volumes_exist;
    let tls = tls::material(
        &ctx,
        inputs.existing_secrets,
        inputs.now,
        inputs.provided_certificate,
    )?;
    let certificate_expiry = tls::not_after(&tls.server_secret);
    let mut secrets = secrets::secrets(&ctx, inputs.existing_secrets, passwords, &tls.ca_cert)?;
    secrets.push(auth::api_secret(&ctx, inputs.existing_secrets, passwords)?);
    secrets.push(tls.ca_secret);
    secrets.push(tls.server_secret);
    let (patroni_auth, auth_token) = auth::auth_secret(&ctx, &secrets)?;
    secrets.push(patroni_auth);
    secrets.extend(backup::tls_secret(&ctx, inputs.existing_secrets)?);
    Ok(Desired {
        auth_token,
        certificate_issued: tls.reissued,
        certificate_expiry,
        service_account: rbac::service_account(&ctx)?,
        role: rbac::role(&ctx)?,
        role_binding: rbac::role_binding(&ctx)?,
        secrets,
        patroni_config: config::patroni_config(&ctx)?,
        ca_config_map: tls.ca_config_map,
        pgbackrest_config: backup::config_map(&ctx)?,
        services: services::services(&ctx)?,
        pdb: services::pdb(&ctx)?,
        network_policy: network::network_policy(&ctx, inputs.operator)?,
        statefulset: statefulset::statefulset(&ctx, &inputs.image, inputs.exporter_image)?,
        patroni_dcs: config::dcs(&ctx),
    })
}

/// Shared by the builders: the cluster, its names, and the metadata every child carries.
pub(crate) struct Ctx<'a> {
    pub cluster: &'a PostgresCluster,
    pub names: Names,
    pub namespace: String,
    owner: Value,
    /// Some volume of the cluster exists (see [`Inputs::volumes_exist`]).
    pub volumes_exist: bool,
}

impl<'a> Ctx<'a> {
    fn new(cluster: &'a PostgresCluster) -> Result<Self, Error> {
        let namespace = cluster.namespace().ok_or_else(|| Error::Invalid {
            field: "metadata.namespace",
            message: "a PostgresCluster is namespaced; this one has no namespace".into(),
        })?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Invalid {
                field: "metadata.uid",
                message: "the cluster has no uid yet; it must be read from the API".into(),
            })?;
        Ok(Self {
            names: Names::new(&cluster.name_any()),
            cluster,
            namespace,
            owner: serde_json::to_value(owner).map_err(Error::serialize("ownerReference"))?,
            volumes_exist: false,
        })
    }

    /// Labels on every child.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::CLUSTER.to_owned(), self.names.cluster.clone()),
            (
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_VALUE.to_owned(),
            ),
        ])
    }

    /// Labels that select the instance pods.
    pub fn instance_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::CLUSTER.to_owned(), self.names.cluster.clone()),
            (labels::COMPONENT.to_owned(), COMPONENT_INSTANCE.to_owned()),
        ])
    }

    /// `metadata` of a child named `name`.
    pub fn meta(&self, name: &str) -> Value {
        serde_json::json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(),
            "ownerReferences": [self.owner],
        })
    }
}

/// A file Patroni reads (patroni.yaml, auth.yaml), as its YAML reader (PyYAML, YAML 1.1) will
/// take it. Plain YAML would leave `on`, `yes`, `0600` or `1:30` unquoted, and PyYAML reads
/// those as a boolean, an octal number or a base-60 one: a parameter or a password would
/// change on the way. So the file is JSON (YAML reads it as it is), every string in double
/// quotes, and the characters YAML takes for line breaks inside a quoted string or refuses in
/// a stream (DEL, C1 controls, NEL, LS, PS, BOM, U+FFFE/U+FFFF), which JSON leaves as they are,
/// are escaped too.
pub(crate) fn patroni_file(value: &Value, file: &str) -> Result<String, Error> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid {
        field: "spec",
        message: format!("cannot render {file}: {e}"),
    })?;
    let mut out = String::with_capacity(json.len() + 1);
    for c in json.chars() {
        // Outside strings JSON is ASCII: these can only be inside one.
        if matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        ) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push('\n');
    Ok(out)
}

/// Turns a JSON description into a typed object, checked: the builders write children as
/// JSON, close to the YAML people know, and serde would drop a misspelled field without a
/// word. So the typed object is serialized again, and every field of the description must
/// still be there with its value.
pub(crate) fn typed<T: DeserializeOwned + Serialize>(
    what: &'static str,
    value: Value,
) -> Result<T, Error> {
    let object: T = serde_json::from_value(value.clone()).map_err(Error::serialize(what))?;
    let back = serde_json::to_value(&object).map_err(Error::serialize(what))?;
    match dropped(&value, &back, String::new()) {
        Some(path) => Err(Error::UnknownField { what, path }),
        None => Ok(object),
    }
}

/// The first path of `written` that `typed` lost (`null` means "not set" and is skipped).
fn dropped(written: &Value, typed: &Value, path: String) -> Option<String> {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => w.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match t.get(k) {
                None if !v.is_null() => Some(here),
                None => None,
                Some(tv) => dropped(v, tv, here),
            }
        }),
        (Value::Array(w), Value::Array(t)) => w
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (wv, tv))| dropped(wv, tv, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The Secrets a cluster keeps once they exist (their contents are generated once): the
/// credentials, the CA and server certificate, and the pgBackRest TLS material with
/// `spec.backup`.
pub(crate) fn kept_secrets(cluster: &PostgresCluster) -> Vec<String> {
    let mut names: Vec<String> = credential_secrets(cluster)
        .into_iter()
        .map(|w| w.secret)
        .collect();
    let n = Names::new(&cluster.name_any());
    names.extend([n.ca_secret(), n.tls_secret(), n.patroni_api_secret()]);
    if cluster.spec.backup.is_some() {
        names.push(n.pgbackrest_tls());
    }
    names
}

/// The labels of an object's metadata (for tests and pruning).
pub fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use pgpilot_api::PostgresCluster;

    /// A cluster as read from the API: namespace and uid set, spec from `spec_yaml`.
    pub fn cluster(spec_yaml: &str) -> PostgresCluster {
        let spec: serde_json::Value = serde_yaml::from_str(spec_yaml).unwrap();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod", "uid": "0c1d-uid", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    pub const THREE: &str = "
instances: 3
postgresql: {version: 17, parameters: {shared_buffers: 256MB}}
storage: {size: 10Gi, storageClassName: fast}
roles: [{name: app_user}]
databases: [{name: shop, owner: app_user}]
";

    /// Two instances archiving to MinIO with a private CA.
    pub const BACKED_UP: &str = "
instances: 2
postgresql: {version: 17}
storage: {size: 1Gi}
backup:
  repository:
    s3: {endpoint: 'minio.storage.svc:9000', bucket: backups, credentials: {secretName: s3}, caBundle: {name: minio-ca, key: ca.crt}}
";

    /// One instance restored from cluster `old`'s backups, to a point in time; no backups of
    /// its own.
    pub const RESTORED: &str = "
instances: 1
postgresql: {version: 17}
storage: {size: 1Gi}
bootstrap:
  restore:
    source: {name: old}
    repository:
      s3: {endpoint: 'minio.storage.svc:9000', bucket: backups, credentials: {secretName: s3-old}, caBundle: {name: minio-ca, key: ca.crt}}
  recoveryTarget: {time: '2026-12-06T01:02:03Z'}
";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pgpilot_toolkit::Sensitive;

    use super::fixtures::{THREE, cluster};
    use super::*;

    struct Fixed;
    impl PasswordSource for Fixed {
        fn new_password(&mut self) -> Sensitive {
            Sensitive::new("Fixed-Passw0rd-for-the-test")
        }
    }

    #[test]
    fn a_misspelled_field_is_an_error_not_a_silent_drop() {
        use k8s_openapi::api::core::v1::Service;
        let spelled = serde_json::json!({"metadata": {"name": "db-rw"},
            "spec": {"ports": [{"port": 5432, "targetPort": 5432}], "selector": {"a": "b"}}});
        assert!(typed::<Service>("Service", spelled).is_ok());
        let misspelled = serde_json::json!({"metadata": {"name": "db-rw"},
            "spec": {"ports": [{"port": 5432, "tragetPort": 5432}]}});
        match typed::<Service>("Service", misspelled) {
            Err(Error::UnknownField { path, .. }) => assert_eq!(path, ".spec.ports[0].tragetPort"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_output_names_the_children_and_holds_no_secret() {
        let c = cluster(THREE);
        let desired = build(
            &Inputs {
                cluster: &c,
                image: "localhost/pgpilot/postgres:17".into(),
                exporter_image: "localhost/pgpilot/postgres-exporter:0.17.1",
                existing_secrets: &BTreeMap::new(),
                volumes_exist: false,
                now: std::time::SystemTime::now(),
                operator: None,
                provided_certificate: None,
            },
            &mut Fixed,
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expiry = desired
            .certificate_expiry
            .expect("the issued certificate's expiry");
        assert!(
            (now + 89 * 86400..=now + 91 * 86400).contains(&expiry),
            "a new server certificate lasts 90 days: {expiry} vs {now}"
        );
        let printed = format!("{desired:?} {desired:#?}");
        assert!(printed.contains("Secret/db-superuser"), "{printed}");
        assert!(printed.contains("StatefulSet/db"), "{printed}");
        assert!(!printed.contains("Fixed-Passw0rd"), "{printed}");
        // The bytes of the password, as `ByteString`'s own Debug would print them.
        assert!(!printed.contains("70, 105, 120"), "{printed}");
    }
}
