//! The objects waiting for a reconcile. kube-runtime keeps its scheduler's queue to itself,
//! so the runner notes each object a watch wakes and clears it when that object's reconcile
//! starts: the depth of the queue and each object's wait can then be measured. Requeues after
//! a delay are timers, not waits, and are not counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::runner::Watched;

/// Objects of one controller and namespace that a change woke and whose reconcile has not
/// started yet.
pub struct Waiting<K: Watched> {
    since: Mutex<HashMap<ObjectRef<K>, Instant>>,
    /// The controller's own cache: kube-runtime drops a wake of an object it does not hold.
    objects: Store<K>,
}

impl<K: Watched> Waiting<K> {
    pub fn new(objects: Store<K>) -> Self {
        Self {
            since: Mutex::default(),
            objects,
        }
    }

    /// Something woke `key`; a wake before its reconcile started changes nothing (the
    /// scheduler merges them too).
    pub fn woken(&self, key: ObjectRef<K>) {
        if self.objects.get(&key).is_none() {
            return;
        }
        if let Ok(mut since) = self.since.lock() {
            since.entry(key).or_insert_with(Instant::now);
        }
    }

    /// A child changed: wakes each owner of `K`'s kind, as kube-runtime's `owns` does.
    pub fn child_changed<C: ResourceExt>(&self, child: &C) {
        let namespace = child.namespace();
        for owner in child.owner_references() {
            if let Some(key) = ObjectRef::from_owner_ref(namespace.as_deref(), owner, ()) {
                self.woken(key);
            }
        }
    }

    /// `key`'s reconcile starts: how long it waited, if a change woke it.
    pub fn started(&self, key: &ObjectRef<K>) -> Option<Duration> {
        let since = self.since.lock().ok()?.remove(key)?;
        Some(since.elapsed())
    }
}

/// The depth of one queue, read when metrics are scraped.
pub trait QueueDepth: Send + Sync {
    fn depth(&self) -> usize;
}

impl<K: Watched> QueueDepth for Waiting<K> {
    /// Objects deleted while they waited are forgotten here (their reconcile never starts).
    fn depth(&self) -> usize {
        let Ok(mut since) = self.since.lock() else {
            return 0;
        };
        since.retain(|key, _| self.objects.get(key).is_some());
        since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher::Event;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn key(name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within("ns")
    }

    fn queue(names: &[&str]) -> (Waiting<ConfigMap>, Writer<ConfigMap>) {
        let (store, mut writer) = reflector::store();
        for name in names {
            writer.apply_watcher_event(&Event::Apply(config_map(name)));
        }
        (Waiting::new(store), writer)
    }

    #[test]
    fn a_woken_object_waits_once_until_its_reconcile_starts() {
        let (waiting, _writer) = queue(&["a", "b"]);
        waiting.woken(key("a"));
        waiting.woken(key("a"));
        waiting.woken(key("b"));
        assert_eq!(waiting.depth(), 2);
        assert!(waiting.started(&key("a")).is_some());
        assert_eq!(waiting.depth(), 1);
        // A reconcile nothing woke (a timer, or a second start) waited for nothing.
        assert_eq!(waiting.started(&key("a")), None);
        waiting.woken(key("a"));
        assert_eq!(waiting.depth(), 2);
    }

    #[test]
    fn objects_the_cache_does_not_hold_do_not_wait() {
        let (waiting, mut writer) = queue(&["a"]);
        waiting.woken(key("gone"));
        assert_eq!(waiting.depth(), 0);
        waiting.woken(key("a"));
        writer.apply_watcher_event(&Event::Delete(config_map("a")));
        assert_eq!(
            waiting.depth(),
            0,
            "deleted while waiting: never reconciled"
        );
    }

    #[test]
    fn a_child_wakes_its_owners_of_the_controllers_kind_only() {
        let (waiting, _writer) = queue(&["db", "other"]);
        let owner = |kind: &str, api_version: &str, name: &str| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "uid".into(),
            ..OwnerReference::default()
        };
        let child = StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("ns".into()),
                owner_references: Some(vec![
                    owner("ConfigMap", "v1", "db"),
                    owner("Deployment", "apps/v1", "other"),
                ]),
                ..ObjectMeta::default()
            },
            ..StatefulSet::default()
        };
        waiting.child_changed(&child);
        assert_eq!(waiting.depth(), 1);
        assert!(waiting.started(&key("db")).is_some());
    }
}
