//! The instance pods' identity: what Patroni needs for its Kubernetes DCS, in this
//! namespace only. Patroni keeps its state in ConfigMaps and labels the pods with their role.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::json;

use super::{Ctx, typed};
use crate::error::Error;

pub(super) fn service_account(ctx: &Ctx<'_>) -> Result<ServiceAccount, Error> {
    typed(
        "ServiceAccount",
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": ctx.meta(&ctx.names.instance_identity()),
            // Patroni reads its token explicitly; nothing else in the pod needs one.
            "automountServiceAccountToken": true,
        }),
    )
}

pub(super) fn role(ctx: &Ctx<'_>) -> Result<Role, Error> {
    typed(
        "Role",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": ctx.meta(&ctx.names.instance_identity()),
            "rules": [
                // Leader lock, dynamic configuration, sync and failover keys.
                {"apiGroups": [""], "resources": ["configmaps"],
                 "verbs": ["create", "get", "list", "patch", "update", "watch", "delete", "deletecollection"]},
                // Members publish their state on their own pod and label the primary.
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch", "update", "watch"]},
                // Patroni keeps the -config Endpoints of the cluster current.
                {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "patch", "update", "create", "list", "watch", "delete"]},
            ],
        }),
    )
}

pub(super) fn role_binding(ctx: &Ctx<'_>) -> Result<RoleBinding, Error> {
    let name = ctx.names.instance_identity();
    typed(
        "RoleBinding",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": ctx.meta(&name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ctx.namespace}],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};

    #[test]
    fn patroni_may_touch_only_configmaps_pods_and_endpoints_of_its_namespace() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let role = role(&ctx).unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("prod"));
        let resources: Vec<String> = role
            .rules
            .unwrap()
            .into_iter()
            .flat_map(|r| r.resources.unwrap_or_default())
            .collect();
        assert_eq!(resources, ["configmaps", "pods", "endpoints"]);
        let binding = role_binding(&ctx).unwrap();
        assert_eq!(binding.role_ref.name, "db-instance");
        assert_eq!(binding.subjects.unwrap()[0].name, "db-instance");
    }

    #[test]
    fn children_are_owned_by_the_cluster() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let sa = service_account(&ctx).unwrap();
        let owner = &sa.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("PostgresCluster", "db", "0c1d-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(sa.metadata.labels.unwrap()["pgpilot.io/cluster"], "db");
    }
}
