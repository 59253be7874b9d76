//! Status from what was observed: the StatefulSet and the instance pods (their readiness and
//! the role label Patroni keeps on them). Computing it is pure; it is written with
//! server-side apply under the cluster controller's field manager, only its own part
//! ([`PART`]) and only when that part changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::{ClusterPhase, Endpoints, InstanceStatus, PostgresClusterStatus};
use pgpilot_api::labels;
use pgpilot_toolkit::conditions::{self, Status, Update};
use pgpilot_toolkit::status::{StatusPart, apply_status};

use pgpilot_postgres::members::{Members, pod_ready};
use pgpilot_postgres::names::{Names, POSTGRES_PORT};
use pgpilot_postgres::patroni::version_string;

use crate::context::Context;
use crate::error::Error;
use crate::plan::Progress;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Shown while `spec.backup` is set and no backup controller has reported on the cluster
/// (its `ContinuousArchiving` condition is missing).
pub const BACKUPS_HANDLED: &str = "BackupsHandled";
use pgpilot_api::cluster::condition::{CONTINUOUS_ARCHIVING, RESTORE_SOURCE_READY};

/// A cluster restored from a backup whose backup the backup controller has not chosen yet.
pub fn restore_pending(cluster: &PostgresCluster) -> bool {
    cluster
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.restore.is_some())
        && cluster
            .status
            .as_ref()
            .and_then(|s| s.restore.as_ref())
            .is_none()
}

/// The part of a PostgresCluster's status this controller owns: everything but what other
/// controllers report (the last backup, archiving, upgrades) and their conditions.
pub const PART: StatusPart<'static> = StatusPart {
    fields: &[
        "phase",
        "observedGeneration",
        "currentPrimary",
        "replicas",
        "readyInstances",
        "selector",
        "version",
        "image",
        "instances",
        "endpoints",
    ],
    conditions: &[
        READY,
        PROGRESSING,
        DEGRADED,
        BACKUPS_HANDLED,
        crate::reconcile::VERSION_CURRENT,
        crate::storage::CONDITION,
        crate::reconcile::ROLES_AND_DATABASES,
        crate::validate::PARAMETERS_ACCEPTED,
        conditions::STALLED,
    ],
};

/// What the reconcile saw.
#[derive(Default)]
pub struct Observed<'a> {
    pub statefulset: Option<&'a StatefulSet>,
    pub pods: Vec<&'a Pod>,
    /// A spec error that stops the reconcile (shown in Ready=False).
    pub invalid: Option<String>,
    /// A child the API server refused, with its answer (shown in Ready=False).
    pub refused: Option<String>,
    pub image: Option<String>,
    /// Major version the instances run (else the spec's is shown).
    pub version: Option<i32>,
    /// What Patroni reported, when the reconcile asked.
    pub members: Option<&'a Members>,
    /// What `Progressing` says while a roll or rolling restart is under way.
    pub progress: Option<Progress>,
    /// Further conditions the reconcile's steps decided (type, status, reason, message).
    pub conditions: Vec<(&'static str, Status, &'static str, String)>,
    /// Previous logs of crash-looping instances that said nothing on exit, by pod name.
    pub crash_logs: BTreeMap<String, Arc<str>>,
}

impl<'a> Observed<'a> {
    /// What the scheduler, the kubelet or Patroni say keeps `pod` from running.
    pub fn trouble(&self, pod: &Pod) -> Option<crate::trouble::Trouble> {
        let name = pod.name_any();
        let state = self.members.and_then(|m| m.state(&name));
        let log = self.crash_logs.get(&name).map(AsRef::as_ref);
        crate::trouble::of(pod, log, state.as_deref())
    }

    /// The StatefulSet and pods; nothing known from Patroni yet.
    pub fn of(statefulset: Option<&'a StatefulSet>, pods: &'a [Arc<Pod>]) -> Self {
        Self {
            statefulset,
            pods: pods.iter().map(AsRef::as_ref).collect(),
            ..Default::default()
        }
    }
}

/// Computes the status and writes this controller's part when it changed. Returns
/// whether it wrote.
pub async fn write(
    ctx: &Context,
    cluster: &PostgresCluster,
    observed: &Observed<'_>,
) -> Result<bool, Error> {
    let status = compute(cluster, observed, Time(Timestamp::now()));
    write_computed(ctx, cluster, &status).await
}

/// Writes this controller's part of `status` when it differs from the live one.
pub async fn write_computed(
    ctx: &Context,
    cluster: &PostgresCluster,
    status: &PostgresClusterStatus,
) -> Result<bool, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let wrote = apply_status(&api, &ctx.field_manager, &PART, cluster, status).await?;
    if wrote {
        ctx.metrics.wrote("PostgresCluster/status");
    }
    Ok(wrote)
}

fn role(pod: &Pod) -> Option<String> {
    pod.labels().get(labels::ROLE).cloned()
}

/// The status for `cluster` given what was observed, starting from its current status so
/// condition transition times survive.
pub fn compute(
    cluster: &PostgresCluster,
    observed: &Observed<'_>,
    now: Time,
) -> PostgresClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let names = Names::new(&cluster.name_any());
    let namespace = cluster.namespace().unwrap_or_default();
    let desired = cluster.spec.instances;

    let mut pods: Vec<&Pod> = observed
        .pods
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    let lags = observed.members.map(Members::lags).unwrap_or_default();
    status.instances = pods
        .iter()
        .map(|p| {
            let name = p.name_any();
            let member = observed
                .members
                .and_then(|m| m.instances.iter().find(|i| i.pod == name))
                .and_then(|i| i.member.as_ref());
            let role = observed
                .members
                .and_then(|m| m.role(&name))
                .or_else(|| role(p));
            InstanceStatus {
                lag_bytes: (role.as_deref() != Some(labels::ROLE_PRIMARY))
                    .then(|| lags.get(&name).copied())
                    .flatten(),
                role,
                state: observed
                    .members
                    .and_then(|m| m.state(&name))
                    .or_else(|| p.status.as_ref().and_then(|s| s.phase.clone())),
                ready: pod_ready(p),
                timeline: member.and_then(|m| m.timeline),
                postgres_version: member.and_then(|m| m.server_version).map(version_string),
                name,
            }
        })
        .collect();
    let ready = pods.iter().filter(|p| pod_ready(p)).count() as i32;
    let primary = pods
        .iter()
        .find(|p| role(p).as_deref() == Some(labels::ROLE_PRIMARY) && pod_ready(p))
        .map(|p| p.name_any());
    status.ready_instances = ready;
    status.replicas = observed
        .statefulset
        .and_then(|s| s.status.as_ref())
        .map(|s| s.replicas)
        .unwrap_or(0);
    status.selector = Some(format!(
        "{}={},{}={}",
        labels::CLUSTER,
        names.cluster,
        labels::COMPONENT,
        pgpilot_postgres::names::COMPONENT_INSTANCE
    ));
    status.current_primary = primary.clone();
    status.version = Some(observed.version.unwrap_or(cluster.spec.postgresql.version));
    if observed.image.is_some() {
        status.image = observed.image.clone();
    }
    status.endpoints = Some(Endpoints {
        read_write: format!("{}:{POSTGRES_PORT}", names.rw_host(&namespace)),
        read_only: format!("{}.{namespace}.svc:{POSTGRES_PORT}", names.ro_service()),
        any: format!("{}.{namespace}.svc:{POSTGRES_PORT}", names.r_service()),
    });
    status.observed_generation = generation;

    let was_serving = matches!(
        status.phase,
        Some(ClusterPhase::Ready | ClusterPhase::Degraded | ClusterPhase::Unavailable)
    );
    let pod_count = pods.len() as i32;
    // While scaling down, the instances on their way out still count as ready.
    // In synchronous mode Patroni promotes only a named synchronous standby: until it has
    // named one, a lost primary would not be replaced. Known only when Patroni answers.
    let awaiting_sync = cluster
        .spec
        .replication
        .as_ref()
        .is_some_and(|r| r.synchronous.is_some())
        && desired > 1
        && observed.members.is_some_and(|m| m.cluster.is_some())
        && !status.instances.iter().any(|i| {
            i.role
                .as_deref()
                .is_some_and(pgpilot_api::cluster::is_synchronous_standby)
        });
    // A replica that does not stream (waiting for its slot, restarting to follow a new
    // leader) would lose the writes it lacks if it took over: the cluster is not Ready until
    // Patroni's view shows every replica streaming. Known only when Patroni answers.
    let known = observed.members.is_some_and(|m| m.cluster.is_some());
    let not_streaming: Vec<&str> = status
        .instances
        .iter()
        .filter(|i| known && i.role.as_deref() != Some(labels::ROLE_PRIMARY))
        .filter(|i| i.state.as_deref() != Some("streaming"))
        .map(|i| i.name.as_str())
        .collect();
    let all_ready = primary.is_some()
        && ready >= desired
        && ready == pod_count
        && !awaiting_sync
        && not_streaming.is_empty();
    let scaling_down = pod_count > desired;
    let sts_current = observed.statefulset.is_some_and(|s| {
        s.status.as_ref().is_some_and(|st| {
            st.observed_generation == s.metadata.generation && st.replicas == desired
        })
    });
    // What the scheduler, kubelet or Patroni say of pods that do not run, for the messages below.
    let troubles: String = pods
        .iter()
        .filter_map(|p| observed.trouble(p))
        .map(|t| format!("; {t}"))
        .collect();
    let stopped = match (&observed.invalid, &observed.refused) {
        (Some(message), _) => Some(("InvalidSpec", message, "waiting for the spec to be fixed")),
        (None, Some(message)) => Some((
            "ChildRefused",
            message,
            "waiting for a change the API server accepts",
        )),
        (None, None) => None,
    };
    let (phase, ready_cond, progressing, degraded) = if let Some((reason, message, waiting)) =
        stopped
    {
        (
            status.phase.unwrap_or(ClusterPhase::Creating),
            (Status::False, reason, message.clone()),
            (Status::False, reason, waiting.to_owned()),
            (Status::False, reason, String::new()),
        )
    } else if cluster.spec.paused {
        (
            ClusterPhase::Paused,
            (
                Status::from(all_ready),
                "Paused",
                "reconciliation is paused by spec.paused".to_owned(),
            ),
            (
                Status::False,
                "Paused",
                "reconciliation is paused by spec.paused".to_owned(),
            ),
            (Status::False, "Paused", String::new()),
        )
    } else if all_ready {
        (
            ClusterPhase::Ready,
            (
                Status::True,
                "AllInstancesReady",
                format!("{ready}/{pod_count} instances ready"),
            ),
            if scaling_down {
                (
                    Status::True,
                    "ScalingDown",
                    format!("{pod_count} instances, {desired} wanted"),
                )
            } else {
                (
                    Status::from(!sts_current),
                    if sts_current {
                        "Converged"
                    } else {
                        "Reconciling"
                    },
                    String::new(),
                )
            },
            (Status::False, "Healthy", String::new()),
        )
    } else if primary.is_some() && ready >= desired && !not_streaming.is_empty() {
        let waiting = format!(
            "every instance is ready; waiting for {} to stream from the primary (until then a failover or switchover to it would lose writes)",
            not_streaming.join(", ")
        );
        (
            ClusterPhase::Degraded,
            (Status::False, "ReplicasNotStreaming", waiting.clone()),
            (Status::True, "Reconciling", waiting),
            (
                Status::True,
                "ReplicasNotStreaming",
                format!("not streaming: {}", not_streaming.join(", ")),
            ),
        )
    } else if primary.is_some() && awaiting_sync && ready >= desired {
        let waiting = "every instance is ready; waiting for Patroni to record a synchronous standby or quorum voter (until then no replica may take over)";
        (
            ClusterPhase::Degraded,
            (Status::False, "NoSynchronousStandby", waiting.to_owned()),
            (Status::True, "Reconciling", waiting.to_owned()),
            (
                Status::True,
                "NoSynchronousStandby",
                "no synchronous standby".to_owned(),
            ),
        )
    } else if primary.is_some() {
        (
            ClusterPhase::Degraded,
            (
                Status::False,
                "InstancesNotReady",
                format!("{ready}/{desired} instances ready; the primary serves{troubles}"),
            ),
            (
                Status::True,
                "Reconciling",
                format!("waiting for {} instance(s)", desired - ready),
            ),
            (
                Status::True,
                "InstancesNotReady",
                format!("{ready}/{desired} instances ready"),
            ),
        )
    } else {
        let phase = if was_serving {
            ClusterPhase::Unavailable
        } else {
            ClusterPhase::Creating
        };
        (
            phase,
            (
                Status::False,
                "NoPrimary",
                format!("no primary is ready ({ready}/{desired} instances ready){troubles}"),
            ),
            (
                Status::True,
                "Reconciling",
                "waiting for a primary".to_owned(),
            ),
            (
                Status::from(was_serving),
                if was_serving { "NoPrimary" } else { "Creating" },
                String::new(),
            ),
        )
    };
    status.phase = Some(phase);
    // A roll or rolling restart says where it is, whatever else is going on.
    let progressing = match &observed.progress {
        Some(p) if stopped.is_none() => (Status::from(p.moving), p.reason, p.message.clone()),
        _ => progressing,
    };
    let steps = observed
        .conditions
        .iter()
        .map(|(t, s, r, m)| (*t, (*s, *r, m.clone())));
    for (type_, (s, reason, message)) in [
        (READY, ready_cond),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .chain(steps)
    {
        conditions::set(
            &mut status.conditions,
            Update {
                type_,
                status: s,
                reason,
                message,
                observed_generation: generation,
            },
            now.clone(),
        );
    }
    // What kstatus (Flux, `kubectl wait`) reads as Failed rather than InProgress: nothing
    // moves until the user changes the spec.
    conditions::set_stalled(
        &mut status.conditions,
        stopped.map(|(reason, message, _)| (reason, message.clone())),
        generation,
        now.clone(),
    );
    let unarchived = cluster.spec.backup.is_some()
        && conditions::find(&status.conditions, CONTINUOUS_ARCHIVING).is_none();
    let unrestored = restore_pending(cluster)
        && conditions::find(&status.conditions, RESTORE_SOURCE_READY).is_none();
    let message = match (unarchived, unrestored) {
        (_, true) => Some(
            "spec.bootstrap.restore is set but no backup controller has checked its source: run a pgpilot manager with the backup controller (--controllers including backup). Until one does, no instance is created",
        ),
        (true, false) => Some(
            "spec.backup is set but no backup controller has reported on this cluster: run a pgpilot manager with the backup controller (--controllers including backup). Until one does, no stanza is created, archiving fails and WAL accumulates in pg_wal",
        ),
        (false, false) => None,
    };
    if let Some(message) = message {
        conditions::set(
            &mut status.conditions,
            Update {
                type_: BACKUPS_HANDLED,
                status: Status::False,
                reason: "NoBackupController",
                message: message.to_owned(),
                observed_generation: generation,
            },
            now,
        );
    } else {
        status.conditions.retain(|c| c.type_ != BACKUPS_HANDLED);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn pod(name: &str, role: Option<&str>, ready: bool) -> Pod {
        let mut labels = json!({"pgpilot.io/cluster": "db"});
        if let Some(r) = role {
            labels["pgpilot.io/role"] = json!(r);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "prod", "labels": labels},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn spec_backup_without_a_backup_controller_says_so_until_one_reports() {
        let mut c = cluster(crate::desired::fixtures::BACKED_UP);
        let status = observe(&c, &[]);
        let cond = conditions::find(&status.conditions, BACKUPS_HANDLED).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "NoBackupController")
        );
        assert!(cond.message.contains("--controllers"), "{}", cond.message);

        let mut reported = status.clone();
        reported
            .conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: CONTINUOUS_ARCHIVING.into(),
                status: "True".into(),
                reason: "Archiving".into(),
                message: String::new(),
                last_transition_time: now(),
                observed_generation: Some(1),
            });
        c.status = Some(reported);
        let status = observe(&c, &[]);
        assert!(conditions::find(&status.conditions, BACKUPS_HANDLED).is_none());

        let status = observe(&cluster(THREE), &[]);
        assert!(conditions::find(&status.conditions, BACKUPS_HANDLED).is_none());
    }

    #[test]
    fn a_restore_without_a_backup_controller_says_no_instance_comes() {
        let c = cluster(crate::desired::fixtures::RESTORED);
        assert!(restore_pending(&c));
        let status = observe(&c, &[]);
        let cond = conditions::find(&status.conditions, BACKUPS_HANDLED).unwrap();
        assert_eq!(cond.reason, "NoBackupController");
        assert!(
            cond.message.contains("no instance is created"),
            "{}",
            cond.message
        );
    }

    fn observe(c: &PostgresCluster, pods: &[Pod]) -> PostgresClusterStatus {
        compute(
            c,
            &Observed {
                statefulset: None,
                pods: pods.iter().collect(),
                invalid: None,
                image: Some("img".into()),
                ..Default::default()
            },
            now(),
        )
    }

    fn cond<'a>(s: &'a PostgresClusterStatus, t: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_new_cluster_is_creating_until_a_primary_is_ready() {
        let c = cluster(THREE);
        let s = observe(&c, &[pod("db-0", None, false)]);
        assert_eq!(s.phase, Some(ClusterPhase::Creating));
        assert_eq!(cond(&s, READY), ("False", "NoPrimary"));
        assert_eq!(cond(&s, PROGRESSING), ("True", "Reconciling"));
        assert_eq!(cond(&s, DEGRADED), ("False", "Creating"));
        assert!(conditions::find(&s.conditions, conditions::STALLED).is_none());
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(
            s.selector.as_deref(),
            Some("pgpilot.io/cluster=db,pgpilot.io/component=instance")
        );
        assert_eq!(s.endpoints.unwrap().read_write, "db-rw.prod.svc:5432");
    }

    #[test]
    fn ready_says_why_an_instance_does_not_run() {
        let c = cluster(THREE);
        let mut stuck = pod("db-2", None, false);
        stuck.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available"}))
            .unwrap(),
        ]);
        let pods = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
            stuck,
        ];
        let s = observe(&c, &pods);
        let ready = conditions::find(&s.conditions, READY).unwrap();
        assert_eq!(
            ready.message,
            "2/3 instances ready; the primary serves; db-2: Unschedulable: 0/1 nodes are available"
        );
        let s = observe(&c, &pods[2..]);
        let ready = conditions::find(&s.conditions, READY).unwrap();
        assert_eq!(
            ready.message,
            "no primary is ready (0/3 instances ready); db-2: Unschedulable: 0/1 nodes are available"
        );
    }

    #[test]
    fn all_instances_ready_with_a_primary_is_ready() {
        let c = cluster(THREE);
        let pods = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
            pod("db-2", Some("replica"), true),
        ];
        let s = observe(&c, &pods);
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
        assert_eq!(s.current_primary.as_deref(), Some("db-0"));
        assert_eq!(s.ready_instances, 3);
        assert_eq!(cond(&s, READY), ("True", "AllInstancesReady"));
        assert_eq!(s.instances[1].role.as_deref(), Some("replica"));
    }

    #[test]
    fn a_lost_replica_degrades_and_a_lost_primary_makes_it_unavailable() {
        let mut c = cluster(THREE);
        let healthy = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
            pod("db-2", Some("replica"), true),
        ];
        c.status = Some(observe(&c, &healthy));
        let s = observe(
            &c,
            &[
                pod("db-0", Some("primary"), true),
                pod("db-1", Some("replica"), true),
                pod("db-2", Some("replica"), false),
            ],
        );
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
        assert_eq!(cond(&s, DEGRADED), ("True", "InstancesNotReady"));
        c.status = Some(s);
        let s = observe(
            &c,
            &[
                pod("db-1", Some("replica"), true),
                pod("db-2", Some("replica"), true),
            ],
        );
        assert_eq!(s.phase, Some(ClusterPhase::Unavailable));
        assert_eq!(cond(&s, READY), ("False", "NoPrimary"));
    }

    #[test]
    fn instances_on_their_way_out_keep_the_cluster_ready_while_it_scales_down() {
        let mut c = cluster(THREE);
        c.spec.instances = 1;
        let pods = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
            pod("db-2", Some("replica"), true),
        ];
        let s = observe(&c, &pods);
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
        assert_eq!(cond(&s, PROGRESSING), ("True", "ScalingDown"));
        assert_eq!(cond(&s, DEGRADED), ("False", "Healthy"));
    }

    /// Patroni's view of a two-instance cluster: `db-0` leads, `db-1` has this role and state.
    fn two_members(standby_role: &str, standby_state: &str) -> Members {
        use pgpilot_postgres::patroni::{ClusterMember, ClusterView};
        Members {
            instances: vec![],
            cluster: Some(ClusterView {
                members: vec![
                    ClusterMember {
                        name: "db-0".into(),
                        role: Some("leader".into()),
                        state: Some("running".into()),
                        ..Default::default()
                    },
                    ClusterMember {
                        name: "db-1".into(),
                        role: Some(standby_role.into()),
                        state: Some(standby_state.into()),
                        ..Default::default()
                    },
                ],
                pause: false,
            }),
        }
    }

    fn observe_members(
        c: &PostgresCluster,
        pods: &[Pod],
        members: &Members,
    ) -> PostgresClusterStatus {
        compute(
            c,
            &Observed {
                pods: pods.iter().collect(),
                image: Some("img".into()),
                members: Some(members),
                ..Default::default()
            },
            now(),
        )
    }

    #[test]
    fn synchronous_mode_is_ready_only_once_patroni_names_a_synchronous_standby() {
        let c = cluster(
            "instances: 2\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nreplication: {synchronous: {mode: Required}}",
        );
        let pods = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
        ];
        let observe_with = |m: &Members| observe_members(&c, &pods, m);
        let members = |role: &str| two_members(role, "streaming");
        let waiting = observe_with(&members("replica"));
        assert_eq!(waiting.phase, Some(ClusterPhase::Degraded));
        assert_eq!(cond(&waiting, READY), ("False", "NoSynchronousStandby"));
        for role in ["sync_standby", "quorum_standby"] {
            let named = observe_with(&members(role));
            assert_eq!(named.phase, Some(ClusterPhase::Ready), "{role}");
        }
        // Without Patroni's view (it does not answer) readiness alone decides.
        assert_eq!(observe(&c, &pods).phase, Some(ClusterPhase::Ready));
    }

    #[test]
    fn a_replica_that_does_not_stream_keeps_the_cluster_from_ready() {
        let c = cluster("instances: 2\npostgresql: {version: 17}\nstorage: {size: 1Gi}");
        let pods = [
            pod("db-0", Some("primary"), true),
            pod("db-1", Some("replica"), true),
        ];
        let observe_with = |m: &Members| observe_members(&c, &pods, m);
        let members = |state: &str| two_members("replica", state);
        // Patroni's state of a replica that waits for its replication slot.
        let waiting = observe_with(&members("running"));
        assert_eq!(waiting.phase, Some(ClusterPhase::Degraded));
        assert_eq!(cond(&waiting, READY), ("False", "ReplicasNotStreaming"));
        let ready = pgpilot_toolkit::conditions::find(&waiting.conditions, READY).unwrap();
        assert!(
            ready.message.contains("waiting for db-1 to stream"),
            "{}",
            ready.message
        );
        let streaming = observe_with(&members("streaming"));
        assert_eq!(streaming.phase, Some(ClusterPhase::Ready));
    }

    #[test]
    fn the_same_observation_twice_gives_the_same_status() {
        let mut c = cluster(THREE);
        let pods = [pod("db-0", Some("primary"), true)];
        let first = observe(&c, &pods);
        c.status = Some(first.clone());
        let later = compute(
            &c,
            &Observed {
                statefulset: None,
                pods: pods.iter().collect(),
                invalid: None,
                image: Some("img".into()),
                ..Default::default()
            },
            Time(Timestamp::from_second(1_900_000_000).unwrap()),
        );
        assert_eq!(first, later, "no change, so no status write");
    }

    #[test]
    fn an_invalid_spec_shows_in_ready() {
        let c = cluster(THREE);
        let s = compute(
            &c,
            &Observed {
                statefulset: None,
                pods: vec![],
                invalid: Some("spec.postgresql.image: no image".into()),
                image: None,
                ..Default::default()
            },
            now(),
        );
        let ready = conditions::find(&s.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(ready.message, "spec.postgresql.image: no image");
        assert_eq!(cond(&s, conditions::STALLED), ("True", "InvalidSpec"));
    }

    #[test]
    fn a_refused_child_shows_in_ready_with_the_servers_answer() {
        let c = cluster(THREE);
        let answer = "apply StatefulSet db: StatefulSet.apps \"db\" is invalid: Limit must be set";
        let s = compute(
            &c,
            &Observed {
                refused: Some(answer.into()),
                ..Default::default()
            },
            now(),
        );
        let ready = conditions::find(&s.conditions, READY).unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("False", "ChildRefused", answer)
        );
        assert_eq!(s.phase, Some(ClusterPhase::Creating));
    }
}
