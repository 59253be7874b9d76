//! The interface between a controller crate and the manager: a controller says its name,
//! the RBAC rules it needs, and runs until told to stop. Adding a controller to the manager
//! is one line in its registry.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::metrics::ControllerMetrics;

/// The namespaces a manager watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (cluster-wide RBAC).
    #[default]
    All,
    /// Only these.
    Only(Vec<String>),
}

/// What the manager hands a controller when it starts it.
#[derive(Clone)]
pub struct RunContext {
    pub client: Client,
    pub namespaces: Namespaces,
    pub metrics: ControllerMetrics,
    pub events: Events,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// Cancelled on shutdown: finish in-flight reconciles and return.
    pub shutdown: CancellationToken,
}

/// A boxed error from a controller's run loop.
pub type RunError = Box<dyn std::error::Error + Send + Sync>;

/// A controller the manager can run.
#[async_trait::async_trait]
pub trait Controller: Send + Sync + 'static {
    /// Name used in `--controllers`, metrics and field managers, e.g. `cluster`.
    fn name(&self) -> &'static str;
    /// Every RBAC rule the controller needs, and nothing more.
    fn rbac_rules(&self) -> Vec<PolicyRule>;
    /// Runs until `ctx.shutdown` is cancelled.
    async fn run(&self, ctx: RunContext) -> Result<(), RunError>;
    /// Registers metric families of the controller's own (beyond the reconcile metrics
    /// every controller has).
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// A PolicyRule from API groups, resources and verbs (the form RBAC rules are read in).
pub fn policy_rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        verbs: owned(verbs),
        ..Default::default()
    }
}

/// Shared handle to a controller.
pub type ControllerRef = Arc<dyn Controller>;
