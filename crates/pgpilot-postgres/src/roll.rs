//! The one ordering every controller follows when it takes instances down one by one
//! (replacing pods, restarting PostgreSQL, upgrading): nothing while an instance is missing or
//! unhealthy; replicas first; the primary last, after a switchover. Pure.

use pgpilot_api::labels;

use crate::members::{Instance, MAX_SUCCESSOR_LAG, Members, successor};

/// A pod replaced by a roll that is not ready and streaming this long after its creation
/// stops the roll: the next replacement would take a second instance down.
pub const ROLL_STALL_SECS: i64 = 600;

/// The next step of work done instance by instance (replacing pods, restarting PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ordered {
    /// Nothing pending.
    Done,
    /// Pending, but not now (why).
    Wait(String),
    /// This instance now.
    Instance(String),
    /// Only the primary is left: hand its role to this replica first, then it is a replica
    /// (a switchover is a shorter write gap than losing the primary).
    SwitchoverTo(String),
}

/// Whether an instance may count as healthy between two steps: Ready, labelled with its role
/// (back in its Services), and the primary running or a replica streaming from it with a
/// small known lag — by its own answer just now as well as by the DCS, which lags a Patroni
/// loop behind — on the primary's timeline: after a switchover, a replica that has not
/// followed the new primary yet (Patroni makes replicas other than the named successor wait
/// 2 s) acknowledges none of its synchronous commits, so nothing else goes down meanwhile.
fn healthy(members: &Members, i: &Instance, primary: &str) -> bool {
    let own_state = i.member.as_ref().and_then(|m| m.state.as_deref());
    let role = if i.pod == primary {
        labels::ROLE_PRIMARY
    } else {
        labels::ROLE_REPLICA
    };
    i.ready
        && own_state == Some("running")
        && i.role_label.as_deref() == Some(role)
        && if i.pod == primary {
            members.state(&i.pod).as_deref() == Some("running")
        } else {
            members.streaming(&i.pod)
                && members.timeline(&i.pod) == members.timeline(primary)
                && members
                    .lags()
                    .get(&i.pod)
                    .is_some_and(|l| *l <= MAX_SUCCESSOR_LAG)
        }
}

/// The one ordering every controller that takes instances down one by one follows:
/// nothing while an instance is missing or unhealthy; replicas first (plain replicas before
/// synchronous standbys, higher ordinals first); the primary last, after a switchover to a
/// replica `successor_ok` accepts. Without such a replica the primary waits (in synchronous
/// mode Patroni records its voters again a loop or two after a replica came back); only a
/// primary without replicas is taken down in place.
pub fn ordered(
    members: &Members,
    expected: i32,
    pending: impl Fn(&Instance) -> bool,
    successor_ok: impl Fn(&Instance) -> bool,
    synchronous: bool,
) -> Ordered {
    let todo: Vec<&Instance> = members.instances.iter().filter(|i| pending(i)).collect();
    if todo.is_empty() {
        return Ordered::Done;
    }
    let present = members.instances.len() as i32;
    if present < expected {
        return Ordered::Wait(format!("{present} of {expected} instances exist"));
    }
    let Some(primary) = members.primary() else {
        return Ordered::Wait("no primary".to_owned());
    };
    if let Some(sick) = members
        .instances
        .iter()
        .find(|i| !healthy(members, i, &primary.pod))
    {
        return Ordered::Wait(format!(
            "waiting for {} to be ready and streaming",
            sick.pod
        ));
    }
    let synchronous_standby = |i: &Instance| {
        members
            .role(&i.pod)
            .is_some_and(|r| pgpilot_api::cluster::is_synchronous_standby(&r))
    };
    if let Some(replica) = todo
        .iter()
        .filter(|i| i.pod != primary.pod)
        .max_by_key(|i| (!synchronous_standby(i), i.ordinal))
    {
        return Ordered::Instance(replica.pod.clone());
    }
    match successor(members, synchronous, successor_ok) {
        Some(to) => Ordered::SwitchoverTo(to.pod.clone()),
        None if present == 1 => Ordered::Instance(primary.pod.clone()),
        None => Ordered::Wait(format!(
            "only the primary {} is left, and no replica can take over from it yet",
            primary.pod
        )),
    }
}

/// Where a pod roll stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roll {
    /// Every pod runs the StatefulSet's update revision (or that is not known yet).
    Done,
    /// The next step, and how many instances run the new revision.
    Next(Ordered, usize),
    /// A replaced pod did not come back: stopped, with what to look at.
    Stalled(String),
}

/// The pod roll: replaces every pod whose `controller-revision-hash` is not the StatefulSet's
/// update revision (its template changed: image, resources, scheduling, env, …).
pub fn roll(
    members: &Members,
    replicas: i32,
    update_revision: Option<&str>,
    synchronous: bool,
) -> Roll {
    let Some(revision) = update_revision else {
        return Roll::Done;
    };
    let fresh = |i: &Instance| i.revision.as_deref() == Some(revision);
    let stale = |i: &Instance| i.revision.is_some() && !fresh(i);
    if !members.instances.iter().any(stale) {
        return Roll::Done;
    }
    let done = members.instances.iter().filter(|i| fresh(i)).count();
    let next = ordered(members, replicas, stale, fresh, synchronous);
    if matches!(next, Ordered::Wait(_))
        && let Some(late) = members
            .instances
            .iter()
            .find(|i| fresh(i) && !i.ready && i.age_secs >= ROLL_STALL_SECS)
    {
        return Roll::Stalled(format!(
            "{} runs the new pod template but has not been ready for {} s since it was created; the roll waits until it is (check its events and logs: kubectl describe pod {0})",
            late.pod, late.age_secs
        ));
    }
    Roll::Next(next, done)
}
