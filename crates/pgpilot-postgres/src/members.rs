//! The instances of a cluster as Patroni and Kubernetes see them together, and the choice
//! of a successor for the primary: what every controller that moves the primary or
//! replaces pods decides from.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::patroni::{ClusterView, MemberStatus, PatroniApi, normalize_role};

/// What the reconcile knows of one instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance {
    pub pod: String,
    pub ordinal: i32,
    pub ip: Option<String>,
    pub ready: bool,
    /// Seconds the pod has not been Ready (0 when Ready or unknown).
    pub unready_for_secs: i64,
    /// The pod's `controller-revision-hash`: which StatefulSet revision it runs.
    pub revision: Option<String>,
    /// The role Patroni labelled the pod with (`pgpilot.io/role`), which the `-rw` and `-ro`
    /// Services select on.
    pub role_label: Option<String>,
    /// Seconds since the pod was created.
    pub age_secs: i64,
    /// Its Patroni answers HTTPS (the pod's readiness probe asks it so).
    pub api_tls: bool,
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
            .map(|r| normalize_role(&r))
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

    /// Whether `pod` follows the primary now: streaming as the DCS sees it, and not
    /// contradicted by what it said itself just now. The DCS record is written once per
    /// Patroni loop, so a replica that began a restart a moment ago still shows there as
    /// streaming; its own answer (`GET /health`) already says `starting` or `restarting`.
    pub fn streaming(&self, pod: &str) -> bool {
        let own = self
            .instances
            .iter()
            .find(|i| i.pod == pod)
            .and_then(|i| i.member.as_ref());
        let contradicted = own.is_some_and(|m| {
            m.state.as_deref() != Some("running")
                || m.replication_state
                    .as_deref()
                    .is_some_and(|r| r != "streaming")
        });
        self.state(pod).as_deref() == Some("streaming") && !contradicted
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

    /// Where to change the cluster-wide (DCS) configuration: the primary, else a member whose
    /// PostgreSQL failed under a running Patroni. Without a primary — the only member cannot
    /// start PostgreSQL with the configuration it has — the fix must still reach the DCS, or
    /// the cluster stays down whatever the spec says. A member that keeps trying counts too:
    /// Patroni says `starting` for as long as it waits on each attempt (a minute or more when
    /// the postmaster dies at once) and `start failed` only between attempts. Members starting
    /// or bootstrapping for less than [`STUCK_STARTING_SECS`] are left alone.
    pub fn config_address(&self) -> Option<(String, String)> {
        self.primary_address().or_else(|| {
            self.instances
                .iter()
                .filter(|i| {
                    let own = i.member.as_ref().and_then(|m| m.state.as_deref());
                    own.is_some_and(postgres_failed)
                        || (own == Some("starting") && i.unready_for_secs >= STUCK_STARTING_SECS)
                })
                .find_map(|i| Some((i.pod.clone(), i.ip.clone()?)))
        })
    }

    pub fn primary(&self) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| self.role(&i.pod).as_deref() == Some("primary") && i.ip.is_some())
    }

    /// The [`primary`](Self::primary) once it serves as one: its PostgreSQL runs out of
    /// recovery by its own account. The DCS names a new leader as soon as it takes the leader
    /// key, while its PostgreSQL still replays WAL until the promotion ends; stopping it then
    /// leaves a data directory "shut down in recovery".
    pub fn serving_primary(&self) -> Option<&Instance> {
        self.primary().filter(|p| {
            p.member.as_ref().is_some_and(|m| {
                m.state.as_deref() == Some("running")
                    && m.role.as_deref().map(normalize_role).as_deref() == Some("primary")
            })
        })
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

/// Pod label the StatefulSet controller sets to the revision a pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Ordinal of a StatefulSet pod (`db-2` → 2), -1 when the name has none.
pub fn ordinal(pod: &str) -> i32 {
    pod.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn unready_for_secs(pod: &Pod, now: Timestamp) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status != "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| (now - t.0).get_seconds().max(0))
        .unwrap_or(0)
}

/// What Kubernetes says of each instance pod (not being deleted), before Patroni is asked.
pub fn instances(pods: &[impl AsRef<Pod>], now: Timestamp) -> Vec<Instance> {
    pods.iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| Instance {
            pod: p.name_any(),
            ordinal: ordinal(&p.name_any()),
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            ready: pod_ready(p),
            unready_for_secs: unready_for_secs(p, now),
            revision: p.labels().get(REVISION_LABEL).cloned(),
            role_label: p.labels().get(pgpilot_api::labels::ROLE).cloned(),
            age_secs: p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| (now - t.0).get_seconds().max(0))
                .unwrap_or(0),
            api_tls: api_tls(p),
            member: None,
        })
        .collect()
}

fn api_tls(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name == "postgres")
        .filter_map(|c| {
            c.readiness_probe
                .as_ref()?
                .http_get
                .as_ref()?
                .scheme
                .as_deref()
        })
        .any(|scheme| scheme == "HTTPS")
}

/// The members that answer HTTPS.
pub fn https(instances: &[Instance]) -> BTreeSet<String> {
    instances
        .iter()
        .filter(|i| i.api_tls)
        .map(|i| i.pod.clone())
        .collect()
}

/// Asks every instance's Patroni about itself, and the primary (or any member that
/// answers) about the cluster. Members that do not answer stay unknown.
pub async fn observe(patroni: &PatroniApi, mut instances: Vec<Instance>) -> Members {
    let answers = futures::future::join_all(instances.iter().map(|i| async move {
        let ip = i.ip.as_deref()?;
        match patroni.member(&i.pod, ip).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(error = %e, "no answer");
                None
            }
        }
    }))
    .await;
    for (i, a) in instances.iter_mut().zip(answers) {
        i.member = a;
    }
    let asked = instances
        .iter()
        .filter(|i| i.member.is_some())
        .max_by_key(|i| {
            i.member
                .as_ref()
                .and_then(|m| m.role.as_deref())
                .map(normalize_role)
                == Some("primary".to_owned())
        });
    let cluster = match asked.and_then(|i| Some((i.pod.as_str(), i.ip.as_deref()?))) {
        Some((pod, ip)) => patroni.cluster(pod, ip).await.ok(),
        None => None,
    };
    Members { instances, cluster }
}

/// Bytes a successor may lag when chosen; Patroni's clean shutdown of the old primary sends
/// it the rest before the promotion.
pub const MAX_SUCCESSOR_LAG: i64 = 1 << 20;

/// The healthy replica `keep` accepts that should take over from the primary: a synchronous
/// standby first (in synchronous mode Patroni accepts only one), then the least lagging.
pub fn successor(
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
        .filter(|i| members.streaming(&i.pod))
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

/// Members as tests describe them: `db-0`, `db-1`, … with Patroni's roles and lags.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use serde_json::Value;

    use super::*;
    use crate::patroni::ClusterMember;

    /// An instance whose Patroni answered `state`; `streaming` is a replica that answered
    /// `running` with `replication_state: streaming`, as Patroni does.
    pub fn instance(ordinal: i32, state: &str, ready: bool) -> Instance {
        let (state, replication_state) = match state {
            "streaming" => ("running", Some("streaming".to_owned())),
            other => (other, None),
        };
        Instance {
            pod: format!("db-{ordinal}"),
            ordinal,
            ip: Some(format!("10.245.0.{}", 10 + ordinal)),
            ready,
            unready_for_secs: if ready { 0 } else { 120 },
            revision: Some("rev-1".into()),
            role_label: None,
            age_secs: 3600,
            api_tls: true,
            member: Some(MemberStatus {
                state: Some(state.into()),
                replication_state,
                ..Default::default()
            }),
        }
    }

    /// `roles[n]` and its lag are db-n's in the DCS view, with the state db-n answered; its
    /// pod is labelled with that role.
    pub fn members(roles: &[(&str, Option<i64>)], mut instances: Vec<Instance>) -> Members {
        for (i, (role, _)) in instances.iter_mut().zip(roles) {
            let own = match normalize_role(role).as_str() {
                "primary" => "primary",
                _ => "replica",
            };
            i.role_label = Some(own.to_owned());
            if let Some(m) = i.member.as_mut() {
                m.role = Some(own.to_owned());
            }
        }
        Members {
            cluster: Some(ClusterView {
                members: roles
                    .iter()
                    .enumerate()
                    .map(|(n, (role, lag))| ClusterMember {
                        name: format!("db-{n}"),
                        role: Some((*role).into()),
                        lag: lag.map(Value::from),
                        state: instances.get(n).and_then(|i| {
                            let m = i.member.as_ref()?;
                            m.replication_state.clone().or_else(|| m.state.clone())
                        }),
                        ..Default::default()
                    })
                    .collect(),
                pause: false,
            }),
            instances,
        }
    }

    pub fn three(roles: [&str; 3]) -> Members {
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
}

/// Patroni states in which PostgreSQL does not run while Patroni, still up, waits or tries
/// again (`start failed`, `restart failed`, `crashed`, …).
/// How long a member may be `starting` (unready) before, with no primary, the cluster-wide
/// configuration is changed through it: longer than a bootstrap takes on a loaded node.
pub const STUCK_STARTING_SECS: i64 = 90;

pub fn postgres_failed(state: &str) -> bool {
    state.ends_with(" failed") || state == "crashed"
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::fixtures::*;
    use super::*;
    use crate::patroni::{AUTH_TAG, ClusterMember, version_string};

    fn successor_of(m: &Members, synchronous: bool) -> Option<String> {
        successor(m, synchronous, |_| true).map(|i| i.pod.clone())
    }

    #[test]
    fn a_synchronous_standby_comes_first_then_the_least_lagging() {
        let m = three(["replica", "sync_standby", "leader"]);
        assert_eq!(successor_of(&m, false).as_deref(), Some("db-1"));
        let m = three(["leader", "replica", "replica"]);
        assert_eq!(
            successor_of(&m, false).as_deref(),
            Some("db-1"),
            "db-2 lags 4 KiB"
        );
        assert_eq!(
            successor_of(&m, true),
            None,
            "synchronous mode needs a synchronous standby"
        );
        let quorum = three(["quorum_standby", "quorum_standby", "leader"]);
        assert_eq!(successor_of(&quorum, true).as_deref(), Some("db-0"));
    }

    #[test]
    fn only_a_replica_that_follows_the_primary_now_can_succeed_it() {
        let mut m = three(["replica", "leader", "replica"]);
        // db-0 restarts to follow the new leader: `running`, not `streaming` yet, although
        // the DCS still shows its last record.
        m.instances[0].member.as_mut().unwrap().replication_state =
            Some("in archive recovery".into());
        assert_eq!(successor_of(&m, false).as_deref(), Some("db-2"));
        // A restart began a moment ago: it says so itself, the DCS does not know yet.
        let mut m = three(["replica", "leader", "replica"]);
        m.instances[2].member.as_mut().unwrap().state = Some("restarting".into());
        assert_eq!(successor_of(&m, false).as_deref(), Some("db-0"));
        // Streaming, but still on the old timeline.
        let mut m = three(["replica", "leader", "replica"]);
        for (i, tl) in m.instances.iter_mut().zip([1, 2, 1]) {
            i.member.as_mut().unwrap().timeline = Some(tl);
        }
        assert_eq!(successor_of(&m, false), None);
        // Lag unknown (the DCS says "unknown") or too large.
        let mut m = three(["replica", "leader", "replica"]);
        m.cluster.as_mut().unwrap().members[0].lag = Some(Value::from("unknown"));
        m.cluster.as_mut().unwrap().members[2].lag = Some(Value::from(64 << 20));
        assert_eq!(successor_of(&m, false), None);
    }

    #[test]
    fn the_configuration_goes_through_the_primary_else_a_member_whose_postgres_failed() {
        let m = three(["replica", "leader", "replica"]);
        assert_eq!(m.config_address().map(|a| a.0).as_deref(), Some("db-1"));
        let mut first = instance(0, "starting", false);
        first.unready_for_secs = 20;
        let starting = members(&[], vec![first.clone()]);
        assert_eq!(starting.config_address(), None, "bootstrapping: left alone");
        // Starting again and again, PostgreSQL dying each time: the fix goes through it.
        first.unready_for_secs = STUCK_STARTING_SECS;
        let stuck = members(&[], vec![first]);
        assert_eq!(stuck.config_address().map(|a| a.0).as_deref(), Some("db-0"));
        let failed = members(
            &[],
            vec![
                instance(0, "stopped", false),
                instance(1, "start failed", false),
            ],
        );
        assert_eq!(
            failed.config_address(),
            Some(("db-1".to_owned(), "10.245.0.11".to_owned()))
        );
        assert!(postgres_failed("restart failed") && postgres_failed("crashed"));
        assert!(!postgres_failed("stopped") && !postgres_failed("running"));
    }

    /// Members as Patroni may describe them, sensible or not: roles, states and lags from
    /// what it says (and some it does not), timelines and readiness in any combination.
    fn any_members() -> impl proptest::strategy::Strategy<Value = Members> {
        use proptest::prelude::*;
        let role = prop::sample::select(vec![
            "leader",
            "master",
            "primary",
            "standby_leader",
            "replica",
            "sync_standby",
            "quorum_standby",
            "",
            "Leader",
        ]);
        let state = prop::sample::select(vec![
            "running",
            "streaming",
            "starting",
            "start failed",
            "stopped",
            "crashed",
            "restarting",
            "creating replica",
            "in archive recovery",
        ]);
        let lag = prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(Value::from(n))),
            Just(Some(Value::from("unknown"))),
            Just(Some(Value::Null)),
        ];
        let member = (
            role.clone(),
            state.clone(),
            state,
            lag,
            proptest::option::of(0i64..4),
            any::<bool>(),
            any::<bool>(),
        );
        prop::collection::vec(member, 1..5).prop_map(move |found| {
            let mut view = Vec::new();
            let mut instances = Vec::new();
            for (n, (role, dcs_state, own_state, lag, timeline, ready, has_ip)) in
                found.into_iter().enumerate()
            {
                let n = n as i32;
                let mut i = instance(n, own_state, ready);
                if !has_ip {
                    i.ip = None;
                }
                if let Some(m) = i.member.as_mut() {
                    m.timeline = timeline;
                    m.role = Some(role.to_owned());
                }
                i.role_label = Some(normalize_role(role));
                instances.push(i);
                view.push(ClusterMember {
                    name: format!("db-{n}"),
                    role: Some(role.to_owned()),
                    state: Some(dcs_state.to_owned()),
                    timeline,
                    lag,
                });
            }
            Members {
                instances,
                cluster: Some(ClusterView {
                    members: view,
                    pause: false,
                }),
            }
        })
    }

    proptest::proptest! {
        // Patroni's answers are outside data: whatever arrives reads as an answer or an error.
        #[test]
        fn any_answer_reads_without_panicking(text in ".{0,200}") {
            let _ = serde_json::from_str::<MemberStatus>(&text);
            let _ = serde_json::from_str::<ClusterView>(&text);
        }

        #[test]
        fn any_json_shaped_like_an_answer_reads_without_panicking(
            state in ".{0,20}",
            number in proptest::num::i64::ANY,
            flag in proptest::bool::ANY,
        ) {
            let own = serde_json::json!({"state": state, "role": state, "server_version": number,
                "timeline": number, "pending_restart": flag, "tags": {AUTH_TAG: number}});
            if let Ok(m) = serde_json::from_value::<MemberStatus>(own) {
                let _ = m.auth_token();
            }
            let view = serde_json::json!({"members": [{"name": state, "lag": number, "timeline": state}], "pause": flag});
            let _ = serde_json::from_value::<ClusterView>(view);
            let _ = version_string(number);
        }

        // Whatever the members say, a successor is a ready replica (never the primary) that
        // streams on the primary's timeline with a known, small lag, and a synchronous
        // standby when synchronous replication is on.
        #[test]
        fn a_successor_always_follows_the_primary_closely(m in any_members(), synchronous in proptest::bool::ANY) {
            for i in &m.instances {
                let _ = (m.role(&i.pod), m.state(&i.pod), m.streaming(&i.pod), m.ip(&i.pod));
            }
            let _ = m.config_address();
            if let Some(s) = successor(&m, synchronous, |_| true) {
                let primary = m.primary().expect("a successor implies a primary");
                proptest::prop_assert_ne!(&s.pod, &primary.pod);
                proptest::prop_assert!(s.ready && m.streaming(&s.pod));
                proptest::prop_assert_eq!(m.timeline(&s.pod), m.timeline(&primary.pod));
                proptest::prop_assert!(m.lags().get(&s.pod).is_some_and(|l| *l <= MAX_SUCCESSOR_LAG));
                if synchronous {
                    let role = m.role(&s.pod).unwrap_or_default();
                    proptest::prop_assert!(pgpilot_api::cluster::is_synchronous_standby(&role), "{role}");
                }
            }
        }
    }

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("db-main-12"), 12);
        assert_eq!(ordinal("db"), -1);
    }
}
