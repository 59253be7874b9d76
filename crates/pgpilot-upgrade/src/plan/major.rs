//! A major upgrade's steps after the backup, pure:
//!
//! 1. `prepare`, while the old version serves: the Job on ordinal 0's volume (`crate::major`)
//!    puts the old binaries beside the data and initializes the new cluster. Its failure ends
//!    the upgrade before anything stopped.
//! 2. `stop`: the instance limit goes to 0; the cluster controller first leaves the primary
//!    alone on ordinal 0 (a switchover if it was elsewhere), then stops it (a clean shutdown).
//! 3. `pg-upgrade`: the Job on ordinal 0's volume: `pg_upgrade`, its checks first. Its
//!    failure ends the upgrade: the limit goes, the old version starts again.
//! 4. `start-primary` — **the point of no return**: Patroni's old system identifier removed
//!    from its DCS, the target on the cluster (the StatefulSet moves to the new image) and the
//!    limit at 1: the upgraded primary starts alone.
//! 5. `reclone-replicas`: the other ordinals' volumes deleted, the limit removed: the replicas
//!    clone the new primary.
//! 6. `finish`: extensions updated, statistics rebuilt, the old data directory removed.
//! 7. `verify`: every instance on the target, the cluster Ready.
//!
//! An abort before step 4 brings the old version back on its own data (reverting the
//! directories if pg_upgrade had swapped them); from step 4 on, the way back is a restore of
//! the pre-upgrade backup.

use super::*;
use crate::major::Kind;

pub const PREPARE: &str = "prepare";
pub const STOP: &str = "stop";
pub const PG_UPGRADE: &str = "pg-upgrade";
pub const START: &str = "start-primary";
pub const RECLONE: &str = "reclone-replicas";
pub const FINISH: &str = "finish";

/// How a Job of the upgrade stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    /// With its termination message.
    Succeeded(String),
    Failed(String),
}

/// What a major upgrade made so far, as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub prepare: Option<JobState>,
    pub pg_upgrade: Option<JobState>,
    pub revert: Option<JobState>,
    pub finish: Option<JobState>,
    /// The StatefulSet is scaled to 0 (the primary may still be shutting down).
    pub stopped: bool,
    /// Volume claims of ordinals other than 0 with the old version's data (made before
    /// `reclone-replicas` began) that still exist.
    pub replica_volumes: usize,
}

fn steps() -> Vec<UpgradeStep> {
    [PREPARE, STOP, PG_UPGRADE, START, RECLONE, FINISH, VERIFY]
        .into_iter()
        .map(|name| UpgradeStep {
            name: name.to_owned(),
            ..Default::default()
        })
        .collect()
}

fn state_of(steps: &[UpgradeStep], name: &str) -> StepState {
    steps
        .iter()
        .find(|s| s.name == name)
        .map_or(StepState::Pending, |s| s.state)
}

/// Whether the new primary may have started: from here on, no abort.
pub fn past_no_return(steps: &[UpgradeStep]) -> bool {
    state_of(steps, START) != StepState::Pending
}

/// Ordinal 0's pod, which the primary is once the instances are limited.
fn first_pod(f: &Facts<'_>) -> String {
    format!("{}-0", f.upgrade.spec.cluster.name)
}

/// The annotations (besides the upgrade's name) that keep the cluster where the upgrade has
/// brought it, for a pause or a look that takes no step.
pub fn held(f: &Facts<'_>, steps: &[UpgradeStep]) -> BTreeMap<String, String> {
    let spec = &f.upgrade.spec;
    let target = || {
        (
            labels::UPGRADE_TARGET.to_owned(),
            labels::upgrade_target(spec.target_version, &spec.target_image),
        )
    };
    let mut out = BTreeMap::new();
    if !past_no_return(steps) {
        if state_of(steps, STOP) != StepState::Pending {
            out.extend(crate::major::limit(0));
        }
        return out;
    }
    out.extend([target()]);
    if (state_of(steps, RECLONE) != StepState::Done && f.major.replica_volumes > 0)
        || state_of(steps, START) != StepState::Done
    {
        out.extend(crate::major::limit(1));
    }
    out
}

fn set_condition(st: &mut PostgresUpgradeStatus, look: &Look, reason: &str, message: String) {
    conditions::set(
        &mut st.conditions,
        Update {
            type_: PROGRESSING,
            status: Status::True,
            reason,
            message,
            observed_generation: look.generation,
        },
        look.now.clone(),
    );
}

/// An abort past the first step: `None` when it is too late (the walk goes on and says so).
pub fn abort(
    f: &Facts<'_>,
    st: &mut PostgresUpgradeStatus,
    look: &Look,
    name: &str,
) -> Option<Plan> {
    if past_no_return(&st.steps) {
        return None;
    }
    let from = st.from_version.unwrap_or_default();
    let mut annotations = BTreeMap::from([(labels::UPGRADE.to_owned(), name.to_owned())]);
    let mut steps = Steps {
        steps: &mut st.steps,
        now: &look.now,
    };
    // pg_upgrade swapped the directories: put the old one back first.
    let swapped = matches!(f.major.pg_upgrade, Some(JobState::Succeeded(_)));
    let wait = match (&f.major.pg_upgrade, &f.major.revert) {
        (Some(JobState::Running), _) => Some((
            Act::Nothing,
            format!(
                "abort asked: waiting for the pg_upgrade Job to end, then PostgreSQL {from} starts again"
            ),
        )),
        (_, None) if swapped => Some((
            Act::CreateJob(Kind::Revert),
            "abort asked: putting the old data directory back".to_owned(),
        )),
        (_, Some(JobState::Running)) => Some((
            Act::Nothing,
            "abort asked: putting the old data directory back".to_owned(),
        )),
        (_, Some(JobState::Failed(why))) => {
            let message = format!(
                "abort could not put the old data directory back ({why}); the instances stay stopped: see docs/runbooks/upgrade.md"
            );
            steps.set(PG_UPGRADE, StepState::Failed, message.clone());
            annotations.extend(crate::major::limit(0));
            return Some(end(
                st.clone(),
                look,
                (UpgradePhase::Failed, "RevertFailed", message),
                annotations,
                "UpgradeFailed",
            ));
        }
        _ => None,
    };
    if let Some((act, message)) = wait {
        annotations.extend(crate::major::limit(0));
        st.phase = Some(UpgradePhase::UpgradingPrimary);
        set_condition(st, look, "Aborting", message);
        let event = (act != Act::Nothing).then(|| {
            (
                "UpgradeAborting",
                "putting the old data directory back".to_owned(),
                true,
            )
        });
        return Some(finish(st.clone(), look, annotations, act, event));
    }
    let message = format!(
        "aborted before the new primary started: PostgreSQL {from} starts again on its own data"
    );
    steps.skip_pending();
    // Nothing of ours on the cluster: the limit goes, the instances start.
    Some(end(
        st.clone(),
        look,
        (UpgradePhase::Aborted, "Aborted", message),
        BTreeMap::new(),
        "UpgradeAborted",
    ))
}

/// The steps from `stop` on.
pub fn walk(
    f: &Facts<'_>,
    mut st: PostgresUpgradeStatus,
    look: &Look,
    mut annotations: BTreeMap<String, String>,
) -> Plan {
    let spec = &f.upgrade.spec;
    let from = st.from_version.unwrap_or_default();
    let to = spec.target_version;
    if !st.steps.iter().any(|s| s.name == PREPARE) {
        st.steps.extend(steps());
    }
    let started = state_of(&st.steps, PREPARE) != StepState::Pending;
    let late_abort = spec.abort && past_no_return(&st.steps);
    let on_target = |p: &Pod| p.image.as_deref() == Some(spec.target_image.as_str());
    let mut steps = Steps {
        steps: &mut st.steps,
        now: &look.now,
    };
    // One step at a time; each returns while it is under way.
    let progress = |mut st: PostgresUpgradeStatus,
                    annotations: BTreeMap<String, String>,
                    phase: UpgradePhase,
                    reason: &str,
                    message: String,
                    act: Act,
                    event: Option<(&'static str, String, bool)>| {
        st.phase = Some(phase);
        let message = if late_abort {
            format!(
                "{message} (abort refused: the new primary has started; the way back is a restore of the pre-upgrade backup, see docs/runbooks/upgrade.md)"
            )
        } else {
            message
        };
        set_condition(&mut st, look, reason, message);
        conditions::set(
            &mut st.conditions,
            Update {
                type_: PAUSED,
                status: Status::False,
                reason: "Running",
                message: String::new(),
                observed_generation: look.generation,
            },
            look.now.clone(),
        );
        st.instances = instances(f, &spec.target_image);
        finish(st, look, annotations, act, event)
    };

    // 1. Prepare, while the old version serves.
    if steps.state(PREPARE) != StepState::Done {
        let job = crate::major::job_name(
            &f.upgrade.metadata.name.clone().unwrap_or_default(),
            Kind::Prepare,
        );
        match &f.major.prepare {
            None | Some(JobState::Running) => {
                let message = format!(
                    "preparing beside {} while PostgreSQL {from} serves: its binaries for pg_upgrade, PostgreSQL {to} initialized (Job {job})",
                    first_pod(f)
                );
                let create = f.major.prepare.is_none();
                steps.set(PREPARE, StepState::Running, message.clone());
                let event = (!started).then(|| ("UpgradeStarted", message.clone(), false));
                return progress(
                    st,
                    annotations,
                    UpgradePhase::UpgradingPrimary,
                    "Preparing",
                    message,
                    if create {
                        Act::CreateJob(Kind::Prepare)
                    } else {
                        Act::Nothing
                    },
                    event,
                );
            }
            Some(JobState::Failed(why)) => {
                let message = format!(
                    "preparing pg_upgrade failed: {why}\nNothing was stopped: PostgreSQL {from} keeps running."
                );
                steps.set(PREPARE, StepState::Failed, message.clone());
                return fail(st, look, "PrepareFailed", message);
            }
            Some(JobState::Succeeded(said)) => steps.set(PREPARE, StepState::Done, said.clone()),
        }
    }

    // 2. Stop: done once the StatefulSet is scaled to 0. The pg_upgrade Job starts while the
    // primary shuts down and waits for its postmaster.
    if steps.state(STOP) != StepState::Done {
        annotations.extend(crate::major::limit(0));
        if !f.major.stopped {
            let message = format!(
                "stopping the instances for pg_upgrade: the replicas, then the primary alone on {}",
                first_pod(f)
            );
            steps.set(STOP, StepState::Running, message.clone());
            return progress(
                st,
                annotations,
                UpgradePhase::UpgradingPrimary,
                "Stopping",
                message,
                Act::Nothing,
                None,
            );
        }
        steps.set(STOP, StepState::Done, "the StatefulSet is scaled to 0");
    }

    // 3. pg_upgrade.
    if steps.state(PG_UPGRADE) != StepState::Done {
        annotations.extend(crate::major::limit(0));
        let job = crate::major::job_name(
            &f.upgrade.metadata.name.clone().unwrap_or_default(),
            Kind::PgUpgrade,
        );
        match &f.major.pg_upgrade {
            None | Some(JobState::Running) => {
                let message = format!("pg_upgrade {from} → {to} runs (Job {job})");
                let create = f.major.pg_upgrade.is_none();
                steps.set(PG_UPGRADE, StepState::Running, message.clone());
                return progress(
                    st,
                    annotations,
                    UpgradePhase::UpgradingPrimary,
                    "PgUpgrade",
                    message.clone(),
                    if create {
                        Act::CreateJob(Kind::PgUpgrade)
                    } else {
                        Act::Nothing
                    },
                    create.then_some(("PgUpgradeStarted", message, false)),
                );
            }
            Some(JobState::Failed(why)) => {
                let reason = if why.starts_with("pg_upgrade's checks failed") {
                    "CheckFailed"
                } else {
                    "PgUpgradeFailed"
                };
                let message = format!(
                    "{why}\nNothing was changed: PostgreSQL {from} starts again on its own data."
                );
                steps.set(PG_UPGRADE, StepState::Failed, message.clone());
                return fail(st, look, reason, message);
            }
            Some(JobState::Succeeded(said)) => steps.set(PG_UPGRADE, StepState::Done, said.clone()),
        }
    }

    // 4. The new primary starts alone: the point of no return.
    annotations.insert(
        labels::UPGRADE_TARGET.to_owned(),
        labels::upgrade_target(to, &spec.target_image),
    );
    let first = first_pod(f);
    let timeout = i64::from(spec.instance_timeout_seconds);
    if let Some(p) = f
        .pods
        .iter()
        .find(|p| on_target(p) && !p.ready && p.age > timeout)
    {
        let message = format!(
            "{} runs PostgreSQL {to} but is not ready {} s after its pod was created: see its logs and docs/runbooks/upgrade.md",
            p.name, p.age
        );
        annotations.extend(held(f, steps.steps));
        st.phase = Some(UpgradePhase::Paused);
        conditions::set(
            &mut st.conditions,
            Update {
                type_: PAUSED,
                status: Status::True,
                reason: "InstanceUnhealthy",
                message: message.clone(),
                observed_generation: look.generation,
            },
            look.now.clone(),
        );
        let event = (!look
            .before
            .conditions
            .iter()
            .any(|c| c.type_ == PAUSED && c.status == "True"))
        .then_some(("UpgradePaused", message, true));
        return finish(st, look, annotations, Act::Nothing, event);
    }
    if steps.state(START) == StepState::Pending && !f.pods.is_empty() {
        // The old primary's pod is still going away.
        annotations.extend(crate::major::limit(0));
        return progress(
            st,
            annotations,
            UpgradePhase::UpgradingPrimary,
            "PgUpgrade",
            "pg_upgrade is done; waiting for the old primary's pod to go".to_owned(),
            Act::Nothing,
            None,
        );
    }
    if steps.state(START) != StepState::Done {
        annotations.extend(crate::major::limit(1));
        let beginning = steps.state(START) == StepState::Pending;
        let message = format!("{first} starts on PostgreSQL {to}, alone");
        steps.set(START, StepState::Running, message.clone());
        // Ready is not enough: Patroni also runs a member that waits for a leader.
        let leads = f
            .cluster
            .status
            .as_ref()
            .and_then(|s| s.current_primary.as_deref())
            == Some(first.as_str());
        if !(leads
            && f.pods
                .iter()
                .any(|p| p.name == first && on_target(p) && p.ready))
        {
            // Patroni's DCS forgets the old system identifier while nothing runs.
            let act = if beginning {
                Act::ResetDcs
            } else {
                Act::Nothing
            };
            let event = beginning.then(|| {
                (
                    "NewPrimaryStarting",
                    format!("{message}: from here on, the way back is a restore of the pre-upgrade backup"),
                    false,
                )
            });
            return progress(
                st,
                annotations,
                UpgradePhase::UpgradingPrimary,
                "StartingPrimary",
                message,
                act,
                event,
            );
        }
        steps.set(
            START,
            StepState::Done,
            format!("{first} runs PostgreSQL {to}"),
        );
    }

    // 5. The replicas clone the new primary.
    if steps.state(RECLONE) != StepState::Done {
        let beginning = steps.state(RECLONE) == StepState::Pending;
        let instances = f.cluster.spec.instances;
        let message = format!(
            "the replicas clone {first} afresh ({} volume(s) to delete)",
            f.major.replica_volumes
        );
        steps.set(RECLONE, StepState::Running, message.clone());
        let mut act = Act::Nothing;
        if f.major.replica_volumes > 0 {
            annotations.extend(crate::major::limit(1));
            if f.pods.iter().all(|p| p.name == first) {
                act = Act::DeleteReplicaVolumes;
            }
        }
        let st_cluster = f.cluster.status.as_ref();
        let streaming = st_cluster.is_some_and(|s| {
            s.instances.len() == instances as usize
                && s.instances.iter().all(|i| {
                    i.ready
                        && (Some(i.name.as_str()) == s.current_primary.as_deref()
                            || i.state.as_deref() == Some("streaming"))
                })
        });
        let all_on_target =
            f.pods.len() == instances as usize && f.pods.iter().all(|p| on_target(p) && p.ready);
        if f.major.replica_volumes > 0 || !all_on_target || !streaming {
            let event = beginning.then(|| ("RecloningReplicas", message.clone(), false));
            return progress(
                st,
                annotations,
                UpgradePhase::RecloningReplicas,
                "RecloningReplicas",
                message,
                act,
                event,
            );
        }
        steps.set(
            RECLONE,
            StepState::Done,
            "every replica streams from the new primary",
        );
    }

    // 6. Extensions, statistics, the old directory.
    if steps.state(FINISH) != StepState::Done {
        let job = crate::major::job_name(
            &f.upgrade.metadata.name.clone().unwrap_or_default(),
            Kind::Finish,
        );
        match &f.major.finish {
            None | Some(JobState::Running) => {
                let message = format!(
                    "updating extensions and rebuilding statistics (vacuumdb --analyze-in-stages; Job {job})"
                );
                let create = f.major.finish.is_none();
                steps.set(FINISH, StepState::Running, message.clone());
                return progress(
                    st,
                    annotations,
                    UpgradePhase::Analyzing,
                    "Analyzing",
                    message.clone(),
                    if create {
                        Act::CreateJob(Kind::Finish)
                    } else {
                        Act::Nothing
                    },
                    create.then_some(("Analyzing", message, false)),
                );
            }
            Some(JobState::Failed(why)) => {
                let message = format!(
                    "every instance runs PostgreSQL {to}, but finishing failed ({why}): update the extensions and run vacuumdb --all --analyze-in-stages by hand (docs/runbooks/upgrade.md)"
                );
                steps.set(FINISH, StepState::Failed, message.clone());
                return fail(st, look, "FinishFailed", message);
            }
            Some(JobState::Succeeded(said)) => steps.set(FINISH, StepState::Done, said.clone()),
        }
    }

    // 7. Verify.
    let pinned = f
        .running
        .is_some_and(|r| r.image == spec.target_image && r.version == to);
    let ready = f
        .cluster
        .status
        .as_ref()
        .is_some_and(|s| s.phase == Some(ClusterPhase::Ready));
    if !(pinned && ready) {
        let message = "waiting for the cluster to be Ready on the new version".to_owned();
        steps.set(VERIFY, StepState::Running, message.clone());
        return progress(
            st,
            annotations,
            UpgradePhase::Analyzing,
            "Verifying",
            message,
            Act::Nothing,
            None,
        );
    }
    steps.set(VERIFY, StepState::Done, "");
    st.instances = instances(f, &spec.target_image);
    let message = format!(
        "every instance runs PostgreSQL {to} ({}), upgraded from {from} with pg_upgrade",
        spec.target_image
    );
    succeeded(st, look, message)
}
