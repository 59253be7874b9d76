//! Services (headless, read-write, read-only, any) and the PodDisruptionBudget.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use pgpilot_api::labels;
use serde_json::{Value, json};

use super::{Ctx, typed};
use crate::error::Error;
use pgpilot_postgres::names::{PATRONI_PORT, POSTGRES_PORT};

fn ports(with_patroni: bool) -> Value {
    let mut ports = vec![
        json!({"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}),
    ];
    if with_patroni {
        ports.push(json!({"name": "patroni", "port": PATRONI_PORT, "targetPort": "patroni", "protocol": "TCP"}));
    }
    Value::from(ports)
}

pub(super) fn services(ctx: &Ctx<'_>) -> Result<Vec<Service>, Error> {
    let select = |role: Option<&str>| {
        let mut s = ctx.instance_selector();
        if let Some(role) = role {
            s.insert(labels::ROLE.to_owned(), role.to_owned());
        }
        s
    };
    let n = &ctx.names;
    [
        // Stable per-pod DNS names, also while a pod is not ready (replication, Patroni).
        json!({"apiVersion": "v1", "kind": "Service", "metadata": ctx.meta(&n.pods_service()),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                        "selector": select(None), "ports": ports(true)}}),
        // Patroni moves the primary label on failover, so this Service follows the primary.
        json!({"apiVersion": "v1", "kind": "Service", "metadata": ctx.meta(&n.rw_service()),
               "spec": {"type": "ClusterIP", "selector": select(Some(labels::ROLE_PRIMARY)), "ports": ports(false)}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": ctx.meta(&n.ro_service()),
               "spec": {"type": "ClusterIP", "selector": select(Some(labels::ROLE_REPLICA)), "ports": ports(false)}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": ctx.meta(&n.r_service()),
               "spec": {"type": "ClusterIP", "selector": select(None), "ports": ports(false)}}),
    ]
    .into_iter()
    .map(|v| typed("Service", v))
    .collect()
}

/// Voluntary evictions (drains) keep a majority of the instances, and never take the last
/// one. Off when the spec turns it off.
pub(super) fn pdb(ctx: &Ctx<'_>) -> Result<Option<PodDisruptionBudget>, Error> {
    let enabled = ctx
        .cluster
        .spec
        .pod_disruption_budget
        .as_ref()
        .is_none_or(|p| p.enabled);
    if !enabled {
        return Ok(None);
    }
    let instances = ctx.cluster.spec.instances.max(1);
    let min_available = instances / 2 + 1;
    typed(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": ctx.meta(&ctx.names.pdb()),
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": ctx.instance_selector()}},
        }),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn rw_follows_the_primary_ro_the_replicas_r_any_instance() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let svcs = services(&ctx).unwrap();
        let by_name = |n: &str| {
            svcs.iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
                .unwrap()
                .spec
                .clone()
                .unwrap()
        };
        let role = |n: &str| by_name(n).selector.unwrap().get("pgpilot.io/role").cloned();
        assert_eq!(role("db-rw").as_deref(), Some("primary"));
        assert_eq!(role("db-ro").as_deref(), Some("replica"));
        assert_eq!(role("db-r"), None);
        let pods = by_name("db-pods");
        assert_eq!(pods.cluster_ip.as_deref(), Some("None"));
        assert_eq!(pods.publish_not_ready_addresses, Some(true));
        assert_eq!(pods.ports.unwrap().len(), 2);
        assert_eq!(by_name("db-rw").ports.unwrap()[0].port, 5432);
    }

    #[test]
    fn the_pdb_keeps_a_majority_and_can_be_turned_off() {
        for (instances, min) in [(1, 1), (2, 2), (3, 2), (5, 3)] {
            let c = cluster(&format!(
                "instances: {instances}\npostgresql: {{version: 17}}\nstorage: {{size: 1Gi}}"
            ));
            let ctx = Ctx::new(&c).unwrap();
            let pdb = pdb(&ctx).unwrap().unwrap();
            assert_eq!(
                pdb.spec.unwrap().min_available,
                Some(IntOrString::Int(min)),
                "{instances} instances"
            );
        }
        let c = cluster(
            "instances: 3\npostgresql: {version: 17}\nstorage: {size: 1Gi}\npodDisruptionBudget: {enabled: false}",
        );
        assert!(pdb(&Ctx::new(&c).unwrap()).unwrap().is_none());
    }
}
