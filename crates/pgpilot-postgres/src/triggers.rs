//! Which changes of watched objects wake the controller. Patroni writes to the pods and to
//! its DCS ConfigMaps on every loop (WAL positions, the leader lock's renewal); the
//! controller asks Patroni's REST API when it reconciles, so those writes alone need no
//! reconcile. What Patroni decides (the leader, the synchronous standby) does.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};

/// Patroni's member record on its pod, rewritten every loop while WAL moves.
const PATRONI_MEMBER_ANNOTATION: &str = "status";

/// Annotations of Patroni's DCS ConfigMaps that carry decisions (`leader` on `-leader` and
/// `-sync`, `sync_standby` on `-sync`, `initialize` and `config` on `-config`); the others
/// (`renewTime`, `optime`, `slots`, …) change every loop.
const PATRONI_DECISIONS: &[&str] = &["leader", "sync_standby", "initialize", "config"];

/// A hash of what the controller acts on in a pod: labels (the role Patroni gives it),
/// annotations but Patroni's member record, deletion, address, phase, conditions (readiness)
/// and the containers' readiness, restarts and state.
pub fn pod(pod: &Pod) -> Option<u64> {
    let mut h = DefaultHasher::new();
    pod.metadata.labels.hash(&mut h);
    annotations_except(&pod.metadata.annotations, PATRONI_MEMBER_ANNOTATION).hash(&mut h);
    member_decisions(&pod.metadata.annotations).hash(&mut h);
    pod.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(s) = &pod.status {
        (&s.pod_ip, &s.phase).hash(&mut h);
        for c in s.conditions.iter().flatten() {
            (&c.type_, &c.status).hash(&mut h);
        }
        for c in s.container_statuses.iter().flatten() {
            (&c.name, c.ready, c.restart_count, c.started).hash(&mut h);
            let state = c.state.as_ref();
            (
                state.is_some_and(|s| s.running.is_some()),
                state.is_some_and(|s| s.terminated.is_some()),
                state
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_ref()),
            )
                .hash(&mut h);
        }
    }
    Some(h.finish())
}

/// A hash of what the controller acts on in a ConfigMap: its data and labels (drift of the
/// ConfigMaps it applies) and Patroni's decisions.
pub fn config_map(cm: &ConfigMap) -> Option<u64> {
    let mut h = DefaultHasher::new();
    cm.data.hash(&mut h);
    cm.metadata.labels.hash(&mut h);
    cm.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(a) = &cm.metadata.annotations {
        for key in PATRONI_DECISIONS {
            a.get(*key).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Of Patroni's member record: what the member is and does, not where its WAL stands. A
/// replica that starts streaming changes `replication_state`.
fn member_decisions(annotations: &Option<BTreeMap<String, String>>) -> Vec<String> {
    let record: Option<serde_json::Value> = annotations
        .as_ref()
        .and_then(|a| a.get(PATRONI_MEMBER_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok());
    ["role", "state", "replication_state", "timeline"]
        .iter()
        .map(|k| {
            record
                .as_ref()
                .and_then(|r| r.get(*k))
                .map(|v| v.to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn annotations_except<'a>(
    annotations: &'a Option<BTreeMap<String, String>>,
    skip: &str,
) -> Vec<(&'a String, &'a String)> {
    annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != skip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_from(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const POD: &str = "
metadata:
  name: db-0
  labels: {pgpilot.io/role: replica}
  annotations: {status: '{\"role\": \"replica\", \"state\": \"running\", \"xlog_location\": 100}'}
status:
  podIP: 10.0.0.5
  phase: Running
  conditions: [{type: Ready, status: 'True'}]
  containerStatuses:
  - {name: postgres, ready: true, restartCount: 0, started: true, image: x, imageID: y, state: {running: {}}}
";

    #[test]
    fn patroni_rewriting_its_member_record_wakes_nobody() {
        let before = pod_from(POD);
        let after = pod_from(&POD.replace("100", "200"));
        assert_eq!(pod(&before), pod(&after));
    }

    #[test]
    fn a_new_role_readiness_or_restart_wakes_the_controller() {
        let before = pod(&pod_from(POD));
        for changed in [
            POD.replace("role: replica", "role: primary"),
            POD.replace("status: 'True'", "status: 'False'"),
            POD.replace("restartCount: 0", "restartCount: 1"),
            POD.replace("10.0.0.5", "10.0.0.6"),
            POD.replace(
                "annotations: {",
                "annotations: {kubectl.kubernetes.io/restartedAt: now, ",
            ),
            POD.replace(
                "\"state\": \"running\"",
                "\"state\": \"running\", \"replication_state\": \"streaming\"",
            ),
        ] {
            assert_ne!(before, pod(&pod_from(&changed)), "{changed}");
        }
    }

    const SYNC: &str = "
metadata:
  name: db-sync
  annotations: {leader: db-0, sync_standby: db-1, renewTime: '1'}
";

    #[test]
    fn the_leader_lock_renewal_wakes_nobody_but_a_new_synchronous_standby_does() {
        let cm = |y: &str| config_map(&serde_yaml::from_str(y).unwrap());
        assert_eq!(
            cm(SYNC),
            cm(&SYNC.replace("renewTime: '1'", "renewTime: '2'"))
        );
        assert_ne!(
            cm(SYNC),
            cm(&SYNC.replace("sync_standby: db-1", "sync_standby: db-2"))
        );
        assert_ne!(cm(SYNC), cm(&SYNC.replace("leader: db-0", "leader: db-1")));
    }
}
