//! Why an instance pod does not run, as the scheduler, the kubelet or Patroni report it:
//! shown on the cluster (Ready's message, a Warning Event) so nobody has to find the pod to
//! learn it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, LogParams};
use kube::{Client, ResourceExt};
use pgpilot_postgres::members::{Members, postgres_failed};
use tracing::Instrument;

/// Waiting reasons that do not resolve by themselves.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The longest message shown for one pod.
const MAX_MESSAGE: usize = 400;

/// One instance's trouble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    pub pod: String,
    /// The scheduler's or kubelet's reason (`Unschedulable`, `CrashLoopBackOff`, …).
    pub reason: String,
    pub message: String,
    /// The cause is still to be read from the log: Ready shows the trouble, but its Event
    /// waits for the cause (Kubernetes keeps an Event's first note when it repeats).
    pub cause_pending: bool,
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pod, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// What keeps `pod` from running, if the scheduler, the kubelet or Patroni (its member state
/// `patroni_state`) said. `log` holds the error lines [`CrashLogs`] read for it: a
/// crash-looping container's previous log when its termination message is empty, or the
/// running container's log when Patroni reports PostgreSQL failed.
pub fn of(pod: &Pod, log: Option<&str>, patroni_state: Option<&str>) -> Option<Trouble> {
    let status = pod.status.as_ref()?;
    let trouble = |reason: &str, message: String| Trouble {
        pod: pod.name_any(),
        reason: reason.to_owned(),
        message: shorten(&message),
        cause_pending: false,
    };
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return Some(trouble(
            "Unschedulable",
            c.message.clone().unwrap_or_default(),
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let Some(reason) = waiting.reason.as_deref().filter(|r| STUCK.contains(r)) else {
            continue;
        };
        let message = if reason == "CrashLoopBackOff" {
            last_exit(c, log)
        } else {
            waiting.message.clone().unwrap_or_default()
        };
        return Some(trouble(reason, format!("container {}: {message}", c.name)));
    }
    let state = patroni_state.filter(|s| postgres_failed(s))?;
    let mut message = format!("Patroni: PostgreSQL {state}");
    let errors = shown(error_lines(log.unwrap_or_default()));
    let cause_pending = errors.is_empty();
    if !cause_pending {
        message.push_str(": ");
        message.push_str(&errors.join(" | "));
    }
    Some(Trouble {
        cause_pending,
        ..trouble("PostgresNotRunning", message)
    })
}

/// How the container last ended: its exit code and the error lines of its termination
/// message (the log's last lines, with FallbackToLogsOnError, after a non-zero exit) or else of
/// its previous log.
fn last_exit(c: &ContainerStatus, previous_log: Option<&str>) -> String {
    let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        return "restarting".to_owned();
    };
    let mut errors = error_lines(t.message.as_deref().unwrap_or_default());
    if errors.is_empty() {
        errors = error_lines(previous_log.unwrap_or_default());
    }
    let shown = shown(errors);
    let mut out = format!("exit code {}", t.exit_code);
    if !shown.is_empty() {
        out.push_str(": ");
        out.push_str(&shown.join(" | "));
    }
    out
}

/// The first error is usually the cause (initdb's, PostgreSQL's FATAL), the last ones how
/// the process ended.
fn shown(errors: Vec<&str>) -> Vec<&str> {
    if errors.len() <= 3 {
        return errors;
    }
    vec![
        errors[0],
        "…",
        errors[errors.len() - 2],
        errors[errors.len() - 1],
    ]
}

/// The lines of a log that report an error, and none that mentions a password: a log may
/// quote a statement.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| {
            let lower = l.to_lowercase();
            ["error", "fatal", "panic", "critical"]
                .iter()
                .any(|w| lower.contains(w))
                && !lower.contains("password")
                && !lower.starts_with("statement:")
        })
        .collect()
}

/// A log worth reading for a pod's trouble.
#[derive(Debug, PartialEq, Eq)]
struct WantedLog {
    container: String,
    /// The container's previous run (a crash loop), or the running one.
    previous: bool,
    /// What the log is read for: a new restart or Patroni state reads it again.
    occasion: String,
}

/// How long the log of a running container read for a Patroni failure stands: Patroni tries
/// again, and a later attempt may fail for another reason.
const RUNNING_LOG_TTL: Duration = Duration::from_secs(60);

/// The log worth reading for `pod`: its crash-looping container's previous run when the
/// termination message names no error (a process that exits 0, as Patroni does when
/// bootstrapping fails, gets none), or the `postgres` container's current log when Patroni
/// reports PostgreSQL failed (`patroni_state`).
fn log_wanted(pod: &Pod, patroni_state: Option<&str>) -> Option<WantedLog> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let crash_loop = statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let terminated = c.last_state.as_ref()?.terminated.as_ref()?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff")
            && error_lines(terminated.message.as_deref().unwrap_or_default()).is_empty())
        .then(|| WantedLog {
            container: c.name.clone(),
            previous: true,
            occasion: format!("restart {}", c.restart_count),
        })
    });
    crash_loop.or_else(|| {
        let state = patroni_state.filter(|s| postgres_failed(s))?;
        let postgres = statuses.iter().find(|c| c.name == "postgres")?;
        postgres.state.as_ref()?.running.as_ref()?;
        Some(WantedLog {
            container: postgres.name.clone(),
            previous: false,
            occasion: format!("{state} in run {}", postgres.restart_count),
        })
    })
}

/// The error lines of troubled instances' logs, read once per occasion (by pod uid: a new
/// restart, a new Patroni failure; a running container's again after [`RUNNING_LOG_TTL`])
/// rather than on every reconcile.
#[derive(Default)]
pub struct CrashLogs(Mutex<HashMap<String, LogRead>>);

/// The occasion a log was read for, when, and its error lines.
type LogRead = (String, Instant, Arc<str>);

impl CrashLogs {
    /// The error lines of the last lines of each pod's [`log_wanted`], by pod name. A log that
    /// cannot be read is left out (the trouble is still shown, without them).
    pub async fn read(
        &self,
        client: &Client,
        pods: &[Arc<Pod>],
        members: Option<&Members>,
    ) -> BTreeMap<String, Arc<str>> {
        let mut found = BTreeMap::new();
        for pod in pods {
            let (name, uid) = (pod.name_any(), pod.uid().unwrap_or_default());
            let state = members.and_then(|m| m.state(&name));
            let Some(wanted) = log_wanted(pod, state.as_deref()) else {
                continue;
            };
            let cached = self.cache().get(&uid).cloned();
            if let Some((_, _, text)) = cached.filter(|(occasion, read_at, _)| {
                *occasion == wanted.occasion
                    && (wanted.previous || read_at.elapsed() < RUNNING_LOG_TTL)
            }) {
                found.insert(name, text);
                continue;
            }
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            let params = LogParams {
                container: Some(wanted.container),
                previous: wanted.previous,
                tail_lines: Some(60),
                limit_bytes: Some(32 * 1024),
                ..Default::default()
            };
            match api
                .logs(&name, &params)
                .instrument(tracing::debug_span!("kube.logs", pod = %name))
                .await
            {
                Ok(log) => {
                    // Only the lines that can be shown are kept (small, and no other log line
                    // stays in memory).
                    let text: Arc<str> = Arc::from(error_lines(&log).join("\n"));
                    let mut cache = self.cache();
                    // Pods come and go; a crash-looping pod's entry is small. Bounded anyway.
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(uid, (wanted.occasion, Instant::now(), text.clone()));
                    found.insert(name, text);
                }
                Err(e) => tracing::debug!(pod = %name, error = %e, "log not readable"),
            }
        }
        found
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, LogRead>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(MAX_MESSAGE).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "db-1"}, "status": status})).unwrap()
    }

    /// A pod whose `postgres` container is in `state`, after `restarts` restarts ending in
    /// `last_state`.
    fn postgres(restarts: i32, state: serde_json::Value, last_state: serde_json::Value) -> Pod {
        pod(
            json!({"containerStatuses": [{"name": "postgres", "image": "i", "imageID": "",
            "ready": false, "restartCount": restarts, "state": state, "lastState": last_state}]}),
        )
    }

    #[test]
    fn a_running_or_starting_pod_has_no_trouble() {
        assert_eq!(of(&pod(json!({"phase": "Running"})), None, None), None);
        let creating = postgres(
            0,
            json!({"waiting": {"reason": "ContainerCreating"}}),
            json!({}),
        );
        assert_eq!(of(&creating, None, None), None);
    }

    #[test]
    fn the_schedulers_message_is_shown() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."}]}),
        );
        assert_eq!(
            of(&p, None, None).unwrap().to_string(),
            "db-1: Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn an_image_error_is_shown_with_the_kubelets_message() {
        let p = postgres(
            0,
            json!({"waiting": {"reason": "ErrImageNeverPull", "message": "image \"x\" is not present"}}),
            json!({}),
        );
        let t = of(&p, None, None).unwrap();
        assert_eq!(t.reason, "ErrImageNeverPull");
        assert_eq!(t.message, "container postgres: image \"x\" is not present");
    }

    #[test]
    fn a_crash_loop_shows_the_exit_and_the_error_lines_but_no_password() {
        let log = "2026-12-06 INFO: starting\n\
                   initdb: error: invalid locale name \"xx_XX\"\n\
                   LOG:  statement: ALTER ROLE app PASSWORD 'secret'\n\
                   ERROR: syntax error near PASSWORD 'secret'\n\
                   STATEMENT: ALTER ROLE error\n\
                   CRITICAL: failed to bootstrap cluster";
        let p = postgres(
            3,
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}),
            json!({"terminated": {"exitCode": 1, "message": log}}),
        );
        let t = of(&p, None, None).unwrap();
        assert_eq!(t.reason, "CrashLoopBackOff");
        assert_eq!(
            t.message,
            "container postgres: exit code 1: initdb: error: invalid locale name \"xx_XX\" | CRITICAL: failed to bootstrap cluster"
        );
        assert!(!t.to_string().contains("secret"));
    }

    #[test]
    fn of_many_error_lines_the_first_and_the_last_two_are_shown() {
        let log = "initdb: error: invalid locale name \"xx\"\nERROR: Initdb failed\n\
                   INFO: removing initialize key after failed attempt\n\
                   Traceback: raise PatroniFatalException\nPatroniFatalException: 'Failed to bootstrap cluster'";
        let p = postgres(
            3,
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"exitCode": 1, "message": log}}),
        );
        assert_eq!(
            of(&p, None, None).unwrap().message,
            "container postgres: exit code 1: initdb: error: invalid locale name \"xx\" | … | Traceback: raise PatroniFatalException | PatroniFatalException: 'Failed to bootstrap cluster'"
        );
    }

    #[test]
    fn a_crash_loop_that_exits_0_takes_its_lines_from_the_previous_log() {
        let p = postgres(
            4,
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"exitCode": 0}}),
        );
        assert_eq!(
            log_wanted(&p, None),
            Some(WantedLog {
                container: "postgres".into(),
                previous: true,
                occasion: "restart 4".into()
            })
        );
        let log =
            "INFO: trying to bootstrap a new cluster\ninitdb: error: invalid locale name \"xx\"\n";
        assert_eq!(
            of(&p, Some(log), None).unwrap().message,
            "container postgres: exit code 0: initdb: error: invalid locale name \"xx\""
        );
        assert_eq!(
            of(&p, None, None).unwrap().message,
            "container postgres: exit code 0"
        );
        // With error lines in its termination message, no log is read.
        let mut said = p.clone();
        said.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .last_state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .message = Some("FATAL: boom".into());
        assert_eq!(log_wanted(&said, None), None);
    }

    #[test]
    fn postgres_failing_under_a_running_patroni_is_shown_with_its_log() {
        let p = postgres(
            0,
            json!({"running": {"startedAt": "2026-12-07T07:00:00Z"}}),
            json!({}),
        );
        assert_eq!(of(&p, None, Some("running")), None);
        assert_eq!(log_wanted(&p, Some("running")), None);
        assert_eq!(
            log_wanted(&p, Some("start failed")),
            Some(WantedLog {
                container: "postgres".into(),
                previous: false,
                occasion: "start failed in run 0".into()
            })
        );
        let log = "2026-12-07 07:01:00 UTC [61] FATAL:  could not access file \"not_there\": No such file or directory\n\
                   2026-12-07 07:01:00 UTC [61] LOG:  database system is shut down";
        let t = of(&p, Some(log), Some("start failed")).unwrap();
        assert_eq!(t.reason, "PostgresNotRunning");
        assert!(!t.cause_pending);
        assert!(of(&p, None, Some("start failed")).unwrap().cause_pending);
        assert_eq!(
            t.message,
            "Patroni: PostgreSQL start failed: 2026-12-07 07:01:00 UTC [61] FATAL:  could not access file \"not_there\": No such file or directory"
        );
        for state in ["restart failed", "crashed", "initdb failed"] {
            assert!(of(&p, None, Some(state)).is_some(), "{state}");
        }
        for state in [
            "starting",
            "restarting",
            "stopped",
            "creating replica",
            "streaming",
        ] {
            assert_eq!(of(&p, None, Some(state)), None, "{state}");
        }
    }

    #[test]
    fn a_long_message_is_cut() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "x".repeat(1000)}]}),
        );
        assert_eq!(
            of(&p, None, None).unwrap().message.chars().count(),
            MAX_MESSAGE + 1
        );
    }
}
