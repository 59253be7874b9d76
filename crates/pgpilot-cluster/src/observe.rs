//! What a reconcile sees: the cluster's objects from the watch caches (no API request), its
//! credential Secrets (a Secret missing from the cache is confirmed with a GET before a new
//! password could be made for it), and Patroni's view of the instances.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_toolkit::runner::Cache;
use tracing::Instrument;

use crate::desired;
use crate::error::Error;

/// The watch caches of one namespace (or all): every read of a reconcile comes from here.
#[derive(Clone)]
pub struct Caches {
    pub statefulsets: Cache<StatefulSet>,
    pub services: Cache<Service>,
    pub secrets: Cache<Secret>,
    pub service_accounts: Cache<ServiceAccount>,
    pub roles: Cache<Role>,
    pub role_bindings: Cache<RoleBinding>,
    pub pdbs: Cache<PodDisruptionBudget>,
    pub network_policies: Cache<NetworkPolicy>,
    /// The ConfigMap the controller applies and Patroni's DCS ConfigMaps.
    pub config_maps: Cache<ConfigMap>,
    pub pods: Cache<Pod>,
    pub claims: Cache<PersistentVolumeClaim>,
}

/// The cluster's objects as the caches hold them.
pub struct Seen {
    pub statefulset: Option<Arc<StatefulSet>>,
    /// Instance pods, by name.
    pub pods: Vec<Arc<Pod>>,
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    /// Patroni's DCS ConfigMaps (`<cluster>-config`, `-leader`, `-sync`, `-failover`).
    pub patroni_state: Vec<Arc<ConfigMap>>,
}

/// Reads the cluster's objects from the caches.
pub fn seen(caches: &Caches, ns: &str, cluster: &str) -> Seen {
    let mine = [(labels::CLUSTER, cluster)];
    let instance = [
        (labels::CLUSTER, cluster),
        (
            labels::COMPONENT,
            pgpilot_postgres::names::COMPONENT_INSTANCE,
        ),
    ];
    Seen {
        statefulset: caches.statefulsets.get(ns, cluster),
        pods: caches.pods.list(ns, &instance),
        claims: caches.claims.list(ns, &mine),
        patroni_state: caches.config_maps.list(ns, &instance),
    }
}

/// The cluster's kept Secrets (credentials, TLS material) that exist, by name. One the cache lacks is read from
/// the API: a Secret created by the previous reconcile may not have reached the cache yet,
/// and building it again would give it a new password.
pub async fn secrets(
    caches: &Caches,
    ns: &str,
    cluster: &PostgresCluster,
) -> Result<BTreeMap<String, Secret>, Error> {
    let mut found = BTreeMap::new();
    for name in desired::kept_secrets(cluster) {
        let secret = match caches.secrets.get(ns, &name) {
            Some(cached) => Some(cached.as_ref().clone()),
            None => caches
                .secrets
                .api(ns)
                .get_opt(&name)
                .instrument(tracing::debug_span!("kube.get", kind = "Secret", name = %name))
                .await
                .map_err(Error::api("get", "Secret", &name))?,
        };
        if let Some(secret) = secret {
            found.insert(secret.name_any(), secret);
        }
    }
    Ok(found)
}

/// The user's certificate Secret of `spec.tls.certificate`, if the spec names one: read
/// from the API (it is not the cluster's, so not cached), with its name.
pub async fn certificate_secret(
    caches: &Caches,
    ns: &str,
    cluster: &PostgresCluster,
) -> Result<Option<(String, Option<Secret>)>, Error> {
    let Some(name) = cluster
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.certificate.as_ref())
        .map(|c| c.secret_name.clone())
    else {
        return Ok(None);
    };
    let secret = caches
        .secrets
        .api(ns)
        .get_opt(&name)
        .instrument(tracing::debug_span!("kube.get", kind = "Secret", name = %name))
        .await
        .map_err(Error::api("get", "Secret", &name))?;
    Ok(Some((name, secret)))
}
