//! Metrics about the manager process itself.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// `pgpilot_build_info` and `pgpilot_leader`.
#[derive(Clone, Default)]
pub struct ProcessMetrics {
    leader: Gauge,
}

impl ProcessMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register("build_info", "pgpilot-manager version", build);
        r.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            m.leader.clone(),
        );
        m
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}
