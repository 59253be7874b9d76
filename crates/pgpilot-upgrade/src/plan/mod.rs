//! What an upgrade does next, from what is observed: its steps, its phase, the annotations
//! the cluster carries for the cluster controller, and at most one action. Pure.
//!
//! A minor upgrade's steps, in order: `approval`, `maintenance-window`, `gates` (the cluster
//! Ready, replicas streaming and caught up, no backup running: checked right before anything
//! changes, not when the approval was given), `backup` (a full PostgresBackup, waited for),
//! then the instances: `upgrade-replica/<pod>` for each replica,
//! `switchover`, `upgrade-primary/<pod>`, `verify`. The instances are moved by the cluster
//! controller's pod roll once the cluster carries the upgrade's target; this plan watches them
//! and holds the roll (pause, an instance that does not come back) through an annotation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::cluster::ClusterPhase;
use pgpilot_api::upgrade::{
    PostgresUpgradeStatus, StepState, UpgradeInstance, UpgradeKind, UpgradePhase, UpgradeStep,
};
use pgpilot_api::{PostgresCluster, PostgresUpgrade, labels};
use pgpilot_postgres::members::MAX_SUCCESSOR_LAG;
use pgpilot_postgres::version::Running;
use pgpilot_toolkit::conditions::{self, Status, Update};

mod major;
pub use major::{JobState, RECLONE, Seen as MajorSeen};

pub const GATES: &str = "gates";
pub const APPROVAL: &str = "approval";
pub const WINDOW: &str = "maintenance-window";
pub const BACKUP: &str = "backup";
pub const SWITCHOVER: &str = "switchover";
pub const VERIFY: &str = "verify";
const REPLICA_PREFIX: &str = "upgrade-replica/";
const PRIMARY_PREFIX: &str = "upgrade-primary/";

/// Condition types of a PostgresUpgrade.
pub const PROGRESSING: &str = "Progressing";
/// `True` once every instance runs the target.
pub const READY: &str = "Ready";
pub const PAUSED: &str = "Paused";

/// An instance pod as the plan needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub name: String,
    /// The image of its PostgreSQL container.
    pub image: Option<String>,
    pub ready: bool,
    /// Seconds since the pod was created.
    pub age: i64,
}

/// The cluster's maintenance window now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Window {
    /// The cluster has none: any time.
    Always,
    Open,
    /// Closed; when it opens next (Unix seconds), if ever.
    Closed(Option<i64>),
    /// `spec.upgrade.maintenanceWindow` cannot be parsed (the message).
    Invalid,
}

/// The pre-upgrade backup as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct PreBackup {
    pub phase: Option<BackupPhase>,
    pub error: Option<String>,
}

pub struct Facts<'a> {
    pub now: Timestamp,
    pub cluster: &'a PostgresCluster,
    pub upgrade: &'a PostgresUpgrade,
    /// The image the cluster's spec asks for (its own, or the manager's default).
    pub desired_image: Option<&'a str>,
    /// What the StatefulSet runs (the version pin); none before the cluster has one.
    pub running: Option<&'a Running>,
    pub pods: &'a [Pod],
    pub window: Window,
    /// The pre-upgrade backup, once created.
    pub backup: Option<PreBackup>,
    /// Another backup of the cluster is pending or running.
    pub other_backup_running: bool,
    /// What a major upgrade made so far.
    pub major: major::Seen,
}

/// The one thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Nothing,
    /// Create the pre-upgrade PostgresBackup with this name.
    CreateBackup(String),
    /// Create this Job of a major upgrade.
    CreateJob(crate::major::Kind),
    /// Remove Patroni's `initialize` key (the old system identifier) while no instance runs,
    /// so that the upgraded primary records its own.
    ResetDcs,
    /// Delete the volumes of every ordinal but 0 (their pods stopped): the replicas clone the
    /// upgraded primary afresh.
    DeleteReplicaVolumes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub act: Act,
    pub status: PostgresUpgradeStatus,
    /// The annotations of ours the cluster should carry (none: remove ours).
    pub annotations: BTreeMap<String, String>,
    /// An Event for what changed: (reason, message, is a warning).
    pub event: Option<(&'static str, String, bool)>,
}

/// The name of the pre-upgrade backup of `upgrade`.
pub fn backup_name(upgrade: &str) -> String {
    format!("{upgrade}-pre")
}

/// The step under way (the first neither done nor skipped), for spans and logs.
pub fn current_step(st: &PostgresUpgradeStatus) -> Option<&str> {
    st.steps
        .iter()
        .find(|s| !matches!(s.state, StepState::Done | StepState::Skipped))
        .map(|s| s.name.as_str())
}

/// Whether the instances started moving: any step from the first instance on left `Pending`.
fn roll_started(steps: &[UpgradeStep]) -> bool {
    steps
        .iter()
        .skip_while(|s| s.name != BACKUP)
        .skip(1)
        .any(|s| s.state != StepState::Pending)
}

struct Steps<'a> {
    steps: &'a mut Vec<UpgradeStep>,
    now: &'a Time,
}

impl Steps<'_> {
    fn state(&self, name: &str) -> StepState {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .map_or(StepState::Pending, |s| s.state)
    }

    /// Moves step `name` to `state` with `message`; start and end times follow the state.
    fn set(&mut self, name: &str, state: StepState, message: impl Into<String>) {
        let Some(step) = self.steps.iter_mut().find(|s| s.name == name) else {
            return;
        };
        if step.start_time.is_none() && state != StepState::Pending && state != StepState::Skipped {
            step.start_time = Some(self.now.clone());
        }
        if matches!(
            state,
            StepState::Done | StepState::Failed | StepState::Skipped
        ) && step.end_time.is_none()
        {
            step.end_time = Some(self.now.clone());
        }
        step.state = state;
        let message = message.into();
        step.message = (!message.is_empty()).then_some(message);
    }

    fn skip_pending(&mut self) {
        let names: Vec<String> = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Pending | StepState::Running))
            .map(|s| s.name.clone())
            .collect();
        for name in names {
            self.set(&name, StepState::Skipped, "");
        }
    }
}

/// The instance steps of a minor upgrade of a cluster whose primary is `primary` and whose
/// other instances are `replicas` (replaced in this order).
fn instance_steps(primary: &str, replicas: &[String]) -> Vec<UpgradeStep> {
    let mut names: Vec<String> = replicas
        .iter()
        .map(|r| format!("{REPLICA_PREFIX}{r}"))
        .collect();
    if !replicas.is_empty() {
        names.push(SWITCHOVER.to_owned());
    }
    names.push(format!("{PRIMARY_PREFIX}{primary}"));
    names.push(VERIFY.to_owned());
    names
        .into_iter()
        .map(|name| UpgradeStep {
            name,
            ..Default::default()
        })
        .collect()
}

/// What blocks the start of an upgrade, in words; empty when nothing does.
fn gates(f: &Facts<'_>) -> Vec<String> {
    let mut why = vec![];
    let st = f.cluster.status.as_ref();
    let ready = st.is_some_and(|s| {
        s.phase == Some(ClusterPhase::Ready)
            && s.observed_generation == f.cluster.metadata.generation
            && conditions::is_true(&s.conditions, "Ready")
    });
    if !ready {
        why.push("the cluster is not Ready".to_owned());
    }
    let primary = st.and_then(|s| s.current_primary.as_deref());
    for i in st.map(|s| s.instances.as_slice()).unwrap_or_default() {
        if !i.ready {
            why.push(format!("{} is not ready", i.name));
        } else if Some(i.name.as_str()) != primary {
            if i.state.as_deref() != Some("streaming") {
                why.push(format!(
                    "{} is not streaming ({})",
                    i.name,
                    i.state.as_deref().unwrap_or("unknown")
                ));
            } else if i.lag_bytes.is_none_or(|l| l > MAX_SUCCESSOR_LAG) {
                why.push(format!("{} lags behind the primary", i.name));
            }
        }
    }
    if f.other_backup_running {
        why.push("a backup of the cluster is running".to_owned());
    }
    why
}

pub fn plan(f: &Facts<'_>) -> Plan {
    let upgrade = f.upgrade;
    let name = upgrade.metadata.name.clone().unwrap_or_default();
    let spec = &upgrade.spec;
    let mut st = upgrade.status.clone().unwrap_or_default();
    let now = Time(f.now);
    let generation = upgrade.metadata.generation;
    let look = Look {
        before: st.clone(),
        now: now.clone(),
        generation,
    };
    st.observed_generation = generation;
    let target = labels::upgrade_target(spec.target_version, &spec.target_image);
    let mut annotations = BTreeMap::new();

    if st.phase.is_some_and(UpgradePhase::is_final) {
        // An upgrade aborted while the instances moved keeps holding them, until the spec asks
        // for another image (a new upgrade) or the PostgresUpgrade goes.
        if st.phase == Some(UpgradePhase::Aborted)
            && roll_started(&st.steps)
            && f.desired_image == Some(spec.target_image.as_str())
            && f.cluster.spec.postgresql.version == spec.target_version
        {
            annotations.insert(labels::UPGRADE.to_owned(), name.clone());
            annotations.insert(labels::ROLL_HOLD.to_owned(), aborted_hold(&name, &st));
        }
        return Plan {
            act: Act::Nothing,
            status: st,
            annotations,
            event: None,
        };
    }
    annotations.insert(labels::UPGRADE.to_owned(), name.clone());

    let condition = |st: &mut PostgresUpgradeStatus, type_, status, reason, message| {
        conditions::set(
            &mut st.conditions,
            Update {
                type_,
                status,
                reason,
                message,
                observed_generation: generation,
            },
            now.clone(),
        );
    };

    // Where it starts from: what the StatefulSet runs when the upgrade is first seen.
    if st.from_image.is_none()
        && let Some(r) = f.running
    {
        st.from_version = Some(r.version);
        st.from_image = Some(r.image.clone());
    }
    if st.start_time.is_none() {
        st.start_time = Some(now.clone());
    }
    let Some(from_version) = st.from_version else {
        st.phase = Some(UpgradePhase::Pending);
        condition(
            &mut st,
            PROGRESSING,
            Status::False,
            "WaitingForCluster",
            format!("cluster {} has no instances yet", spec.cluster.name),
        );
        return finish(st, &look, annotations, Act::Nothing, None);
    };
    if spec.target_version < from_version {
        return fail(
            st,
            &look,
            "DowngradeRefused",
            format!(
                "the instances run PostgreSQL {from_version}: a major version cannot go down to {}",
                spec.target_version
            ),
        );
    }
    let kind = if spec.target_version == from_version {
        UpgradeKind::Minor
    } else {
        UpgradeKind::Major
    };
    st.kind = Some(kind);
    if st.steps.is_empty() {
        st.steps = [APPROVAL, WINDOW, GATES, BACKUP]
            .into_iter()
            .map(|name| UpgradeStep {
                name: name.to_owned(),
                ..Default::default()
            })
            .collect();
    }
    st.instances = instances(f, &spec.target_image);

    let started = roll_started(&st.steps);
    // A major upgrade past its first step aborts its own way (or cannot any more).
    let major_abort = kind == UpgradeKind::Major && started && spec.abort;
    if major_abort && let Some(plan) = major::abort(f, &mut st, &look, &name) {
        return plan;
    }
    let mut steps = Steps {
        steps: &mut st.steps,
        now: &now,
    };

    // Abort: before the instances move nothing changed; after, they stay where they are.
    if spec.abort && !major_abort {
        let message = if started {
            aborted_hold(
                &name,
                &PostgresUpgradeStatus {
                    instances: instances(f, &spec.target_image),
                    ..Default::default()
                },
            )
        } else {
            "aborted before any instance changed; they run what they ran".to_owned()
        };
        steps.skip_pending();
        st.phase = Some(UpgradePhase::Aborted);
        st.completion_time = Some(now.clone());
        condition(
            &mut st,
            PROGRESSING,
            Status::False,
            "Aborted",
            message.clone(),
        );
        annotations.remove(labels::UPGRADE);
        if started {
            annotations.insert(labels::UPGRADE.to_owned(), name.clone());
            annotations.insert(labels::ROLL_HOLD.to_owned(), message.clone());
        }
        let event = Some(("UpgradeAborted", message, true));
        return finish(st, &look, annotations, Act::Nothing, event);
    }

    // The spec of the cluster must still ask for this upgrade's target.
    if f.desired_image != Some(spec.target_image.as_str())
        || f.cluster.spec.postgresql.version != spec.target_version
    {
        st.phase = Some(UpgradePhase::Pending);
        condition(
            &mut st,
            PROGRESSING,
            Status::False,
            "TargetNotInSpec",
            format!(
                "cluster {} asks for PostgreSQL {} ({}), not this upgrade's {} ({}): abort this upgrade",
                spec.cluster.name,
                f.cluster.spec.postgresql.version,
                f.desired_image.unwrap_or("no image"),
                spec.target_version,
                spec.target_image
            ),
        );
        if started && kind == UpgradeKind::Major {
            annotations.extend(major::held(f, &st.steps));
        } else if started {
            annotations.insert(
                labels::ROLL_HOLD.to_owned(),
                format!("PostgresUpgrade {name} no longer matches the spec"),
            );
        }
        return finish(st, &look, annotations, Act::Nothing, None);
    }

    if spec.paused {
        st.phase = Some(UpgradePhase::Paused);
        condition(
            &mut st,
            PAUSED,
            Status::True,
            "PausedBySpec",
            "spec.paused is true: no next step".to_owned(),
        );
        if started && kind == UpgradeKind::Major {
            annotations.extend(major::held(f, &st.steps));
        } else if started {
            annotations.insert(labels::UPGRADE_TARGET.to_owned(), target);
            annotations.insert(
                labels::ROLL_HOLD.to_owned(),
                format!("PostgresUpgrade {name} is paused"),
            );
        }
        return finish(st, &look, annotations, Act::Nothing, None);
    }

    // Before the instances move: approval, window, gates, backup.
    if !started {
        match (spec.require_approval, spec.approved == Some(true)) {
            (false, _) => steps.set(APPROVAL, StepState::Skipped, "not required"),
            (true, true) => steps.set(APPROVAL, StepState::Done, ""),
            (true, false) => {
                let message = "waiting for spec.approved: true".to_owned();
                steps.set(APPROVAL, StepState::Running, message.clone());
                return waiting(
                    st,
                    &look,
                    annotations,
                    UpgradePhase::AwaitingApproval,
                    "AwaitingApproval",
                    message,
                );
            }
        }
        match f.window {
            Window::Always => steps.set(WINDOW, StepState::Skipped, "no maintenance window"),
            Window::Open => steps.set(WINDOW, StepState::Done, "inside the maintenance window"),
            Window::Closed(opens) => {
                let message = match opens.and_then(|t| Timestamp::from_second(t).ok()) {
                    Some(t) => format!("waiting for the maintenance window, which opens at {t}"),
                    None => {
                        "waiting for the maintenance window, which never opens again".to_owned()
                    }
                };
                steps.set(WINDOW, StepState::Running, message.clone());
                return waiting(
                    st,
                    &look,
                    annotations,
                    UpgradePhase::Pending,
                    "WaitingForMaintenanceWindow",
                    message,
                );
            }
            Window::Invalid => {
                let message = "spec.upgrade.maintenanceWindow of the cluster cannot be read: fix it (see the cluster's Events)".to_owned();
                steps.set(WINDOW, StepState::Running, message.clone());
                return waiting(
                    st,
                    &look,
                    annotations,
                    UpgradePhase::Pending,
                    "InvalidMaintenanceWindow",
                    message,
                );
            }
        }
        if steps.state(GATES) != StepState::Done {
            let why = gates(f);
            if !why.is_empty() {
                steps.set(GATES, StepState::Running, why.join("; "));
                return waiting(
                    st,
                    &look,
                    annotations,
                    UpgradePhase::Pending,
                    "WaitingForGates",
                    why.join("; "),
                );
            }
            steps.set(GATES, StepState::Done, "");
        }
        if !spec.backup_before_upgrade || f.cluster.spec.backup.is_none() {
            steps.set(
                BACKUP,
                StepState::Skipped,
                if spec.backup_before_upgrade {
                    "the cluster has no backup repository"
                } else {
                    "spec.backupBeforeUpgrade is false"
                },
            );
        } else {
            let backup = backup_name(&name);
            st.backup = Some(backup.clone());
            match &f.backup {
                None => {
                    steps.set(
                        BACKUP,
                        StepState::Running,
                        format!("PostgresBackup {backup} created"),
                    );
                    st.phase = Some(UpgradePhase::BackingUp);
                    condition(
                        &mut st,
                        PROGRESSING,
                        Status::True,
                        "BackingUp",
                        format!("full backup {backup} before the upgrade"),
                    );
                    let event = Some((
                        "PreUpgradeBackup",
                        format!(
                            "full backup {backup} before moving to {}",
                            spec.target_image
                        ),
                        false,
                    ));
                    return finish(st, &look, annotations, Act::CreateBackup(backup), event);
                }
                Some(PreBackup {
                    phase: Some(BackupPhase::Completed),
                    ..
                }) => {
                    steps.set(
                        BACKUP,
                        StepState::Done,
                        format!("PostgresBackup {backup} completed"),
                    );
                }
                Some(PreBackup {
                    phase: Some(BackupPhase::Failed),
                    error,
                }) => {
                    let message = format!(
                        "the pre-upgrade backup {backup} failed ({}); no instance was changed",
                        error.as_deref().unwrap_or("no error reported")
                    );
                    steps.set(BACKUP, StepState::Failed, message.clone());
                    return fail(st, &look, "BackupFailed", message);
                }
                Some(_) => {
                    steps.set(
                        BACKUP,
                        StepState::Running,
                        format!("waiting for PostgresBackup {backup}"),
                    );
                    return waiting(
                        st,
                        &look,
                        annotations,
                        UpgradePhase::BackingUp,
                        "BackingUp",
                        format!("waiting for the pre-upgrade backup {backup}"),
                    );
                }
            }
        }
    }

    if kind == UpgradeKind::Major {
        return major::walk(f, st, &look, annotations);
    }
    // The instances move: the cluster controller rolls them to the target. Which they are
    // is fixed now, right after the gates (the primary last).
    if !steps.steps.iter().any(|s| s.name == VERIFY) {
        let Some(primary) = f
            .cluster
            .status
            .as_ref()
            .and_then(|s| s.current_primary.clone())
        else {
            return waiting(
                st,
                &look,
                annotations,
                UpgradePhase::Pending,
                "WaitingForCluster",
                "the cluster has no primary".to_owned(),
            );
        };
        let mut replicas: Vec<String> = f
            .pods
            .iter()
            .map(|p| p.name.clone())
            .filter(|p| *p != primary)
            .collect();
        // Higher ordinals first, as the pod roll takes them.
        replicas.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
        steps.steps.extend(instance_steps(&primary, &replicas));
    }
    annotations.insert(labels::UPGRADE_TARGET.to_owned(), target);
    let on_target = |p: &Pod| p.image.as_deref() == Some(spec.target_image.as_str());
    let pod = |n: &str| f.pods.iter().find(|p| p.name == n);
    let timeout = i64::from(spec.instance_timeout_seconds);
    let stuck: Vec<&Pod> = f
        .pods
        .iter()
        .filter(|p| on_target(p) && !p.ready && p.age > timeout)
        .collect();
    let names: Vec<String> = steps.steps.iter().map(|s| s.name.clone()).collect();
    let mut phase = UpgradePhase::UpgradingReplicas;
    let mut all_done = true;
    let current_primary = f
        .cluster
        .status
        .as_ref()
        .and_then(|s| s.current_primary.as_deref());
    for step in &names {
        let state = steps.state(step);
        if matches!(state, StepState::Done | StepState::Skipped) {
            continue;
        }
        let done = if let Some(p) = step
            .strip_prefix(REPLICA_PREFIX)
            .or_else(|| step.strip_prefix(PRIMARY_PREFIX))
        {
            pod(p).is_some_and(|p| on_target(p) && p.ready)
        } else if step == SWITCHOVER {
            let original = names
                .iter()
                .find_map(|n| n.strip_prefix(PRIMARY_PREFIX))
                .unwrap_or_default();
            current_primary.is_some_and(|c| c != original)
        } else if step == VERIFY {
            let every_pod = f.pods.iter().all(|p| on_target(p) && p.ready);
            let pinned = f.running.is_some_and(|r| r.image == spec.target_image);
            let ready = f
                .cluster
                .status
                .as_ref()
                .is_some_and(|s| s.phase == Some(ClusterPhase::Ready));
            all_done && every_pod && pinned && ready
        } else {
            true
        };
        if done {
            steps.set(step, StepState::Done, "");
            continue;
        }
        // The first step not done is the one under way.
        if all_done {
            phase = if step == SWITCHOVER {
                UpgradePhase::SwitchingOver
            } else if step.starts_with(PRIMARY_PREFIX) || step == VERIFY {
                UpgradePhase::UpgradingPrimary
            } else {
                UpgradePhase::UpgradingReplicas
            };
            if state == StepState::Pending {
                steps.set(step, StepState::Running, "");
            }
        }
        all_done = false;
    }
    st.instances = instances(f, &spec.target_image);

    if all_done {
        let message = format!(
            "every instance runs {} (from {})",
            spec.target_image,
            st.from_image.as_deref().unwrap_or("?")
        );
        // Done: the pin itself carries the target now; nothing of ours stays on the cluster.
        return succeeded(st, &look, message);
    }
    st.phase = Some(phase);
    if let Some(p) = stuck.first() {
        let message = format!(
            "{} runs {} but is not ready {} s after its pod was created: the upgrade holds the remaining instances on {}",
            p.name,
            spec.target_image,
            p.age,
            st.from_image.as_deref().unwrap_or("the old image")
        );
        st.phase = Some(UpgradePhase::Paused);
        condition(
            &mut st,
            PAUSED,
            Status::True,
            "InstanceUnhealthy",
            message.clone(),
        );
        annotations.insert(
            labels::ROLL_HOLD.to_owned(),
            format!("PostgresUpgrade {name}: {} is not healthy", p.name),
        );
        let event = (!look
            .before
            .conditions
            .iter()
            .any(|c| c.type_ == PAUSED && c.status == "True"))
        .then_some(("UpgradePaused", message, true));
        return finish(st, &look, annotations, Act::Nothing, event);
    }
    condition(&mut st, PAUSED, Status::False, "Running", String::new());
    let moving = format!(
        "moving the instances from {} to {}",
        st.from_image.as_deref().unwrap_or("?"),
        spec.target_image
    );
    condition(
        &mut st,
        PROGRESSING,
        Status::True,
        "Upgrading",
        moving.clone(),
    );
    let event = (!started).then_some(("UpgradeStarted", moving, false));
    finish(st, &look, annotations, Act::Nothing, event)
}

fn ordinal(pod: &str) -> i64 {
    pod.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Per instance: image, PostgreSQL's version (from the cluster's status), upgraded or not.
fn instances(f: &Facts<'_>, target: &str) -> Vec<UpgradeInstance> {
    let versions: BTreeMap<&str, Option<&String>> = f
        .cluster
        .status
        .iter()
        .flat_map(|s| &s.instances)
        .map(|i| (i.name.as_str(), i.postgres_version.as_ref()))
        .collect();
    let mut out: Vec<UpgradeInstance> = f
        .pods
        .iter()
        .map(|p| UpgradeInstance {
            name: p.name.clone(),
            image: p.image.clone(),
            postgres_version: versions.get(p.name.as_str()).copied().flatten().cloned(),
            upgraded: p.ready && p.image.as_deref() == Some(target),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What an abort during the roll leaves, and how to get out of it.
fn aborted_hold(name: &str, st: &PostgresUpgradeStatus) -> String {
    let moved = st.instances.iter().filter(|i| i.upgraded).count();
    format!(
        "PostgresUpgrade {name} was aborted while the instances moved ({moved} of {} moved): they stay as they are until the cluster's spec.postgresql.image changes (back, to roll them back) or this PostgresUpgrade is deleted (to finish)",
        st.instances.len()
    )
}

/// What every outcome of one look needs: the status as it was, the time, the generation.
struct Look {
    before: PostgresUpgradeStatus,
    now: Time,
    generation: Option<i64>,
}

fn waiting(
    mut st: PostgresUpgradeStatus,
    look: &Look,
    annotations: BTreeMap<String, String>,
    phase: UpgradePhase,
    reason: &str,
    message: String,
) -> Plan {
    st.phase = Some(phase);
    conditions::set(
        &mut st.conditions,
        Update {
            type_: PROGRESSING,
            status: Status::False,
            reason,
            message,
            observed_generation: look.generation,
        },
        look.now.clone(),
    );
    finish(st, look, annotations, Act::Nothing, None)
}

fn fail(st: PostgresUpgradeStatus, look: &Look, reason: &str, message: String) -> Plan {
    end(
        st,
        look,
        (UpgradePhase::Failed, reason, message),
        BTreeMap::new(),
        "UpgradeFailed",
    )
}

/// What GitOps tools read from the phase: `Ready` once the upgrade succeeded, kstatus'
/// `Stalled` once it failed or was aborted (it never moves again); both say what
/// `Progressing` says.
pub fn set_outcome(st: &mut PostgresUpgradeStatus, generation: Option<i64>, now: Time) {
    let phase = st.phase.unwrap_or(UpgradePhase::Pending);
    let message = conditions::find(&st.conditions, PROGRESSING)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let reason = format!("{phase:?}");
    conditions::set(
        &mut st.conditions,
        Update {
            type_: READY,
            status: Status::from(phase == UpgradePhase::Succeeded),
            reason: &reason,
            message: message.clone(),
            observed_generation: generation,
        },
        now.clone(),
    );
    let stalled = matches!(phase, UpgradePhase::Failed | UpgradePhase::Aborted);
    conditions::set_stalled(
        &mut st.conditions,
        stalled.then_some((reason.as_str(), message)),
        generation,
        now,
    );
}

/// The upgrade ends in `phase`, saying why in `Progressing` and a warning Event; the cluster
/// keeps `annotations`.
fn end(
    mut st: PostgresUpgradeStatus,
    look: &Look,
    (phase, reason, message): (UpgradePhase, &str, String),
    annotations: BTreeMap<String, String>,
    event: &'static str,
) -> Plan {
    st.phase = Some(phase);
    st.completion_time = Some(look.now.clone());
    conditions::set(
        &mut st.conditions,
        Update {
            type_: PROGRESSING,
            status: Status::False,
            reason,
            message: message.clone(),
            observed_generation: look.generation,
        },
        look.now.clone(),
    );
    finish(
        st,
        look,
        annotations,
        Act::Nothing,
        Some((event, message, true)),
    )
}

/// Every instance runs the target: nothing of the upgrade stays on the cluster.
fn succeeded(mut st: PostgresUpgradeStatus, look: &Look, message: String) -> Plan {
    st.phase = Some(UpgradePhase::Succeeded);
    st.completion_time = Some(look.now.clone());
    for (type_, reason, message) in [
        (PAUSED, "Finished", String::new()),
        (PROGRESSING, "Succeeded", message.clone()),
    ] {
        conditions::set(
            &mut st.conditions,
            Update {
                type_,
                status: Status::False,
                reason,
                message,
                observed_generation: look.generation,
            },
            look.now.clone(),
        );
    }
    finish(
        st,
        look,
        BTreeMap::new(),
        Act::Nothing,
        Some(("UpgradeSucceeded", message, false)),
    )
}

/// The plan; an Event only when the status changed (a repeated look announces nothing).
fn finish(
    mut st: PostgresUpgradeStatus,
    look: &Look,
    annotations: BTreeMap<String, String>,
    act: Act,
    event: Option<(&'static str, String, bool)>,
) -> Plan {
    set_outcome(&mut st, look.generation, look.now.clone());
    let event = event.filter(|_| st.phase != look.before.phase || act != Act::Nothing);
    Plan {
        act,
        status: st,
        annotations,
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "pg:15.18";
    const NEW: &str = "pg:15.20";

    fn cluster(ready: bool, primary: &str, backup: bool) -> PostgresCluster {
        let instance = |n: &str| {
            serde_json::json!({"name": n, "ready": true, "postgresVersion": "15.18",
                "state": if n == primary { "running" } else { "streaming" },
                "lagBytes": if n == primary { serde_json::Value::Null } else { 0.into() }})
        };
        let mut spec = serde_json::json!({"instances": 3, "postgresql": {"version": 15, "image": NEW},
            "storage": {"size": "1Gi"}});
        if backup {
            spec["backup"] = serde_json::json!({"repository": {"s3": {"endpoint": "minio:9000",
                "bucket": "b", "credentials": {"secretName": "s3"}}}});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod", "generation": 2},
            "spec": spec,
            "status": {"phase": if ready { "Ready" } else { "Degraded" }, "observedGeneration": 2,
                "currentPrimary": primary,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                    "reason": "x", "message": "", "lastTransitionTime": "2026-12-06T00:00:00Z"}],
                "instances": [instance("db-0"), instance("db-1"), instance("db-2")]},
        }))
        .unwrap()
    }

    fn upgrade(extra: serde_json::Value) -> PostgresUpgrade {
        let mut spec = serde_json::json!({"cluster": {"name": "db"}, "targetVersion": 15,
            "targetImage": NEW});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
            "metadata": {"name": "db-upgrade-1", "namespace": "prod", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pods(images: [&str; 3], ready: [bool; 3]) -> Vec<Pod> {
        (0..3)
            .map(|i| Pod {
                name: format!("db-{i}"),
                image: Some(images[i].into()),
                ready: ready[i],
                age: 30,
            })
            .collect()
    }

    const RUNNING_OLD: Running = Running {
        version: 15,
        image: String::new(),
    };

    fn old() -> Running {
        Running {
            image: OLD.into(),
            ..RUNNING_OLD
        }
    }

    struct World {
        cluster: PostgresCluster,
        upgrade: PostgresUpgrade,
        running: Running,
        pods: Vec<Pod>,
        window: Window,
        backup: Option<PreBackup>,
        other_backup_running: bool,
        major: MajorSeen,
        desired: &'static str,
    }

    impl World {
        fn new() -> World {
            World {
                cluster: cluster(true, "db-0", false),
                upgrade: upgrade(serde_json::json!({})),
                running: old(),
                pods: pods([OLD; 3], [true; 3]),
                window: Window::Always,
                backup: None,
                other_backup_running: false,
                major: MajorSeen::default(),
                desired: NEW,
            }
        }

        fn plan(&self) -> Plan {
            plan(&Facts {
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                cluster: &self.cluster,
                upgrade: &self.upgrade,
                desired_image: Some(self.desired),
                running: Some(&self.running),
                pods: &self.pods,
                window: self.window,
                backup: self.backup.clone(),
                other_backup_running: self.other_backup_running,
                major: self.major.clone(),
            })
        }

        /// Plans, and keeps the status as the controller would have written it.
        fn step(&mut self) -> Plan {
            let p = self.plan();
            self.upgrade.status = Some(p.status.clone());
            p
        }
    }

    fn state(p: &Plan, step: &str) -> StepState {
        p.status
            .steps
            .iter()
            .find(|s| s.name == step)
            .unwrap()
            .state
    }

    fn reason(p: &Plan, type_: &str) -> String {
        conditions::find(&p.status.conditions, type_)
            .unwrap()
            .reason
            .clone()
    }

    #[test]
    fn the_steps_take_replicas_from_the_highest_ordinal_then_a_switchover_then_the_primary() {
        let p = World::new().plan();
        let names: Vec<&str> = p.status.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "approval",
                "maintenance-window",
                "gates",
                "backup",
                "upgrade-replica/db-2",
                "upgrade-replica/db-1",
                "switchover",
                "upgrade-primary/db-0",
                "verify"
            ]
        );
        assert_eq!(p.status.kind, Some(UpgradeKind::Minor));
        assert_eq!(p.status.from_image.as_deref(), Some(OLD));
    }

    #[test]
    fn gates_hold_the_upgrade_until_the_cluster_is_ready_and_no_backup_runs() {
        let mut w = World::new();
        w.cluster = cluster(false, "db-0", false);
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Pending));
        assert_eq!(state(&p, GATES), StepState::Running);
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        assert_eq!(p.annotations[labels::UPGRADE], "db-upgrade-1");
        w.cluster = cluster(true, "db-0", false);
        w.other_backup_running = true;
        let p = w.step();
        let message = p.status.steps[2].message.clone().unwrap();
        assert!(
            message.contains("a backup of the cluster is running"),
            "{message}"
        );
        // A replica behind the primary blocks too.
        w.other_backup_running = false;
        w.cluster.status.as_mut().unwrap().instances[2].lag_bytes = Some(64 << 20);
        assert!(
            w.step().status.steps[2]
                .message
                .clone()
                .unwrap()
                .contains("db-2 lags")
        );
        w.cluster = cluster(true, "db-0", false);
        let p = w.step();
        assert_eq!(state(&p, GATES), StepState::Done);
        assert_eq!(p.annotations[labels::UPGRADE_TARGET], "15@pg:15.20");
    }

    #[test]
    fn approval_and_the_maintenance_window_come_before_anything_changes() {
        let mut w = World::new();
        w.upgrade = upgrade(serde_json::json!({"requireApproval": true}));
        w.window = Window::Closed(Some(1_800_003_600));
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::AwaitingApproval));
        assert_eq!(reason(&p, READY), "AwaitingApproval");
        assert!(!conditions::is_true(&p.status.conditions, READY));
        assert!(conditions::find(&p.status.conditions, conditions::STALLED).is_none());
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        w.upgrade.spec.approved = Some(true);
        let p = w.step();
        assert_eq!(reason(&p, PROGRESSING), "WaitingForMaintenanceWindow");
        assert!(state(&p, WINDOW) == StepState::Running);
        w.window = Window::Open;
        let p = w.step();
        assert_eq!(state(&p, WINDOW), StepState::Done);
        assert!(p.annotations.contains_key(labels::UPGRADE_TARGET));
    }

    #[test]
    fn a_pre_upgrade_backup_is_taken_and_waited_for_and_its_failure_changes_nothing() {
        let mut w = World::new();
        w.cluster = cluster(true, "db-0", true);
        let p = w.step();
        assert_eq!(p.act, Act::CreateBackup("db-upgrade-1-pre".into()));
        assert_eq!(p.status.phase, Some(UpgradePhase::BackingUp));
        assert_eq!(p.status.backup.as_deref(), Some("db-upgrade-1-pre"));
        w.backup = Some(PreBackup {
            phase: Some(BackupPhase::Running),
            error: None,
        });
        let p = w.step();
        assert_eq!(p.act, Act::Nothing);
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        let mut failed = World {
            upgrade: w.upgrade.clone(),
            ..World::new()
        };
        failed.cluster = cluster(true, "db-0", true);
        failed.backup = Some(PreBackup {
            phase: Some(BackupPhase::Failed),
            error: Some("AccessDenied".into()),
        });
        let p = failed.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Failed));
        assert!(p.annotations.is_empty());
        assert!(p.event.unwrap().1.contains("AccessDenied"));
        w.backup = Some(PreBackup {
            phase: Some(BackupPhase::Completed),
            error: None,
        });
        let p = w.step();
        assert_eq!(state(&p, BACKUP), StepState::Done);
        assert!(p.annotations.contains_key(labels::UPGRADE_TARGET));
    }

    #[test]
    fn the_roll_is_followed_instance_by_instance_to_success() {
        let mut w = World::new();
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::UpgradingReplicas));
        assert_eq!(p.event.as_ref().unwrap().0, "UpgradeStarted");
        // db-2 replaced and back; db-1 on its way.
        w.running.image = NEW.into();
        w.pods = pods([OLD, NEW, NEW], [true, false, true]);
        let p = w.step();
        assert_eq!(state(&p, "upgrade-replica/db-2"), StepState::Done);
        assert_eq!(state(&p, "upgrade-replica/db-1"), StepState::Running);
        assert!(p.event.is_none());
        assert!(p.status.instances[2].upgraded && !p.status.instances[1].upgraded);
        // Both replicas done: the switchover is next.
        w.pods = pods([OLD, NEW, NEW], [true; 3]);
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::SwitchingOver));
        // The primary moved to db-1; the old primary is replaced last.
        w.cluster = cluster(true, "db-1", false);
        let p = w.step();
        assert_eq!(state(&p, SWITCHOVER), StepState::Done);
        assert_eq!(p.status.phase, Some(UpgradePhase::UpgradingPrimary));
        w.pods = pods([NEW; 3], [true; 3]);
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Succeeded));
        assert!(conditions::is_true(&p.status.conditions, READY));
        assert!(p.annotations.is_empty(), "{:?}", p.annotations);
        assert_eq!(p.event.as_ref().unwrap().0, "UpgradeSucceeded");
        assert!(p.status.steps.iter().all(|s| s.state != StepState::Pending));
        // Final: a later look changes nothing.
        let again = w.step();
        assert_eq!(again.status, p.status);
        assert!(again.event.is_none() && again.annotations.is_empty());
    }

    #[test]
    fn an_upgraded_instance_that_does_not_come_back_pauses_the_roll() {
        let mut w = World::new();
        w.step();
        w.running.image = NEW.into();
        w.pods = pods([OLD, OLD, NEW], [true, true, false]);
        w.pods[2].age = 601;
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Paused));
        assert_eq!(reason(&p, PAUSED), "InstanceUnhealthy");
        assert!(p.annotations[labels::ROLL_HOLD].contains("db-2"));
        assert_eq!(p.event.as_ref().unwrap().0, "UpgradePaused");
        // Healthy again: the roll goes on.
        w.pods[2].ready = true;
        let p = w.step();
        assert!(!p.annotations.contains_key(labels::ROLL_HOLD));
        assert_eq!(p.status.phase, Some(UpgradePhase::UpgradingReplicas));
    }

    #[test]
    fn pause_holds_the_roll_and_abort_before_it_changes_nothing() {
        let mut w = World::new();
        w.upgrade.spec.paused = true;
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Paused));
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        w.upgrade.spec.abort = true;
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Aborted));
        assert!(p.annotations.is_empty());
        assert!(p.status.completion_time.is_some());
    }

    #[test]
    fn abort_during_the_roll_holds_the_instances_where_they_are() {
        let mut w = World::new();
        w.step();
        w.upgrade.spec.paused = true;
        let p = w.step();
        assert!(p.annotations[labels::ROLL_HOLD].contains("paused"));
        assert!(p.annotations.contains_key(labels::UPGRADE_TARGET));
        w.upgrade.spec.abort = true;
        w.pods = pods([OLD, OLD, NEW], [true; 3]);
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Aborted));
        assert!(p.annotations[labels::ROLL_HOLD].contains("1 of 3 moved"));
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        // Final, and still holding while the spec asks for the aborted target.
        let again = w.step();
        assert!(again.annotations.contains_key(labels::ROLL_HOLD));
    }

    #[test]
    fn downgrades_fail_and_major_upgrades_wait_for_pg_upgrade() {
        let mut w = World::new();
        w.running = Running {
            version: 17,
            image: "pg:17".into(),
        };
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Failed));
        assert_eq!(reason(&p, PROGRESSING), "DowngradeRefused");
        let stalled = conditions::find(&p.status.conditions, conditions::STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "Failed")
        );
        assert_eq!(
            stalled.message,
            conditions::find(&p.status.conditions, PROGRESSING)
                .unwrap()
                .message
        );
    }

    const MAJOR: &str = "pg:17";

    /// A 15 → 17 upgrade of a cluster with a backup repository.
    fn major_world() -> World {
        let mut w = World::new();
        w.cluster = cluster(true, "db-1", true);
        w.upgrade.spec.target_version = 17;
        w.upgrade.spec.target_image = MAJOR.into();
        w.cluster.spec.postgresql.version = 17;
        w.cluster.spec.postgresql.image = Some(MAJOR.into());
        w.desired = MAJOR;
        w.running = Running {
            version: 15,
            image: OLD.into(),
        };
        w.major.replica_volumes = 2;
        w
    }

    fn limit(p: &Plan) -> Option<&str> {
        p.annotations
            .get(labels::INSTANCE_LIMIT)
            .map(String::as_str)
    }

    /// Runs a major upgrade through its pre-upgrade backup: the step after it.
    fn past_the_backup(w: &mut World) -> Plan {
        let p = w.step();
        assert_eq!(p.act, Act::CreateBackup("db-upgrade-1-pre".into()));
        w.backup = Some(PreBackup {
            phase: Some(BackupPhase::Completed),
            error: None,
        });
        w.step()
    }

    /// Runs a major upgrade through the backup and the stop; the pg_upgrade Job is asked for.
    fn to_pg_upgrade(w: &mut World) -> Plan {
        // Prepared while the old version serves: nothing stops yet.
        let p = past_the_backup(w);
        assert_eq!(state(&p, major::PREPARE), StepState::Running);
        assert_eq!(p.act, Act::CreateJob(crate::major::Kind::Prepare));
        assert_eq!(limit(&p), None);
        assert_eq!(p.event.as_ref().unwrap().0, "UpgradeStarted");
        w.major.prepare = Some(JobState::Running);
        let p = w.step();
        assert_eq!(p.act, Act::Nothing, "the Job is created once");
        assert_eq!(limit(&p), None);
        w.major.prepare = Some(JobState::Succeeded("prepared".into()));
        let p = w.step();
        assert_eq!(state(&p, major::PREPARE), StepState::Done);
        assert_eq!(state(&p, major::STOP), StepState::Running);
        assert_eq!(limit(&p), Some("0"));
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
        // Scaled to 0: the Job starts while the primary shuts down.
        w.major.stopped = true;
        let p = w.step();
        assert_eq!(state(&p, major::STOP), StepState::Done);
        assert_eq!(p.act, Act::CreateJob(crate::major::Kind::PgUpgrade));
        w.major.pg_upgrade = Some(JobState::Running);
        let p = w.step();
        assert_eq!(p.act, Act::Nothing, "the Job is created once");
        p
    }

    #[test]
    fn a_major_upgrade_stops_runs_pg_upgrade_starts_the_primary_alone_then_reclones() {
        let mut w = major_world();
        let p = w.step();
        assert_eq!(p.status.kind, Some(UpgradeKind::Major));
        let p = to_pg_upgrade(&mut w);
        assert_eq!(p.status.phase, Some(UpgradePhase::UpgradingPrimary));
        let names: Vec<&str> = p.status.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names[4..],
            [
                "prepare",
                "stop",
                "pg-upgrade",
                "start-primary",
                "reclone-replicas",
                "finish",
                "verify"
            ]
        );
        // pg_upgrade done: once the old primary's pod is gone, Patroni's old cluster goes from
        // its DCS, then the target and the primary alone.
        w.major.pg_upgrade = Some(JobState::Succeeded("upgraded".into()));
        let p = w.step();
        assert_eq!(p.act, Act::Nothing, "the old primary's pod is still there");
        assert_eq!(limit(&p), Some("0"));
        assert_eq!(state(&p, major::START), StepState::Pending);
        w.pods.clear();
        let p = w.step();
        assert_eq!(p.act, Act::ResetDcs);
        assert_eq!(limit(&p), Some("1"));
        assert_eq!(p.annotations[labels::UPGRADE_TARGET], "17@pg:17");
        w.pods = vec![Pod {
            name: "db-0".into(),
            image: Some(MAJOR.into()),
            ready: false,
            age: 5,
        }];
        let p = w.step();
        assert_eq!(
            p.act,
            Act::Nothing,
            "the DCS is reset only while nothing runs"
        );
        w.pods[0].ready = true;
        // Ready, but not leading (the fixture's primary is db-1): not started yet.
        let p = w.step();
        assert_eq!(state(&p, major::START), StepState::Running);
        w.cluster.status.as_mut().unwrap().current_primary = Some("db-0".into());
        let p = w.step();
        assert_eq!(state(&p, major::START), StepState::Done);
        assert_eq!(p.act, Act::DeleteReplicaVolumes);
        assert_eq!(limit(&p), Some("1"), "no replica starts on its old volume");
        assert_eq!(p.status.phase, Some(UpgradePhase::RecloningReplicas));
        w.major.replica_volumes = 0;
        let p = w.step();
        assert_eq!(limit(&p), None);
        assert_eq!(p.act, Act::Nothing);
        w.pods = pods([MAJOR; 3], [true; 3]);
        let p = w.step();
        assert_eq!(
            state(&p, major::RECLONE),
            StepState::Running,
            "db-1 still says running, not streaming, in the fixture's instances"
        );
        w.cluster.status.as_mut().unwrap().instances[0].state = Some("running".into());
        w.cluster.status.as_mut().unwrap().instances[1].state = Some("streaming".into());
        let p = w.step();
        assert_eq!(state(&p, major::RECLONE), StepState::Done);
        assert_eq!(p.act, Act::CreateJob(crate::major::Kind::Finish));
        w.major.finish = Some(JobState::Succeeded("analyzed".into()));
        w.running = Running {
            version: 17,
            image: MAJOR.into(),
        };
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Succeeded));
        assert!(p.annotations.is_empty());
        assert_eq!(p.event.unwrap().0, "UpgradeSucceeded");
    }

    #[test]
    fn a_failed_pg_upgrade_check_ends_the_upgrade_and_lets_the_old_version_start() {
        let mut w = major_world();
        to_pg_upgrade(&mut w);
        w.major.pg_upgrade = Some(JobState::Failed(
            "pg_upgrade's checks failed: Your installation contains the \"aclitem\" data type"
                .into(),
        ));
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Failed));
        assert_eq!(reason(&p, PROGRESSING), "CheckFailed");
        let message = &conditions::find(&p.status.conditions, PROGRESSING)
            .unwrap()
            .message;
        assert!(message.contains("aclitem") && message.contains("PostgreSQL 15 starts again"));
        assert!(
            p.annotations.is_empty(),
            "no limit: the instances come back"
        );
        assert_eq!(state(&p, major::PG_UPGRADE), StepState::Failed);
    }

    #[test]
    fn a_failed_preparation_ends_the_upgrade_before_anything_stops() {
        let mut w = major_world();
        past_the_backup(&mut w);
        w.major.prepare = Some(JobState::Failed(
            "the old image's postgres cannot run in the new image: libicuuc.so.72 => not found"
                .into(),
        ));
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Failed));
        assert_eq!(reason(&p, PROGRESSING), "PrepareFailed");
        let message = &conditions::find(&p.status.conditions, PROGRESSING)
            .unwrap()
            .message;
        assert!(message.contains("libicuuc") && message.contains("keeps running"));
        assert!(p.annotations.is_empty(), "no limit was ever set");
        assert_eq!(state(&p, major::PREPARE), StepState::Failed);
        assert_eq!(state(&p, major::STOP), StepState::Pending);
    }

    #[test]
    fn a_major_abort_before_the_new_primary_starts_brings_the_old_version_back() {
        // While stopping: at once.
        let mut w = major_world();
        to_pg_upgrade(&mut w);
        w.upgrade.spec.abort = true;
        // pg_upgrade runs: wait for it, the instances stay stopped.
        let p = w.step();
        assert_eq!(reason(&p, PROGRESSING), "Aborting");
        assert_eq!(limit(&p), Some("0"));
        // It swapped the directories: revert them, then start.
        w.major.pg_upgrade = Some(JobState::Succeeded("upgraded".into()));
        let p = w.step();
        assert_eq!(p.act, Act::CreateJob(crate::major::Kind::Revert));
        assert_eq!(limit(&p), Some("0"));
        w.major.revert = Some(JobState::Succeeded("back".into()));
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Aborted));
        assert!(p.annotations.is_empty());
        // A failed revert keeps them stopped and says so.
        let mut w = major_world();
        to_pg_upgrade(&mut w);
        w.upgrade.spec.abort = true;
        w.major.pg_upgrade = Some(JobState::Succeeded("upgraded".into()));
        w.major.revert = Some(JobState::Failed("disk full".into()));
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Failed));
        assert_eq!(reason(&p, PROGRESSING), "RevertFailed");
        assert_eq!(limit(&p), Some("0"));
        // Aborted while preparing or stopping: nothing to undo.
        for stopping in [false, true] {
            let mut w = major_world();
            past_the_backup(&mut w);
            if stopping {
                w.major.prepare = Some(JobState::Succeeded("prepared".into()));
                assert_eq!(limit(&w.step()), Some("0"));
            }
            w.upgrade.spec.abort = true;
            let p = w.step();
            assert_eq!(p.status.phase, Some(UpgradePhase::Aborted));
            assert!(p.annotations.is_empty());
        }
    }

    #[test]
    fn past_the_new_primary_abort_is_refused_and_pause_keeps_the_instances_where_they_are() {
        let mut w = major_world();
        to_pg_upgrade(&mut w);
        // Paused while pg_upgrade runs: the instances stay stopped.
        w.upgrade.spec.paused = true;
        let p = w.step();
        assert_eq!(p.status.phase, Some(UpgradePhase::Paused));
        assert_eq!(limit(&p), Some("0"));
        w.upgrade.spec.paused = false;
        w.major.pg_upgrade = Some(JobState::Succeeded("upgraded".into()));
        w.pods.clear();
        w.step();
        w.upgrade.spec.abort = true;
        let p = w.step();
        assert_ne!(p.status.phase, Some(UpgradePhase::Aborted));
        let message = &conditions::find(&p.status.conditions, PROGRESSING)
            .unwrap()
            .message;
        assert!(message.contains("abort refused"), "{message}");
        assert_eq!(p.annotations[labels::UPGRADE_TARGET], "17@pg:17");
        // Paused after the point: the target and the limit stay.
        w.upgrade.spec.abort = false;
        w.upgrade.spec.paused = true;
        let p = w.step();
        assert_eq!(limit(&p), Some("1"));
        assert_eq!(p.annotations[labels::UPGRADE_TARGET], "17@pg:17");
    }
    #[test]
    fn an_upgrade_the_spec_no_longer_asks_for_moves_nothing() {
        let mut w = World::new();
        w.upgrade.spec.target_image = "pg:15.19".into();
        let p = w.step();
        assert_eq!(reason(&p, PROGRESSING), "TargetNotInSpec");
        assert!(!p.annotations.contains_key(labels::UPGRADE_TARGET));
    }
}
