//! The RBAC the manager needs: one source of truth for `pgpilot-manager rbac`, the Helm
//! chart and the integration tests, so the operator never runs with more than it asks for.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::ObjectMeta;
use pgpilot_toolkit::runtime::ControllerRef;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: owned(groups),
        resources: owned(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Cluster-wide rules: Events for every controller, plus each controller's own rules.
pub fn cluster_role(name: &str, controllers: &[ControllerRef]) -> ClusterRole {
    let mut rules = vec![rule(&["events.k8s.io"], &["events"], &["create", "patch"])];
    rules.extend(controllers.iter().flat_map(|c| c.rbac_rules()));
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    }
}

/// Rules in the manager's own namespace: the leader-election Lease.
pub fn leader_election_role(name: &str, namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        rules: Some(vec![rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "list", "watch", "create", "update", "patch"],
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_controllers_the_manager_may_only_write_events() {
        let role = cluster_role("m", &[]);
        let rules = role.rules.unwrap_or_default();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["events".to_string()][..])
        );
        assert!(!rules[0].verbs.iter().any(|v| v == "*" || v == "delete"));
    }

    #[test]
    fn the_lease_role_is_namespaced_and_names_only_leases() {
        let role = leader_election_role("m", "ops");
        assert_eq!(role.metadata.namespace.as_deref(), Some("ops"));
        let rules = role.rules.unwrap_or_default();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].api_groups.as_deref(),
            Some(&["coordination.k8s.io".to_string()][..])
        );
    }
}
