//! Decisions about the running instances, from what Kubernetes and Patroni report. Pure: the
//! reconcile observes, asks [`next_step`] for the one disruptive action to take now, carries
//! it out and observes again on the next reconcile — never two disruptive actions on one
//! snapshot of the cluster.

use serde_json::{Map, Value};

use pgpilot_postgres::members::{Instance, Members, successor};
use pgpilot_postgres::roll::{Ordered, Roll, ordered, roll};

/// The JSON merge patch that makes Patroni's dynamic configuration `live` carry `desired`,
/// or `None` when it already does. Parameters pgpilot no longer wants are removed (`null`):
/// the spec owns the whole `postgresql.parameters` map (and `recovery_conf`, `spec.backup`'s)
/// — except the `held` ones, refused in the spec, whose live value stays as it is.
pub fn config_patch(desired: &Value, live: &Value, held: &[&str]) -> Option<Value> {
    fn diff(desired: &Value, live: &Value, path: &[&str], held: &[&str]) -> Option<Value> {
        match (desired, live) {
            (Value::Object(d), Value::Object(l)) => {
                let mut out = Map::new();
                let parameters = path == ["postgresql", "parameters"];
                let is_held =
                    |k: &str| parameters && held.iter().any(|h| h.eq_ignore_ascii_case(k));
                // A held parameter is left as it runs: neither removed nor set to a default.
                for (k, dv) in d.iter().filter(|(k, _)| !is_held(k)) {
                    let lv = l.get(k).unwrap_or(&Value::Null);
                    let mut p = path.to_vec();
                    p.push(k);
                    if let Some(v) = diff(dv, lv, &p, held) {
                        out.insert(k.clone(), v);
                    }
                }
                if parameters {
                    for k in l.keys().filter(|k| !d.contains_key(*k) && !is_held(k)) {
                        out.insert(k.clone(), Value::Null);
                    }
                }
                // The restore command goes with spec.backup.
                if path == ["postgresql"]
                    && l.contains_key("recovery_conf")
                    && !d.contains_key("recovery_conf")
                {
                    out.insert("recovery_conf".into(), Value::Null);
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            // Patroni keeps numbers it was given as strings, and the reverse: compare as text.
            (d, l) if same_scalar(d, l) => None,
            (d, _) => Some(d.clone()),
        }
    }
    diff(desired, live, &[], held)
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
/// synchronous mode Patroni accepts only a synchronous standby). Without a primary that
/// serves ([`Members::serving_primary`]: not one still promoting) nothing shrinks.
pub fn scale(desired: i32, current: i32, members: &Members, synchronous: bool) -> ScalePlan {
    if desired >= current {
        return ScalePlan {
            replicas: desired,
            switchover_to: None,
        };
    }
    let Some(primary) = members.serving_primary() else {
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

/// [`scale`] under the upgrade controller's instance limit (`pgpilot.io/instance-limit`): down
/// to `1` like any scale-down (the primary moves to ordinal 0 first); `0` only from there, so
/// the primary stops last, alone, and nothing takes over its role — once it serves as the
/// primary, so that it shuts down out of recovery (what `pg_upgrade` needs).
pub fn scale_limited(
    desired: i32,
    limit: Option<i32>,
    current: i32,
    members: &Members,
    synchronous: bool,
) -> ScalePlan {
    let stopped = ScalePlan {
        replicas: 0,
        switchover_to: None,
    };
    match limit {
        Some(0) if current == 0 => stopped,
        Some(0) if current == 1 => {
            if members.serving_primary().is_some_and(|p| p.ordinal == 0) {
                stopped
            } else {
                ScalePlan {
                    replicas: 1,
                    switchover_to: None,
                }
            }
        }
        Some(l) => scale(desired.min(l.max(1)), current, members, synchronous),
        None => scale(desired, current, members, synchronous),
    }
}

/// What `Progressing` says while the instance limit keeps instances stopped (a major
/// upgrade), unless a step of the plan says more; `by` names who set it.
pub fn limited_progress(desired: i32, limit: Option<i32>, by: Option<&str>) -> Option<Progress> {
    let limit = limit.filter(|l| *l < desired)?;
    let by = by.map_or_else(String::new, |u| format!(" by upgrade {u}"));
    Some(Progress {
        moving: true,
        reason: "InstancesLimited",
        message: format!(
            "at most {limit} of {desired} instances run: pgpilot.io/instance-limit is set{by}; the volumes stay"
        ),
    })
}

/// What the plan needs besides Patroni's view of the members.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub members: &'a Members,
    /// Instances the StatefulSet has now.
    pub replicas: i32,
    /// The revision new pods get, once the StatefulSet controller has seen the latest spec.
    pub update_revision: Option<&'a str>,
    /// Whether Patroni only promotes a synchronous standby.
    pub synchronous: bool,
    /// What holds restarts, replacements and re-clones (`spec.maintenance`, a paused
    /// upgrade), in words.
    pub hold: Option<String>,
    /// The switchover a scale-down waits for ([`scale`]).
    pub scale_switchover: Option<&'a str>,
}

/// Why the primary moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    ScaleDown,
    RollingUpdate,
    Restart,
}

/// The one disruptive action of a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Hand the primary role to `to`.
    Switchover {
        to: String,
        why: Why,
    },
    /// Evict a pod that runs an old revision of the pod template; the StatefulSet
    /// recreates it from the new one. `role` is what it is now (`replica` or `primary`).
    Replace {
        pod: String,
        role: &'static str,
    },
    /// Patroni restarts PostgreSQL in the pod (parameters that need a restart).
    Restart {
        pod: String,
    },
    /// Clone a replica stuck in a failed state again from the primary.
    Reinitialize {
        pod: String,
    },
}

impl Step {
    /// What the step does, for the reconcile's span: `switchover to db-1`, `replace db-0
    /// (replica)`, `nothing`.
    pub fn describe(&self) -> String {
        match self {
            Step::Nothing => "nothing".to_owned(),
            Step::Switchover { to, .. } => format!("switchover to {to}"),
            Step::Replace { pod, role } => format!("replace {pod} ({role})"),
            Step::Restart { pod } => format!("restart {pod}"),
            Step::Reinitialize { pod } => format!("reinitialize {pod}"),
        }
    }
}

/// What `Progressing` says while a roll or a rolling restart is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// False when the roll stopped by itself and needs someone to look.
    pub moving: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The next step, and what to say about the work it is part of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub progress: Option<Progress>,
}

/// A replica stuck in a failed state this long is cloned again from the primary.
pub const REINITIALIZE_AFTER_SECS: i64 = 60;

/// In order: a switchover a scale-down waits for; then, outside maintenance, a stuck replica
/// re-cloned, one step of a pod roll, one step of a rolling restart.
pub fn next_step(f: &Facts<'_>) -> Decision {
    let decided = |step| Decision {
        step,
        progress: None,
    };
    if let Some(to) = f.scale_switchover {
        return decided(Step::Switchover {
            to: to.to_owned(),
            why: Why::ScaleDown,
        });
    }
    let roll = roll(f.members, f.replicas, f.update_revision, f.synchronous);
    if let Some(why) = &f.hold {
        let progress = (roll != Roll::Done).then(|| Progress {
            moving: false,
            reason: "RollingUpdateHeld",
            message: format!("pods run an old revision; {why} holds their replacement"),
        });
        return Decision {
            step: Step::Nothing,
            progress,
        };
    }
    if let Some(pod) = reinitialize(f.members, REINITIALIZE_AFTER_SECS)
        .into_iter()
        .next()
    {
        return decided(Step::Reinitialize { pod });
    }
    let progress = |moving, reason, message| {
        Some(Progress {
            moving,
            reason,
            message,
        })
    };
    match roll {
        Roll::Done => {}
        Roll::Stalled(message) => {
            return Decision {
                step: Step::Nothing,
                progress: progress(false, "RollingUpdateStalled", message),
            };
        }
        Roll::Next(next, done) => {
            let (step, message) = match next {
                Ordered::Wait(why) => (Step::Nothing, why),
                Ordered::Instance(pod) => {
                    let role = if f.members.primary().is_some_and(|p| p.pod == pod) {
                        "primary"
                    } else {
                        "replica"
                    };
                    let message = format!("replacing {pod} ({role})");
                    (Step::Replace { pod, role }, message)
                }
                Ordered::SwitchoverTo(to) => {
                    let message = format!("switching over to {to}, then replacing the old primary");
                    let step = Step::Switchover {
                        to,
                        why: Why::RollingUpdate,
                    };
                    (step, message)
                }
                Ordered::Done => (Step::Nothing, String::new()),
            };
            let message = format!(
                "{message}; {done} of {} instances run the new pod template",
                f.members.instances.len()
            );
            return Decision {
                step,
                progress: progress(true, "RollingUpdate", message),
            };
        }
    }
    let (step, message) = match restart(f.members, f.replicas, f.synchronous) {
        Ordered::Done => return decided(Step::Nothing),
        Ordered::Wait(why) => (Step::Nothing, why),
        Ordered::Instance(pod) => {
            let message = format!("restarting {pod}");
            (Step::Restart { pod }, message)
        }
        Ordered::SwitchoverTo(to) => {
            let message = format!("switching over to {to}, then restarting the old primary");
            let step = Step::Switchover {
                to,
                why: Why::Restart,
            };
            (step, message)
        }
    };
    Decision {
        step,
        progress: progress(true, "RollingRestart", message),
    }
}

/// The rolling restart Patroni asks for when parameters changed that need one; `replicas`
/// instances must exist (a lost pod is not in `members`).
pub fn restart(members: &Members, replicas: i32, synchronous: bool) -> Ordered {
    let pending = |i: &Instance| i.member.as_ref().is_some_and(|m| m.pending_restart);
    ordered(members, replicas, pending, |_| true, synchronous)
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
    use pgpilot_postgres::members::fixtures::{instance, members, three};
    use pgpilot_postgres::roll::ROLL_STALL_SECS;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_converged_configuration_needs_no_patch() {
        let desired = json!({"ttl": 20, "synchronous_mode": true,
            "postgresql": {"parameters": {"max_connections": "200", "wal_level": "replica"}}});
        let live = json!({"ttl": 20, "synchronous_mode": true, "check_timeline": true,
            "postgresql": {"parameters": {"max_connections": 200, "wal_level": "replica"}}});
        assert_eq!(config_patch(&desired, &live, &[]), None);
    }

    #[test]
    fn a_changed_value_and_a_dropped_parameter_are_patched() {
        let desired = json!({"ttl": 20, "pause": true,
            "postgresql": {"parameters": {"work_mem": "8MB"}}});
        let live = json!({"ttl": 30, "pause": false,
            "postgresql": {"parameters": {"work_mem": "8MB", "shared_buffers": "1GB"}}});
        assert_eq!(
            config_patch(&desired, &live, &[]),
            Some(json!({"ttl": 20, "pause": true,
                "postgresql": {"parameters": {"shared_buffers": null}}}))
        );
    }

    #[test]
    fn a_refused_parameter_keeps_its_live_value() {
        // The spec changed shared_buffers to something invalid, and archive_timeout, which
        // pgpilot defaults to 60s: the running values stay.
        let desired =
            json!({"postgresql": {"parameters": {"work_mem": "16MB", "archive_timeout": "60s"}}});
        let live = json!({"postgresql": {"parameters": {"work_mem": "8MB", "shared_buffers": "1GB",
            "archive_timeout": "5min"}}});
        assert_eq!(
            config_patch(&desired, &live, &["Shared_Buffers", "archive_timeout"]),
            Some(json!({"postgresql": {"parameters": {"work_mem": "16MB"}}}))
        );
    }

    #[test]
    fn the_restore_command_goes_when_backups_go() {
        let live = json!({"postgresql": {"parameters": {"archive_mode": "on"},
            "recovery_conf": {"restore_command": "pgbackrest --stanza=prod-db archive-get %f \"%p\""}}});
        let desired = json!({"postgresql": {"parameters": {}}});
        assert_eq!(
            config_patch(&desired, &live, &[]),
            Some(
                json!({"postgresql": {"parameters": {"archive_mode": null}, "recovery_conf": null}})
            )
        );
        assert_eq!(config_patch(&live, &live, &[]), None);
    }

    #[test]
    fn the_instance_limit_stops_the_replicas_then_the_primary_alone_on_ordinal_0() {
        let m = three(["replica", "leader", "replica"]);
        // The primary on db-1 moves to db-0 first.
        assert_eq!(
            scale_limited(3, Some(0), 3, &m, false),
            ScalePlan {
                replicas: 3,
                switchover_to: Some("db-0".into())
            }
        );
        assert_eq!(scale_limited(3, Some(1), 3, &m, false).replicas, 3);
        let m = three(["leader", "replica", "replica"]);
        assert_eq!(scale_limited(3, Some(0), 3, &m, false).replicas, 1);
        assert_eq!(scale_limited(3, Some(1), 3, &m, false).replicas, 1);
        // Alone: the primary stops too.
        assert_eq!(scale_limited(3, Some(0), 1, &m, false).replicas, 0);
        assert_eq!(scale_limited(3, Some(0), 0, &m, false).replicas, 0);
        // Not while db-0 holds the leader key but still promotes: it would stop in recovery.
        let mut promoting = m.clone();
        promoting.instances[0].member.as_mut().unwrap().role = Some("replica".into());
        assert_eq!(scale_limited(3, Some(0), 1, &promoting, false).replicas, 1);
        assert_eq!(
            scale_limited(3, Some(0), 3, &promoting, false),
            ScalePlan {
                replicas: 3,
                switchover_to: None
            }
        );
        // Nor while its Patroni does not answer.
        let mut silent = m.clone();
        silent.instances[0].member = None;
        assert_eq!(scale_limited(3, Some(0), 1, &silent, false).replicas, 1);
        // Back up: the limit first, then every instance.
        assert_eq!(scale_limited(3, Some(1), 0, &m, false).replicas, 1);
        assert_eq!(scale_limited(3, None, 1, &m, false).replicas, 3);
    }

    #[test]
    fn the_instance_limit_says_who_stopped_the_instances() {
        let p = limited_progress(3, Some(0), Some("db-to-17")).unwrap();
        assert_eq!(p.reason, "InstancesLimited");
        assert!(p.message.contains("at most 0 of 3") && p.message.contains("db-to-17"));
        assert!(limited_progress(3, Some(3), None).is_none());
        assert!(limited_progress(3, None, None).is_none());
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
        m.instances[0].member.as_mut().unwrap().replication_state =
            Some("in archive recovery".into());
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
        assert_eq!(restart(&m, 3, true), Ordered::Done);
        pending(&mut m, &[0, 1, 2]);
        assert_eq!(restart(&m, 3, true), Ordered::Instance("db-2".into()));
        pending(&mut m, &[0, 1]);
        assert_eq!(restart(&m, 3, true), Ordered::Instance("db-1".into()));
        pending(&mut m, &[0]);
        assert_eq!(restart(&m, 3, true), Ordered::SwitchoverTo("db-1".into()));
        // While an instance is down, nothing else restarts.
        pending(&mut m, &[0, 1]);
        m.instances[2] = instance(2, "starting", false);
        m.instances[2].member.as_mut().unwrap().pending_restart = false;
        assert!(matches!(restart(&m, 3, true), Ordered::Wait(_)));
    }

    #[test]
    fn a_single_instance_restarts_in_place() {
        let mut m = members(&[("leader", None)], vec![instance(0, "running", true)]);
        pending(&mut m, &[0]);
        assert_eq!(restart(&m, 1, false), Ordered::Instance("db-0".into()));
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

    /// Three healthy instances; `revisions[n]` is db-n's revision, `rev-2` the update one.
    fn rolling(roles: [&str; 3], revisions: [&str; 3]) -> Members {
        let mut m = three(roles);
        for (i, r) in m.instances.iter_mut().zip(revisions) {
            i.revision = Some(r.into());
        }
        m
    }

    fn facts(m: &Members) -> Facts<'_> {
        Facts {
            members: m,
            replicas: 3,
            update_revision: Some("rev-2"),
            synchronous: true,
            hold: None,
            scale_switchover: None,
        }
    }

    fn step(m: &Members) -> Step {
        next_step(&facts(m)).step
    }

    #[test]
    fn a_step_describes_itself_for_the_reconcile_span() {
        assert_eq!(Step::Nothing.describe(), "nothing");
        assert_eq!(
            replace("db-0", "replica").describe(),
            "replace db-0 (replica)"
        );
        assert_eq!(
            Step::Restart { pod: "db-1".into() }.describe(),
            "restart db-1"
        );
    }

    fn replace(pod: &str, role: &'static str) -> Step {
        Step::Replace {
            pod: pod.into(),
            role,
        }
    }

    #[test]
    fn a_roll_replaces_plain_replicas_then_the_synchronous_standby() {
        let m = rolling(["leader", "sync_standby", "replica"], ["rev-1"; 3]);
        assert_eq!(step(&m), replace("db-2", "replica"));
        let m = rolling(
            ["leader", "sync_standby", "replica"],
            ["rev-1", "rev-1", "rev-2"],
        );
        assert_eq!(step(&m), replace("db-1", "replica"));
    }

    #[test]
    fn the_primary_is_replaced_last_after_a_switchover_to_an_updated_replica() {
        let m = rolling(
            ["leader", "sync_standby", "replica"],
            ["rev-1", "rev-2", "rev-2"],
        );
        assert_eq!(
            step(&m),
            Step::Switchover {
                to: "db-1".into(),
                why: Why::RollingUpdate
            }
        );
        // After the switchover the old primary is a replica on the old revision.
        let m = rolling(
            ["replica", "leader", "sync_standby"],
            ["rev-1", "rev-2", "rev-2"],
        );
        assert_eq!(step(&m), replace("db-0", "replica"));
        let done = rolling(["replica", "leader", "sync_standby"], ["rev-2"; 3]);
        assert_eq!(
            next_step(&facts(&done)),
            Decision {
                step: Step::Nothing,
                progress: None
            }
        );
    }

    #[test]
    fn a_roll_waits_while_any_instance_is_down_missing_or_behind() {
        let mut m = rolling(
            ["leader", "sync_standby", "replica"],
            ["rev-1", "rev-1", "rev-2"],
        );
        m.instances[2] = instance(2, "starting", false);
        m.instances[2].revision = Some("rev-2".into());
        m.instances[2].age_secs = 5;
        let d = next_step(&facts(&m));
        assert_eq!(d.step, Step::Nothing);
        let progress = d.progress.unwrap();
        assert_eq!((progress.moving, progress.reason), (true, "RollingUpdate"));
        assert!(
            progress.message.contains("waiting for db-2"),
            "{}",
            progress.message
        );
        // The replaced pod does not exist yet.
        let mut m = rolling(
            ["leader", "sync_standby", "replica"],
            ["rev-1", "rev-1", "rev-2"],
        );
        m.instances.pop();
        assert_eq!(step(&m), Step::Nothing);
        // A replica too far behind.
        let mut m = rolling(["leader", "sync_standby", "replica"], ["rev-1"; 3]);
        m.cluster.as_mut().unwrap().members[2].lag = Some(Value::from(64 << 20));
        assert_eq!(step(&m), Step::Nothing);
    }

    #[test]
    fn the_primary_waits_when_no_updated_replica_can_take_over() {
        // Synchronous mode, and the updated replica is not a synchronous standby yet.
        let m = rolling(
            ["leader", "replica", "replica"],
            ["rev-1", "rev-2", "rev-2"],
        );
        assert_eq!(step(&m), Step::Nothing);
        // A single instance has no one to hand over to: it is replaced in place.
        let mut single = members(&[("leader", None)], vec![instance(0, "running", true)]);
        single.instances[0].revision = Some("rev-1".into());
        let f = Facts {
            replicas: 1,
            ..facts(&single)
        };
        assert_eq!(next_step(&f).step, replace("db-0", "primary"));
    }

    #[test]
    fn a_replaced_pod_that_never_comes_back_stalls_the_roll() {
        let mut m = rolling(
            ["leader", "sync_standby", "replica"],
            ["rev-1", "rev-1", "rev-2"],
        );
        m.instances[2] = instance(2, "start failed", false);
        m.instances[2].revision = Some("rev-2".into());
        m.instances[2].unready_for_secs = 0;
        m.instances[2].age_secs = ROLL_STALL_SECS;
        let d = next_step(&facts(&m));
        assert_eq!(d.step, Step::Nothing);
        let progress = d.progress.unwrap();
        assert_eq!(
            (progress.moving, progress.reason),
            (false, "RollingUpdateStalled")
        );
        assert!(
            progress
                .message
                .starts_with("db-2 runs the new pod template")
        );
    }

    #[test]
    fn an_unknown_update_revision_or_maintenance_replaces_nothing() {
        let m = rolling(["leader", "sync_standby", "replica"], ["rev-1"; 3]);
        let unknown = Facts {
            update_revision: None,
            ..facts(&m)
        };
        assert_eq!(next_step(&unknown).step, Step::Nothing);
        let held = Facts {
            hold: Some("upgrade db-17 (paused)".into()),
            ..facts(&m)
        };
        let d = next_step(&held);
        assert_eq!(d.step, Step::Nothing);
        let progress = d.progress.unwrap();
        assert_eq!(progress.reason, "RollingUpdateHeld");
        assert!(progress.message.contains("upgrade db-17 (paused) holds"));
    }

    #[test]
    fn one_step_per_reconcile_in_order_of_urgency() {
        // A scale-down switchover comes before anything else, even a roll.
        let m = rolling(["leader", "sync_standby", "replica"], ["rev-1"; 3]);
        let f = Facts {
            scale_switchover: Some("db-1"),
            ..facts(&m)
        };
        assert_eq!(
            next_step(&f).step,
            Step::Switchover {
                to: "db-1".into(),
                why: Why::ScaleDown
            }
        );
        // A roll before a rolling restart: a replaced pod restarts anyway.
        let mut m = rolling(["leader", "sync_standby", "replica"], ["rev-1"; 3]);
        for i in m.instances.iter_mut() {
            i.member.as_mut().unwrap().pending_restart = true;
        }
        assert_eq!(step(&m), replace("db-2", "replica"));
        // Restarts once every pod runs the update revision.
        for i in m.instances.iter_mut() {
            i.revision = Some("rev-2".into());
        }
        assert_eq!(step(&m), Step::Restart { pod: "db-2".into() });
    }

    /// Every pod on the update revision: no roll, so restarts are next.
    fn current(roles: [&str; 3]) -> Members {
        rolling(roles, ["rev-2"; 3])
    }

    #[test]
    fn a_member_that_began_restarting_stops_the_next_step_though_the_dcs_still_shows_it_streaming()
    {
        let mut m = current(["leader", "quorum_standby", "quorum_standby"]);
        for i in m.instances.iter_mut() {
            i.member.as_mut().unwrap().pending_restart = i.pod != "db-2";
        }
        m.instances[2].member.as_mut().unwrap().state = Some("restarting".into());
        assert_eq!(step(&m), Step::Nothing);
    }

    #[test]
    fn the_primary_waits_for_a_voter_rather_than_restart_in_place() {
        // Replicas restarted; Patroni has not recorded voters again yet.
        let mut m = current(["leader", "replica", "replica"]);
        m.instances[0].member.as_mut().unwrap().pending_restart = true;
        assert_eq!(step(&m), Step::Nothing);
        // Once it has, the switchover comes first.
        let mut m = current(["leader", "quorum_standby", "quorum_standby"]);
        m.instances[0].member.as_mut().unwrap().pending_restart = true;
        assert_eq!(
            step(&m),
            Step::Switchover {
                to: "db-1".into(),
                why: Why::Restart
            }
        );
    }

    #[test]
    fn a_demoted_primary_whose_pod_is_not_labelled_replica_yet_is_not_replaced_yet() {
        let mut m = rolling(
            ["replica", "leader", "sync_standby"],
            ["rev-1", "rev-2", "rev-2"],
        );
        m.instances[0].role_label = None;
        assert_eq!(step(&m), Step::Nothing);
        m.instances[0].role_label = Some("replica".into());
        assert_eq!(step(&m), replace("db-0", "replica"));
    }

    #[test]
    fn the_old_primary_stays_until_the_other_replica_follows_the_new_one() {
        // db-1 leads on timeline 3; db-2, which Patroni makes wait before following a named
        // successor, is still on 2 and acknowledges no synchronous commit: replacing db-0
        // now would leave none.
        let mut m = rolling(
            ["replica", "leader", "sync_standby"],
            ["rev-1", "rev-2", "rev-2"],
        );
        for (i, tl) in m.instances.iter_mut().zip([3, 3, 2]) {
            i.member.as_mut().unwrap().timeline = Some(tl);
        }
        assert_eq!(step(&m), Step::Nothing);
        m.instances[2].member.as_mut().unwrap().timeline = Some(3);
        assert_eq!(step(&m), replace("db-0", "replica"));
    }

    #[test]
    fn a_lost_pod_holds_a_rolling_restart() {
        let mut m = current(["leader", "quorum_standby", "quorum_standby"]);
        for i in m.instances.iter_mut() {
            i.member.as_mut().unwrap().pending_restart = true;
        }
        m.instances.pop();
        assert_eq!(
            step(&m),
            Step::Nothing,
            "db-2 is gone: restarting db-1 leaves the primary alone"
        );
    }
}
