//! Decisions about the running instances, from what Patroni reports: whether the dynamic
//! configuration needs a patch, how far the StatefulSet may shrink now, which replica needs
//! re-initializing. Pure; the reconcile carries them out.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::patroni::{ClusterView, MemberStatus};

/// What the reconcile knows of one instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance {
    pub pod: String,
    pub ordinal: i32,
    pub ip: Option<String>,
    pub ready: bool,
    /// Seconds the pod has not been Ready (0 when Ready or unknown).
    pub unready_for_secs: i64,
    /// The status document of this member (GET /health), when it answered.
    pub member: Option<MemberStatus>,
}

/// Patroni's view of every instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Members {
    pub instances: Vec<Instance>,
    /// GET /cluster from one member (the primary when it answers).
    pub cluster: Option<ClusterView>,
}

impl Members {
    /// Role of `pod` as the DCS sees it (leader / sync_standby / replica), else as it says.
    pub fn role(&self, pod: &str) -> Option<String> {
        self.cluster
            .as_ref()
            .and_then(|c| c.members.iter().find(|m| m.name == pod))
            .and_then(|m| m.role.clone())
            .or_else(|| {
                self.instances
                    .iter()
                    .find(|i| i.pod == pod)
                    .and_then(|i| i.member.as_ref()?.role.clone())
            })
            .map(|r| crate::patroni::normalize_role(&r))
    }

    /// State of `pod` as the DCS sees it (`streaming` for a following replica), else as it
    /// says itself.
    pub fn state(&self, pod: &str) -> Option<String> {
        self.cluster
            .as_ref()
            .and_then(|c| c.members.iter().find(|m| m.name == pod))
            .and_then(|m| m.state.clone())
            .or_else(|| {
                self.instances
                    .iter()
                    .find(|i| i.pod == pod)
                    .and_then(|i| i.member.as_ref()?.state.clone())
            })
    }

    /// Timeline of `pod`, as the DCS sees it, else as it says itself.
    pub fn timeline(&self, pod: &str) -> Option<i64> {
        self.cluster
            .as_ref()
            .and_then(|c| c.members.iter().find(|m| m.name == pod))
            .and_then(|m| m.timeline)
            .or_else(|| {
                self.instances
                    .iter()
                    .find(|i| i.pod == pod)
                    .and_then(|i| i.member.as_ref()?.timeline)
            })
    }

    /// IP of `pod`, to reach its Patroni.
    pub fn ip(&self, pod: &str) -> Option<String> {
        self.instances
            .iter()
            .find(|i| i.pod == pod)
            .and_then(|i| i.ip.clone())
    }

    /// The primary's pod name and IP.
    pub fn primary_address(&self) -> Option<(String, String)> {
        let p = self.primary()?;
        Some((p.pod.clone(), p.ip.clone()?))
    }

    pub fn primary(&self) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| self.role(&i.pod).as_deref() == Some("primary") && i.ip.is_some())
    }

    fn lag(&self, pod: &str) -> Option<i64> {
        self.cluster
            .as_ref()?
            .members
            .iter()
            .find(|m| m.name == pod)?
            .lag_bytes()
    }

    /// Lag of each member in bytes, as GET /cluster reported it.
    pub fn lags(&self) -> BTreeMap<String, i64> {
        self.instances
            .iter()
            .filter_map(|i| Some((i.pod.clone(), self.lag(&i.pod)?)))
            .collect()
    }
}

/// The JSON merge patch that makes Patroni's dynamic configuration `live` carry `desired`,
/// or `None` when it already does. Parameters pgpilot no longer wants are removed (`null`):
/// the spec owns the whole `postgresql.parameters` map.
pub fn config_patch(desired: &Value, live: &Value) -> Option<Value> {
    fn diff(desired: &Value, live: &Value, path: &[&str]) -> Option<Value> {
        match (desired, live) {
            (Value::Object(d), Value::Object(l)) => {
                let mut out = Map::new();
                for (k, dv) in d {
                    let lv = l.get(k).unwrap_or(&Value::Null);
                    let mut p = path.to_vec();
                    p.push(k);
                    if let Some(v) = diff(dv, lv, &p) {
                        out.insert(k.clone(), v);
                    }
                }
                if path == ["postgresql", "parameters"] {
                    for k in l.keys().filter(|k| !d.contains_key(*k)) {
                        out.insert(k.clone(), Value::Null);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            // Patroni keeps numbers it was given as strings, and the reverse: compare as text.
            (d, l) if same_scalar(d, l) => None,
            (d, _) => Some(d.clone()),
        }
    }
    diff(desired, live, &[])
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    a == b || (text(a).is_some() && text(a) == text(b))
}

/// How far the StatefulSet may go now, and the switchover that must come first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePlan {
    pub replicas: i32,
    /// Move the primary here before shrinking: it sits on an ordinal that would go away.
    pub switchover_to: Option<String>,
}

/// Scaling down removes the highest ordinals. The primary is never among them: when it
/// would be, the StatefulSet keeps its size until a switchover moved the primary to a
/// healthy instance that stays (a synchronous standby first, then the least lagging; in
/// synchronous mode Patroni accepts only a synchronous standby). Without a known primary
/// nothing shrinks.
pub fn scale(desired: i32, current: i32, members: &Members, synchronous: bool) -> ScalePlan {
    if desired >= current {
        return ScalePlan {
            replicas: desired,
            switchover_to: None,
        };
    }
    let Some(primary) = members.primary() else {
        return ScalePlan {
            replicas: current,
            switchover_to: None,
        };
    };
    if primary.ordinal < desired {
        return ScalePlan {
            replicas: desired,
            switchover_to: None,
        };
    }
    let candidate = successor(members, synchronous, |i| i.ordinal < desired);
    ScalePlan {
        replicas: current,
        switchover_to: candidate.map(|c| c.pod.clone()),
    }
}

/// Bytes a successor may lag when chosen; Patroni's clean shutdown of the old primary sends
/// it the rest before the promotion.
const MAX_SUCCESSOR_LAG: i64 = 1 << 20;

/// The healthy replica `keep` accepts that should take over from the primary: a synchronous
/// standby first (in synchronous mode Patroni accepts only one), then the least lagging.
fn successor(
    members: &Members,
    synchronous: bool,
    keep: impl Fn(&Instance) -> bool,
) -> Option<&Instance> {
    let primary = members.primary()?;
    let lags = members.lags();
    let timeline = members.timeline(&primary.pod);
    // Only a replica that follows this primary now: streaming on its timeline, a known and
    // small lag. A replica still restarting to follow a new leader says `running`, and a
    // switchover to it would lose what it has not received.
    members
        .instances
        .iter()
        .filter(|i| keep(i) && i.ready && i.pod != primary.pod)
        .filter(|i| members.state(&i.pod).as_deref() == Some("streaming"))
        .filter(|i| members.timeline(&i.pod) == timeline)
        .filter(|i| lags.get(&i.pod).is_some_and(|l| *l <= MAX_SUCCESSOR_LAG))
        .map(|i| {
            let role = members.role(&i.pod);
            (
                i,
                role.as_deref()
                    .is_some_and(pgpilot_api::cluster::is_synchronous_standby),
            )
        })
        .filter(|(_, sync)| *sync || !synchronous)
        .min_by_key(|(i, sync)| {
            (
                !sync,
                lags.get(&i.pod).copied().unwrap_or(i64::MAX),
                i.ordinal,
            )
        })
        .map(|(i, _)| i)
}

/// The next step of a rolling restart for parameters that only take effect on restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Nothing pending.
    Done,
    /// Pending, but an instance is not healthy: wait rather than restart another one.
    Wait,
    /// Restart this instance now.
    Instance(String),
    /// Only the primary is left: hand its role to this replica first, then restart it as a
    /// replica (a switchover is a shorter write gap than a primary restart).
    SwitchoverTo(String),
}

/// Replicas first, one at a time, each only while every instance is healthy; the primary
/// last, after a switchover when there is a replica to take over.
pub fn restart(members: &Members, synchronous: bool) -> Restart {
    let pending: Vec<&Instance> = members
        .instances
        .iter()
        .filter(|i| i.member.as_ref().is_some_and(|m| m.pending_restart))
        .collect();
    if pending.is_empty() {
        return Restart::Done;
    }
    let healthy = |i: &Instance| {
        i.ready
            && matches!(
                members.state(&i.pod).as_deref(),
                Some("running" | "streaming")
            )
    };
    let Some(primary) = members.primary() else {
        return Restart::Wait;
    };
    if !members.instances.iter().all(healthy) {
        return Restart::Wait;
    }
    if let Some(replica) = pending.iter().rev().find(|i| i.pod != primary.pod) {
        return Restart::Instance(replica.pod.clone());
    }
    match successor(members, synchronous, |_| true) {
        Some(to) => Restart::SwitchoverTo(to.pod.clone()),
        None => Restart::Instance(primary.pod.clone()),
    }
}

/// Patroni states of a replica that is not following and will not recover by itself.
const STUCK: &[&str] = &["start failed", "crashed", "stopped"];

/// Replicas to re-initialize from the primary: not Ready for `after_secs`, in a state
/// Patroni does not leave by itself, while a primary serves. Never the primary.
pub fn reinitialize(members: &Members, after_secs: i64) -> Vec<String> {
    let Some(primary) = members.primary() else {
        return vec![];
    };
    members
        .instances
        .iter()
        .filter(|i| i.pod != primary.pod && !i.ready && i.unready_for_secs >= after_secs)
        .filter(|i| {
            i.member
                .as_ref()
                .and_then(|m| m.state.as_deref())
                .is_some_and(|s| STUCK.contains(&s))
        })
        .map(|i| i.pod.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patroni::ClusterMember;
    use serde_json::json;

    fn instance(ordinal: i32, state: &str, ready: bool) -> Instance {
        Instance {
            pod: format!("db-{ordinal}"),
            ordinal,
            ip: Some(format!("10.245.0.{}", 10 + ordinal)),
            ready,
            unready_for_secs: if ready { 0 } else { 120 },
            member: Some(MemberStatus {
                state: Some(state.into()),
                ..Default::default()
            }),
        }
    }

    fn members(roles: &[(&str, Option<i64>)], instances: Vec<Instance>) -> Members {
        Members {
            cluster: Some(ClusterView {
                members: roles
                    .iter()
                    .enumerate()
                    .map(|(n, (role, lag))| ClusterMember {
                        name: format!("db-{n}"),
                        role: Some((*role).into()),
                        lag: lag.map(Value::from),
                        ..Default::default()
                    })
                    .collect(),
                pause: false,
            }),
            instances,
        }
    }

    fn three(roles: [&str; 3]) -> Members {
        let state = |r: &str| {
            if r == "leader" {
                "running"
            } else {
                "streaming"
            }
        };
        members(
            &[
                (roles[0], Some(0)),
                (roles[1], Some(0)),
                (roles[2], Some(4096)),
            ],
            (0..3)
                .map(|o| instance(o, state(roles[o as usize]), true))
                .collect(),
        )
    }

    #[test]
    fn a_converged_configuration_needs_no_patch() {
        let desired = json!({"ttl": 20, "synchronous_mode": true,
            "postgresql": {"parameters": {"max_connections": "200", "wal_level": "replica"}}});
        let live = json!({"ttl": 20, "synchronous_mode": true, "check_timeline": true,
            "postgresql": {"parameters": {"max_connections": 200, "wal_level": "replica"}}});
        assert_eq!(config_patch(&desired, &live), None);
    }

    #[test]
    fn a_changed_value_and_a_dropped_parameter_are_patched() {
        let desired = json!({"ttl": 20, "pause": true,
            "postgresql": {"parameters": {"work_mem": "8MB"}}});
        let live = json!({"ttl": 30, "pause": false,
            "postgresql": {"parameters": {"work_mem": "8MB", "shared_buffers": "1GB"}}});
        assert_eq!(
            config_patch(&desired, &live),
            Some(json!({"ttl": 20, "pause": true,
                "postgresql": {"parameters": {"shared_buffers": null}}}))
        );
    }

    #[test]
    fn growing_or_keeping_the_size_needs_no_switchover() {
        let m = three(["leader", "sync_standby", "replica"]);
        assert_eq!(
            scale(3, 1, &m, false),
            ScalePlan {
                replicas: 3,
                switchover_to: None
            }
        );
        assert_eq!(scale(1, 3, &m, false).replicas, 1, "primary db-0 stays");
    }

    #[test]
    fn the_primary_on_a_removed_ordinal_moves_first_to_the_sync_standby() {
        let m = three(["replica", "sync_standby", "leader"]);
        assert_eq!(
            scale(2, 3, &m, false),
            ScalePlan {
                replicas: 3,
                switchover_to: Some("db-1".into())
            }
        );
        // Down to one: only db-0 stays, so it is the candidate...
        assert_eq!(
            scale(1, 3, &m, false).switchover_to.as_deref(),
            Some("db-0")
        );
        // ...unless Patroni is in synchronous mode: then only a synchronous standby can take
        // over, and db-1 goes away too; the StatefulSet waits.
        assert_eq!(
            scale(1, 3, &m, true),
            ScalePlan {
                replicas: 3,
                switchover_to: None
            }
        );
        assert_eq!(scale(2, 3, &m, true).switchover_to.as_deref(), Some("db-1"));
        // In quorum mode every voter may take over, so db-0 can.
        let quorum = three(["quorum_standby", "quorum_standby", "leader"]);
        assert_eq!(
            scale(1, 3, &quorum, true).switchover_to.as_deref(),
            Some("db-0")
        );
    }

    #[test]
    fn only_a_replica_that_follows_the_primary_now_can_succeed_it() {
        let mut m = three(["replica", "replica", "leader"]);
        // db-0 restarts to follow the new leader: `running`, not `streaming`.
        m.instances[0] = instance(0, "running", true);
        assert_eq!(scale(1, 3, &m, false).switchover_to, None);
        // Streaming, but still on the old timeline.
        let mut m = three(["replica", "replica", "leader"]);
        for (i, tl) in m.instances.iter_mut().zip([1, 2, 2]) {
            i.member.as_mut().unwrap().timeline = Some(tl);
        }
        assert_eq!(scale(1, 3, &m, false).switchover_to, None);
        assert_eq!(
            scale(2, 3, &m, false).switchover_to.as_deref(),
            Some("db-1")
        );
        // Lag unknown (the DCS says "unknown") or too large.
        let mut m = three(["replica", "replica", "leader"]);
        m.cluster.as_mut().unwrap().members[0].lag = Some(Value::from("unknown"));
        assert_eq!(scale(1, 3, &m, false).switchover_to, None);
        m.cluster.as_mut().unwrap().members[0].lag = Some(Value::from(64 << 20));
        assert_eq!(scale(1, 3, &m, false).switchover_to, None);
    }

    #[test]
    fn without_a_healthy_candidate_or_a_primary_nothing_shrinks() {
        let mut m = three(["replica", "replica", "leader"]);
        m.instances[0] = instance(0, "start failed", false);
        assert_eq!(
            scale(1, 3, &m, false),
            ScalePlan {
                replicas: 3,
                switchover_to: None
            }
        );
        let no_primary = three(["replica", "replica", "replica"]);
        assert_eq!(scale(1, 3, &no_primary, false).replicas, 3);
    }

    fn pending(m: &mut Members, pods: &[i32]) {
        for i in m.instances.iter_mut() {
            if let Some(member) = i.member.as_mut() {
                member.pending_restart = pods.contains(&i.ordinal);
            }
        }
    }

    #[test]
    fn a_rolling_restart_takes_replicas_one_by_one_and_the_primary_last() {
        let mut m = three(["leader", "sync_standby", "replica"]);
        assert_eq!(restart(&m, true), Restart::Done);
        pending(&mut m, &[0, 1, 2]);
        assert_eq!(restart(&m, true), Restart::Instance("db-2".into()));
        pending(&mut m, &[0, 1]);
        assert_eq!(restart(&m, true), Restart::Instance("db-1".into()));
        pending(&mut m, &[0]);
        assert_eq!(restart(&m, true), Restart::SwitchoverTo("db-1".into()));
        // While an instance is down, nothing else restarts.
        pending(&mut m, &[0, 1]);
        m.instances[2] = instance(2, "starting", false);
        m.instances[2].member.as_mut().unwrap().pending_restart = false;
        assert_eq!(restart(&m, true), Restart::Wait);
    }

    #[test]
    fn a_single_instance_restarts_in_place() {
        let mut m = members(&[("leader", None)], vec![instance(0, "running", true)]);
        pending(&mut m, &[0]);
        assert_eq!(restart(&m, false), Restart::Instance("db-0".into()));
    }

    #[test]
    fn only_stuck_replicas_are_reinitialized_and_only_after_a_while() {
        let mut m = three(["leader", "replica", "replica"]);
        m.instances[1] = instance(1, "start failed", false);
        m.instances[2] = instance(2, "starting", false);
        assert_eq!(reinitialize(&m, 60), vec!["db-1".to_owned()]);
        assert!(reinitialize(&m, 300).is_empty(), "not yet");
        // A stuck primary is a failover for Patroni, not a re-init.
        let mut m = three(["leader", "replica", "replica"]);
        m.instances[0] = instance(0, "crashed", false);
        assert!(reinitialize(&m, 60).is_empty());
    }
}
