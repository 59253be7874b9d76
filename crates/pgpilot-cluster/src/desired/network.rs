//! The NetworkPolicy of a cluster's instances. Ingress only: the instances still reach the
//! API server (Patroni's DCS), the object store and each other unhindered.
//!
//! - PostgreSQL, Patroni's API and pgBackRest's TLS server: from the cluster's own pods
//!   (members replicate, rewind and call each other; its Jobs back up through pgBackRest)
//!   and from pgpilot's pods, when the manager knows who they are (it runs in a pod).
//! - PostgreSQL alone: from `spec.networkPolicy.postgresFrom` (default: the namespace).
//! - The exporter's metrics, and Patroni's API when its metrics are asked for: from
//!   `spec.networkPolicy.metricsFrom` (default: every pod of every namespace, for Prometheus
//!   wherever it runs).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use pgpilot_postgres::names::{EXPORTER_PORT, PATRONI_PORT, POSTGRES_PORT};
use pgpilot_postgres::pgbackrest;
use serde_json::{Value, json};

use super::{Ctx, typed};
use crate::error::Error;

/// The pods pgpilot's manager runs in, so the instances can let it in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    /// Labels every manager pod carries (the chart's selector labels).
    pub labels: BTreeMap<String, String>,
}

pub(super) fn network_policy(
    ctx: &Ctx<'_>,
    operator: Option<&OperatorPods>,
) -> Result<Option<NetworkPolicy>, Error> {
    let spec = ctx.cluster.spec.network_policy.as_ref();
    if !spec.is_none_or(|n| n.enabled) {
        return Ok(None);
    }
    let tcp = |port: i32| json!({"protocol": "TCP", "port": port});
    let mut internal_ports = vec![tcp(POSTGRES_PORT), tcp(PATRONI_PORT)];
    if ctx.cluster.spec.backup.is_some() {
        internal_ports.push(tcp(pgbackrest::TLS_PORT));
    }
    // The instances and the cluster's Jobs carry both labels.
    let mut internal = vec![json!({"podSelector": {"matchLabels": ctx.labels()}})];
    internal.extend(operator.map(|o| {
        json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": o.namespace}},
            "podSelector": {"matchLabels": o.labels},
        })
    }));
    let mut ingress = vec![json!({"from": internal, "ports": internal_ports})];
    let peers = |given: Option<&Vec<_>>, default: Value, field: &'static str| match given {
        None => Ok(vec![default]),
        Some(peers) => peers
            .iter()
            .map(|p| serde_json::to_value(p).map_err(Error::serialize(field)))
            .collect::<Result<Vec<Value>, _>>(),
    };
    // The namespace's pods (a podSelector without namespaceSelector).
    let clients = peers(
        spec.and_then(|n| n.postgres_from.as_ref()),
        json!({"podSelector": {}}),
        "postgresFrom",
    )?;
    // A rule without peers would let everyone in: an empty list adds no rule at all.
    if !clients.is_empty() {
        ingress.push(json!({"from": clients, "ports": [tcp(POSTGRES_PORT)]}));
    }
    let mut metrics_ports = Vec::new();
    if ctx.cluster.spec.exporter_enabled() {
        metrics_ports.push(tcp(EXPORTER_PORT));
    }
    if ctx.cluster.spec.patroni_metrics_enabled() {
        metrics_ports.push(tcp(PATRONI_PORT));
    }
    if !metrics_ports.is_empty() {
        // Every pod of every namespace.
        let scrapers = peers(
            spec.and_then(|n| n.metrics_from.as_ref()),
            json!({"namespaceSelector": {}}),
            "metricsFrom",
        )?;
        if !scrapers.is_empty() {
            ingress.push(json!({"from": scrapers, "ports": metrics_ports}));
        }
    }
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": ctx.meta(&ctx.names.network_policy()),
            "spec": {
                "podSelector": {"matchLabels": ctx.instance_selector()},
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        }),
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{BACKED_UP, THREE, cluster};
    use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPeer};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn rules(spec: &str, operator: Option<&OperatorPods>) -> Vec<NetworkPolicyIngressRule> {
        let c = cluster(spec);
        let policy = network_policy(&Ctx::new(&c).unwrap(), operator)
            .unwrap()
            .expect("on by default");
        let spec = policy.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap(),
            BTreeMap::from([
                ("pgpilot.io/cluster".into(), "db".into()),
                ("pgpilot.io/component".into(), "instance".into()),
            ])
        );
        spec.ingress.unwrap()
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        let port = |p: &k8s_openapi::api::networking::v1::NetworkPolicyPort| match p.port {
            Some(IntOrString::Int(n)) => n,
            ref other => panic!("{other:?}"),
        };
        rule.ports.iter().flatten().map(port).collect()
    }

    fn operator() -> OperatorPods {
        OperatorPods {
            namespace: "pgpilot-system".into(),
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), "pgpilot".into())]),
        }
    }

    #[test]
    fn patroni_and_pgbackrest_are_open_to_the_cluster_and_pgpilot_only() {
        let op = operator();
        let rules = rules(BACKED_UP, Some(&op));
        assert_eq!(rules.len(), 3);
        assert_eq!(ports(&rules[0]), [5432, 8008, 8432]);
        let from = rules[0].from.clone().unwrap();
        assert_eq!(
            from[0].pod_selector.clone().unwrap().match_labels.unwrap(),
            BTreeMap::from([
                ("pgpilot.io/cluster".into(), "db".into()),
                ("app.kubernetes.io/managed-by".into(), "pgpilot".into()),
            ])
        );
        assert!(
            from[0].namespace_selector.is_none(),
            "the cluster's namespace"
        );
        assert_eq!(
            from[1]
                .namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap(),
            BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                "pgpilot-system".into()
            )])
        );
        assert_eq!(
            from[1].pod_selector.clone().unwrap().match_labels.unwrap(),
            op.labels
        );
        // Everyone else: PostgreSQL, and the exporter's metrics.
        assert_eq!(ports(&rules[1]), [5432]);
        assert_eq!(ports(&rules[2]), [9187]);
    }

    #[test]
    fn by_default_postgres_is_open_to_the_namespace_and_no_pgbackrest_port_without_backups() {
        let rules = rules(THREE, None);
        assert_eq!(ports(&rules[0]), [5432, 8008]);
        assert_eq!(rules[0].from.as_ref().unwrap().len(), 1, "no operator peer");
        let everyone = rules[1].from.clone().unwrap();
        assert_eq!(
            everyone,
            [NetworkPolicyPeer {
                pod_selector: Some(Default::default()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn postgres_from_replaces_the_namespace_and_an_empty_list_opens_nothing_more() {
        let spec = format!(
            "{THREE}networkPolicy: {{postgresFrom: [{{namespaceSelector: {{matchLabels: {{team: shop}}}}}}]}}\n"
        );
        let rules_with_peer = rules(&spec, None);
        let peer = rules_with_peer[1].from.clone().unwrap();
        assert_eq!(
            peer[0]
                .namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap(),
            BTreeMap::from([("team".into(), "shop".into())])
        );
        // `from: []` would mean "from anywhere": the rule is left out instead.
        let closed = rules(
            &format!("{THREE}networkPolicy: {{postgresFrom: [], metricsFrom: []}}\n"),
            None,
        );
        assert_eq!(closed.len(), 1);
        assert_eq!(ports(&closed[0]), [5432, 8008]);
    }

    #[test]
    fn metrics_are_open_to_every_namespace_unless_narrowed_and_closed_without_an_exporter() {
        let open = rules(THREE, None);
        assert_eq!(ports(&open[2]), [9187]);
        assert_eq!(
            open[2].from.clone().unwrap(),
            [NetworkPolicyPeer {
                namespace_selector: Some(Default::default()),
                ..Default::default()
            }]
        );
        let narrowed = rules(
            &format!(
                "{THREE}networkPolicy: {{metricsFrom: [{{namespaceSelector: {{matchLabels: {{team: obs}}}}}}]}}\n"
            ),
            None,
        );
        let peer = narrowed[2].from.clone().unwrap();
        assert_eq!(
            peer[0]
                .namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap(),
            BTreeMap::from([("team".into(), "obs".into())])
        );
        let without = rules(
            &format!("{THREE}monitoring: {{exporter: {{enabled: false}}}}\n"),
            None,
        );
        assert_eq!(without.len(), 2);
        assert!(without.iter().all(|r| !ports(r).contains(&9187)));
    }

    #[test]
    fn patronis_metrics_open_its_port_to_the_scrapers_only_when_asked() {
        let scraped = |spec: &str| rules(spec, None).get(2).map(ports);
        assert_eq!(scraped(THREE), Some(vec![9187]));
        let patroni = "monitoring: {patroni: {enabled: true}";
        assert_eq!(
            scraped(&format!("{THREE}{patroni}}}\n")),
            Some(vec![9187, 8008])
        );
        assert_eq!(
            scraped(&format!(
                "{THREE}{patroni}, exporter: {{enabled: false}}}}\n"
            )),
            Some(vec![8008])
        );
        // No scrapers named: neither port opens to anyone else.
        let closed = rules(
            &format!("{THREE}{patroni}}}\nnetworkPolicy: {{metricsFrom: []}}\n"),
            None,
        );
        assert_eq!(closed.len(), 2);
    }

    #[test]
    fn switched_off_there_is_no_policy() {
        let c = cluster(&format!("{THREE}networkPolicy: {{enabled: false}}\n"));
        assert!(
            network_policy(&Ctx::new(&c).unwrap(), Some(&operator()))
                .unwrap()
                .is_none()
        );
    }
}
