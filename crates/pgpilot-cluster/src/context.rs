//! What every reconcile of one namespace (or all) shares.

use std::sync::Arc;

use kube::Client;
use kube::runtime::controller::Action;
use pgpilot_api::PostgresCluster;
use pgpilot_postgres::patroni::Patroni;
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::Reconciler;

use crate::error::Error;
use crate::observe::Caches;
use crate::validate::DefaultImages;

pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub default_images: DefaultImages,
    pub exporter_image: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub patroni: Patroni,
    pub caches: Caches,
    /// pgpilot's pods, for the NetworkPolicies.
    pub operator: Option<crate::OperatorPods>,
    pub crash_logs: Arc<crate::trouble::CrashLogs>,
    /// The clusters' health series; the reconcile notes the certificate's expiry there.
    pub health: crate::metrics::ClusterMetrics,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = PostgresCluster;
    type Error = Error;

    async fn reconcile(&self, cluster: Arc<PostgresCluster>) -> Result<Action, Error> {
        crate::reconcile::reconcile(cluster, self).await
    }
}
