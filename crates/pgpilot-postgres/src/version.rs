//! The version pin: the StatefulSet carries the PostgreSQL major version its pods run in
//! the `pgpilot.io/postgres-version` annotation, beside the image in its template. The
//! cluster controller renders what runs; only an upgrade moves the pin.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

pub use pgpilot_api::labels::POSTGRES_VERSION as PIN_ANNOTATION;

/// Images by PostgreSQL major version, from the manager's `--default-image` flags.
pub type DefaultImages = std::collections::BTreeMap<i32, String>;

/// The image of a cluster's instances: the spec's, else the default for its version.
pub fn image_of(
    cluster: &pgpilot_api::PostgresCluster,
    defaults: &DefaultImages,
) -> Option<String> {
    let pg = &cluster.spec.postgresql;
    pg.image
        .clone()
        .or_else(|| defaults.get(&pg.version).cloned())
}

/// The container PostgreSQL and Patroni run in.
pub const CONTAINER: &str = "postgres";

/// The image a pod's PostgreSQL container runs.
pub fn pod_image(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .as_deref()
}

/// What the instances run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub version: i32,
    pub image: String,
}

/// The major version and image the StatefulSet's pods run, from its pin and its template.
pub fn running(sts: &StatefulSet) -> Option<Running> {
    let version = sts.annotations().get(PIN_ANNOTATION)?.parse().ok()?;
    let image = sts
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .clone()?;
    Some(Running { version, image })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_and_the_image_say_what_runs() {
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "annotations": {"pgpilot.io/postgres-version": "15"}},
            "spec": {"selector": {}, "serviceName": "db-pods", "template": {"spec": {"containers": [
                {"name": "postgres", "image": "localhost/pgpilot/postgres:15.20"}]}}}
        }))
        .unwrap();
        assert_eq!(
            running(&sts),
            Some(Running {
                version: 15,
                image: "localhost/pgpilot/postgres:15.20".into()
            })
        );
        let mut unpinned = sts.clone();
        unpinned.metadata.annotations = None;
        assert_eq!(running(&unpinned), None);
    }
}
