//! The webhooks pgpilot registers: one table that routes requests, answers errors by each
//! webhook's failure policy and renders the ValidatingWebhookConfiguration (the chart's
//! `files/webhooks.yaml` comes from it).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;

/// What the API server does when it cannot reach the webhook (or it times out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit: the controller checks the same rule again and reports it in a condition.
    Ignore,
    /// Refuse: the request waits for the operator.
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

/// Which rule a webhook applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    RestoreSource,
    EarlierBackups,
    OneUpgradeAtATime,
    RotationTarget,
}

/// One webhook of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Webhook {
    /// Its name in the configuration (and in the API server's error when it is down).
    pub name: &'static str,
    /// Short name for metrics and logs.
    pub id: &'static str,
    pub path: &'static str,
    /// The pgpilot.io resource it reviews.
    pub resource: &'static str,
    /// `CREATE`, and `UPDATE` where what it checks can change.
    pub operations: &'static [&'static str],
    pub check: Check,
    pub failure_policy: FailurePolicy,
    /// CEL the API server evaluates first: the webhook is called only when it holds, so
    /// objects the rule cannot concern never depend on the webhook.
    pub match_condition: Option<&'static str>,
}

pub const WEBHOOKS: &[Webhook] = &[
    // Fail: a restore is rare and deliberate, and someone watches it; the check against the
    // source's repository comes before a restore starts reading backups, or not at all.
    Webhook {
        name: "restores.postgresclusters.pgpilot.io",
        id: "restore-source",
        path: "/validate/postgresclusters/restore",
        resource: "postgresclusters",
        operations: &["CREATE"],
        check: Check::RestoreSource,
        failure_policy: FailurePolicy::Fail,
        match_condition: Some("has(object.spec.bootstrap) && has(object.spec.bootstrap.restore)"),
    },
    // Ignore: it only warns. On the create or update that gives a cluster backups.
    Webhook {
        name: "backups.postgresclusters.pgpilot.io",
        id: "earlier-backups",
        path: "/validate/postgresclusters/backup",
        resource: "postgresclusters",
        operations: &["CREATE", "UPDATE"],
        check: Check::EarlierBackups,
        failure_policy: FailurePolicy::Ignore,
        match_condition: Some(
            "has(object.spec.backup) && (request.operation == 'CREATE' || !has(oldObject.spec.backup))",
        ),
    },
    // Ignore: the upgrade controller runs one upgrade of a cluster at a time anyway (the
    // others wait, AnotherUpgradeActive); the webhook only says so at once.
    Webhook {
        name: "postgresupgrades.pgpilot.io",
        id: "one-upgrade-at-a-time",
        path: "/validate/postgresupgrades",
        resource: "postgresupgrades",
        operations: &["CREATE"],
        check: Check::OneUpgradeAtATime,
        failure_policy: FailurePolicy::Ignore,
        match_condition: None,
    },
    // Ignore: the rotation controller refuses a second owner (Conflict) and a role without
    // credentials (TargetNotFound) before it touches a Secret.
    Webhook {
        name: "secretrotations.pgpilot.io",
        id: "rotation-target",
        path: "/validate/secretrotations",
        resource: "secretrotations",
        operations: &["CREATE"],
        check: Check::RotationTarget,
        failure_policy: FailurePolicy::Ignore,
        match_condition: None,
    },
];

/// How the API server reaches the webhooks.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A Service (in a cluster): `https://<name>.<namespace>.svc:<port>`.
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// A URL base, e.g. `https://127.0.0.1:9443` (a manager outside the cluster).
    Url(String),
}

/// The ValidatingWebhookConfiguration `name` for [`WEBHOOKS`]. `namespaces`: only objects
/// of these namespaces are reviewed (empty: all).
pub fn configuration(
    name: &str,
    endpoint: &Endpoint,
    ca_bundle: Option<&str>,
    namespaces: &[String],
) -> ValidatingWebhookConfiguration {
    let namespace_selector = (!namespaces.is_empty()).then(|| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(namespaces.to_vec()),
        }]),
        ..Default::default()
    });
    let webhooks = WEBHOOKS
        .iter()
        .map(|w| ValidatingWebhook {
            name: w.name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                ca_bundle: ca_bundle.map(|c| ByteString(c.as_bytes().to_vec())),
                service: match endpoint {
                    Endpoint::Service {
                        namespace,
                        name,
                        port,
                    } => Some(ServiceReference {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        path: Some(w.path.into()),
                        port: Some(*port),
                    }),
                    Endpoint::Url(_) => None,
                },
                url: match endpoint {
                    Endpoint::Url(base) => {
                        Some(format!("{}{}", base.trim_end_matches('/'), w.path))
                    }
                    Endpoint::Service { .. } => None,
                },
            },
            failure_policy: Some(w.failure_policy.as_str().into()),
            match_conditions: w.match_condition.map(|expression| {
                vec![MatchCondition {
                    name: "relevant".into(),
                    expression: expression.into(),
                }]
            }),
            match_policy: Some("Equivalent".into()),
            namespace_selector: namespace_selector.clone(),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![pgpilot_api::GROUP.into()]),
                api_versions: Some(vec!["*".into()]),
                operations: Some(w.operations.iter().map(|o| (*o).into()).collect()),
                resources: Some(vec![w.resource.into()]),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            // Well under the API server's own deadline; the lookups are a GET or a LIST
            // of one namespace.
            timeout_seconds: Some(5),
            ..Default::default()
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                pgpilot_api::labels::MANAGED_BY.into(),
                pgpilot_api::labels::MANAGED_BY_VALUE.into(),
            )])),
            ..Default::default()
        },
        webhooks: Some(webhooks),
    }
}

/// The webhook serving `path`.
pub fn by_path(path: &str) -> Option<&'static Webhook> {
    WEBHOOKS.iter().find(|w| w.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_webhook_has_its_own_name_path_and_operations() {
        let mut names: Vec<_> = WEBHOOKS.iter().map(|w| w.name).collect();
        let mut paths: Vec<_> = WEBHOOKS.iter().map(|w| w.path).collect();
        names.sort();
        names.dedup();
        paths.sort();
        paths.dedup();
        assert_eq!((names.len(), paths.len()), (WEBHOOKS.len(), WEBHOOKS.len()));
        let c = configuration(
            "pgpilot",
            &Endpoint::Service {
                namespace: "pgpilot-system".into(),
                name: "pgpilot-webhook".into(),
                port: 443,
            },
            Some("PEM"),
            &["team-a".into()],
        );
        let hooks = c.webhooks.unwrap_or_default();
        assert_eq!(hooks.len(), WEBHOOKS.len());
        for (hook, w) in hooks.iter().zip(WEBHOOKS) {
            let rules = hook.rules.clone().unwrap_or_default();
            let operations = rules[0].operations.clone().unwrap_or_default();
            // Only the backups warning looks at updates, those that add spec.backup.
            let want: &[&str] = if w.check == Check::EarlierBackups {
                &["CREATE", "UPDATE"]
            } else {
                &["CREATE"]
            };
            assert_eq!(operations, want, "{}", w.name);
            assert_eq!(
                hook.client_config
                    .service
                    .as_ref()
                    .and_then(|s| s.path.as_deref()),
                Some(w.path)
            );
            assert_eq!(
                hook.client_config.ca_bundle,
                Some(ByteString(b"PEM".to_vec()))
            );
            let selector = hook.namespace_selector.clone().unwrap_or_default();
            assert_eq!(
                selector.match_expressions.unwrap_or_default()[0].values,
                Some(vec!["team-a".to_owned()])
            );
        }
    }

    #[test]
    fn only_the_restore_webhook_fails_closed_and_only_for_restores() {
        let closed: Vec<_> = WEBHOOKS
            .iter()
            .filter(|w| w.failure_policy == FailurePolicy::Fail)
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].check, Check::RestoreSource);
        assert!(
            closed[0]
                .match_condition
                .is_some_and(|c| c.contains("restore"))
        );
        let url = configuration(
            "p",
            &Endpoint::Url("https://127.0.0.1:9443/".into()),
            None,
            &[],
        );
        let hook = &url.webhooks.unwrap_or_default()[0];
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate/postgresclusters/restore")
        );
        assert_eq!(hook.namespace_selector, None);
    }
}
