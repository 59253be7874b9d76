//! The RBAC the manager needs: one source of truth for `pgpilot-manager rbac`, the Helm
//! chart and the integration tests, so the operator never runs with more than it asks for.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;
use pgpilot_toolkit::runtime::{ControllerRef, policy_rule as rule};

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

/// What the admission webhooks read in the namespaces they review (granted there only, like
/// the controllers' rules, when the manager watches some namespaces).
pub fn webhook_reader_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(&[pgpilot_api::GROUP], &["postgresclusters"], &["get"]),
            rule(
                &[pgpilot_api::GROUP],
                &["postgresbackups", "postgresupgrades", "secretrotations"],
                &["list"],
            ),
        ]),
        ..Default::default()
    }
}

/// Cluster-scoped rules of the admission webhooks: ask whether a user may read a restore's
/// source in another namespace, and keep the CA bundle of their own configuration (by name:
/// no other webhook can be touched).
pub fn webhook_cluster_role(name: &str, configuration: &str) -> ClusterRole {
    let mut keep_bundle = rule(
        &["admissionregistration.k8s.io"],
        &["validatingwebhookconfigurations"],
        &["get", "patch"],
    );
    keep_bundle.resource_names = Some(vec![configuration.to_owned()]);
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
            keep_bundle,
        ]),
        ..Default::default()
    }
}

/// Rules in the manager's namespace for the webhooks' certificate Secret: create it, then
/// read and renew only it.
pub fn webhook_role(name: &str, namespace: &str, secret: &str) -> Role {
    let mut own = rule(&[""], &["secrets"], &["get", "update"]);
    own.resource_names = Some(vec![secret.to_owned()]);
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        // `create` cannot be limited by name: the API server knows no name before it exists.
        rules: Some(vec![rule(&[""], &["secrets"], &["create"]), own]),
    }
}

/// Who the roles are granted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grantee {
    /// A ServiceAccount `namespace/name` (in a cluster).
    ServiceAccount { namespace: String, name: String },
    /// A user name from a client certificate (the local test cluster).
    User(String),
}

impl std::str::FromStr for Grantee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("user", name)) if !name.is_empty() => Ok(Grantee::User(name.to_owned())),
            Some(("serviceaccount", sa)) => match sa.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    Ok(Grantee::ServiceAccount {
                        namespace: ns.to_owned(),
                        name: name.to_owned(),
                    })
                }
                _ => Err(format!("'{s}': expected serviceaccount:<namespace>/<name>")),
            },
            _ => Err(format!(
                "'{s}': expected user:<name> or serviceaccount:<namespace>/<name>"
            )),
        }
    }
}

impl Grantee {
    fn subject(&self) -> Subject {
        match self {
            Grantee::ServiceAccount { namespace, name } => Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            Grantee::User(name) => Subject {
                kind: "User".into(),
                name: name.clone(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            },
        }
    }
}

/// Bindings of [`cluster_role`] and [`leader_election_role`] (both named `name`) to `grantee`.
pub fn bindings(
    name: &str,
    namespace: &str,
    grantee: &Grantee,
) -> (ClusterRoleBinding, RoleBinding) {
    let role_ref = |kind: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    };
    let meta = |ns: Option<&str>| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        ..Default::default()
    };
    (
        ClusterRoleBinding {
            metadata: meta(None),
            role_ref: role_ref("ClusterRole"),
            subjects: Some(vec![grantee.subject()]),
        },
        RoleBinding {
            metadata: meta(Some(namespace)),
            role_ref: role_ref("Role"),
            subjects: Some(vec![grantee.subject()]),
        },
    )
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
    fn grantees_parse_or_explain() {
        assert_eq!(
            "user:pgpilot-manager".parse(),
            Ok(Grantee::User("pgpilot-manager".into()))
        );
        assert_eq!(
            "serviceaccount:ops/pgpilot".parse(),
            Ok(Grantee::ServiceAccount {
                namespace: "ops".into(),
                name: "pgpilot".into()
            })
        );
        assert!(
            "group:x"
                .parse::<Grantee>()
                .unwrap_err()
                .contains("expected user:<name>")
        );
        assert!("serviceaccount:ops".parse::<Grantee>().is_err());
    }

    #[test]
    fn bindings_point_at_the_roles_of_the_same_name() {
        let (crb, rb) = bindings("m", "ops", &Grantee::User("u".into()));
        assert_eq!(crb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.kind, "Role");
        assert_eq!(rb.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(crb.subjects.unwrap()[0].name, "u");
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
