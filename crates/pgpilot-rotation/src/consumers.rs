//! The workloads that read a rotated Secret: which they are (by name or label selector), the
//! pod-template annotation that makes them roll (a hash of the Secret's content, one key per
//! SecretRotation), and how far their rollout is. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use pgpilot_api::labels::CONSUMER_PREFIX;
use pgpilot_api::rotation::{Consumer, ConsumerKind, RolloutState};
use sha2::{Digest, Sha256};

/// The pod-template annotation of the SecretRotation `rotation`.
pub fn annotation_key(rotation: &str) -> String {
    format!("{CONSUMER_PREFIX}{rotation}")
}

/// The SecretRotations that annotated a pod template (the keys under [`CONSUMER_PREFIX`]).
pub fn rotations_of(template_annotations: Option<&BTreeMap<String, String>>) -> Vec<String> {
    template_annotations
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix(CONSUMER_PREFIX))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A hash of the Secret's content: changes with any value, reveals none (SHA-256 over the
/// sorted keys and values, 16 hex digits).
pub fn content_hash(secret: Option<&Secret>) -> String {
    let mut h = Sha256::new();
    for (k, v) in secret.and_then(|s| s.data.as_ref()).into_iter().flatten() {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Deployment, StatefulSet or DaemonSet, as far as a rotation cares.
pub trait Workload: kube::Resource + ResourceExt {
    const KIND: ConsumerKind;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>>;
    /// Whether every pod runs the current template and is available, and a word on it.
    fn rollout(&self) -> (bool, String);
}

/// The generation the controller of a workload has seen caught up with the spec.
fn caught_up(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.unwrap_or(0) >= generation.unwrap_or(0)
}

impl Workload for Deployment {
    const KIND: ConsumerKind = ConsumerKind::Deployment;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()
    }
    fn rollout(&self) -> (bool, String) {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let s = self.status.clone().unwrap_or_default();
        let (updated, total, available) = (
            s.updated_replicas.unwrap_or(0),
            s.replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        );
        // Pods on their way out still run their containers (a graceful shutdown, or a kubelet
        // slow to stop them) and may still use the old credentials; `replicas` leaves them
        // out. Kubernetes 1.35 counts them (older servers leave the field unset).
        let terminating = s.terminating_replicas.unwrap_or(0);
        let done = caught_up(self.metadata.generation, s.observed_generation)
            && updated >= want
            && total == updated
            && available >= want
            && terminating == 0;
        (
            done,
            format!(
                "{updated}/{want} updated, {available} available, {total} running, {terminating} terminating"
            ),
        )
    }
}

impl Workload for StatefulSet {
    const KIND: ConsumerKind = ConsumerKind::StatefulSet;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()
    }
    fn rollout(&self) -> (bool, String) {
        let spec = self.spec.as_ref();
        let want = spec.and_then(|s| s.replicas).unwrap_or(1);
        let on_delete = spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            == Some("OnDelete");
        let s = self.status.clone().unwrap_or_default();
        let (updated, ready) = (
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
        );
        let done = caught_up(self.metadata.generation, s.observed_generation)
            && updated >= want
            && ready >= want
            && s.current_revision.is_some()
            && s.current_revision == s.update_revision;
        let mut message = format!("{updated}/{want} updated, {ready} ready");
        if on_delete && !done {
            message.push_str(" (updateStrategy OnDelete: its pods must be deleted to roll)");
        }
        (done, message)
    }
}

impl Workload for DaemonSet {
    const KIND: ConsumerKind = ConsumerKind::DaemonSet;
    fn template_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()
    }
    fn rollout(&self) -> (bool, String) {
        let s = self.status.clone().unwrap_or_default();
        let want = s.desired_number_scheduled;
        let (updated, available) = (
            s.updated_number_scheduled.unwrap_or(0),
            s.number_available.unwrap_or(0),
        );
        let done = caught_up(
            self.metadata.generation,
            Some(s.observed_generation.unwrap_or(0)),
        ) && updated >= want
            && available >= want;
        (
            done,
            format!("{updated}/{want} updated, {available} available"),
        )
    }
}

/// One consumer as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: ConsumerKind,
    pub name: String,
    pub state: RolloutState,
    pub message: String,
}

/// The workloads of one kind a consumer entry names, among `all` (one namespace's), each with
/// its rollout for the Secret whose content hash is `hash`.
pub fn find<W: Workload>(
    consumer: &Consumer,
    all: &[std::sync::Arc<W>],
    rotation: &str,
    hash: &str,
) -> Vec<Seen> {
    if consumer.kind != W::KIND {
        return vec![];
    }
    let key = annotation_key(rotation);
    let seen = |w: &W| {
        let annotated =
            w.template_annotations().and_then(|a| a.get(&key)) == Some(&hash.to_owned());
        let (done, message) = w.rollout();
        Seen {
            kind: W::KIND,
            name: w.name_any(),
            state: match (annotated, done) {
                (false, _) => RolloutState::Pending,
                (true, false) => RolloutState::Rolling,
                (true, true) => RolloutState::Rolled,
            },
            message,
        }
    };
    match (&consumer.name, &consumer.selector) {
        (Some(name), _) => match all.iter().find(|w| &w.name_any() == name) {
            Some(w) => vec![seen(w)],
            None => vec![Seen {
                kind: W::KIND,
                name: name.clone(),
                state: RolloutState::NotFound,
                message: "not found".into(),
            }],
        },
        (None, Some(selector)) => all
            .iter()
            .filter(|w| {
                let labels = w.labels();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|w| seen(w))
            .collect(),
        (None, None) => vec![],
    }
}

/// The server-side apply body that asks a workload to roll: only the annotation of this
/// SecretRotation on its pod template.
pub fn roll_patch(kind: ConsumerKind, name: &str, rotation: &str, hash: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": format!("{kind:?}"),
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {annotation_key(rotation): hash}}}},
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};

    use super::*;

    fn deployment(name: &str, labels: &[(&str, &str)], hash: Option<&str>) -> Arc<Deployment> {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "generation": 2,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {}}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
        }))
        .unwrap();
        if let Some(h) = hash {
            d.spec
                .as_mut()
                .unwrap()
                .template
                .metadata
                .as_mut()
                .unwrap()
                .annotations = Some(BTreeMap::from([(annotation_key("rot"), h.to_owned())]));
        }
        Arc::new(d)
    }

    fn by_name(name: &str) -> Consumer {
        Consumer {
            kind: ConsumerKind::Deployment,
            name: Some(name.into()),
            selector: None,
        }
    }

    #[test]
    fn the_hash_follows_the_content_and_shows_none_of_it() {
        let secret = |v: &str| Secret {
            data: Some(BTreeMap::from([(
                "password".to_owned(),
                ByteString(v.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        let a = content_hash(Some(&secret("hunter2")));
        assert_eq!(a.len(), 16);
        assert_eq!(a, content_hash(Some(&secret("hunter2"))));
        assert_ne!(a, content_hash(Some(&secret("hunter3"))));
        assert!(!a.contains("hunter"));
        assert_ne!(content_hash(None), a);
    }

    #[test]
    fn consumers_are_pending_until_annotated_then_rolling_until_every_pod_is_new() {
        let all = vec![
            deployment("web", &[], None),
            deployment("api", &[], Some("h1")),
            deployment("old", &[], Some("h0")),
        ];
        let state = |name: &str| find(&by_name(name), &all, "rot", "h1")[0].state;
        assert_eq!(state("web"), RolloutState::Pending);
        assert_eq!(state("api"), RolloutState::Rolled);
        assert_eq!(
            state("old"),
            RolloutState::Pending,
            "annotated for an older value"
        );
        assert_eq!(state("gone"), RolloutState::NotFound);

        let mut rolling = (*deployment("api", &[], Some("h1"))).clone();
        rolling.metadata.generation = Some(3);
        assert_eq!(
            find(&by_name("api"), &[Arc::new(rolling.clone())], "rot", "h1")[0].state,
            RolloutState::Rolling,
            "the controller has not seen the new template yet"
        );
        rolling.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(3),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            find(&by_name("api"), &[Arc::new(rolling.clone())], "rot", "h1")[0].state,
            RolloutState::Rolling,
            "an old pod still runs"
        );
        rolling.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            terminating_replicas: Some(1),
            ..Default::default()
        });
        assert_eq!(
            find(&by_name("api"), &[Arc::new(rolling)], "rot", "h1")[0].state,
            RolloutState::Rolling,
            "an old pod is still stopping"
        );
    }

    #[test]
    fn a_selector_finds_every_workload_with_its_labels_and_only_of_its_kind() {
        let all = vec![
            deployment("a", &[("app", "shop"), ("tier", "web")], None),
            deployment("b", &[("app", "shop")], None),
            deployment("c", &[("app", "blog")], None),
        ];
        let consumer = Consumer {
            kind: ConsumerKind::Deployment,
            name: None,
            selector: Some(BTreeMap::from([("app".into(), "shop".into())])),
        };
        let names: Vec<String> = find(&consumer, &all, "rot", "h")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let other_kind = Consumer {
            kind: ConsumerKind::StatefulSet,
            ..consumer
        };
        assert!(find(&other_kind, &all, "rot", "h").is_empty());
    }

    #[test]
    fn a_statefulset_has_rolled_when_its_revisions_meet() {
        let mut s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "generation": 1},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "q", "template": {},
                     "updateStrategy": {"type": "OnDelete"}},
        }))
        .unwrap();
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas: 2,
            ready_replicas: Some(2),
            updated_replicas: Some(1),
            current_revision: Some("q-1".into()),
            update_revision: Some("q-2".into()),
            ..Default::default()
        });
        let (done, message) = s.rollout();
        assert!(!done);
        assert!(message.contains("OnDelete"), "{message}");
        let status = s.status.as_mut().unwrap();
        status.updated_replicas = Some(2);
        status.current_revision = Some("q-2".into());
        assert!(s.rollout().0);
    }

    #[test]
    fn the_roll_patch_sets_only_this_rotations_annotation() {
        assert_eq!(
            roll_patch(ConsumerKind::DaemonSet, "agent", "rot", "h1"),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent"},
                "spec": {"template": {"metadata": {"annotations": {"rotation.pgpilot.io/rot": "h1"}}}}})
        );
        let annotations = BTreeMap::from([
            ("rotation.pgpilot.io/rot".to_owned(), "h".to_owned()),
            ("other".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(rotations_of(Some(&annotations)), ["rot"]);
    }
}
