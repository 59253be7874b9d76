//! Why an instance pod does not run, as the scheduler and the kubelet report it: shown on the
//! cluster (Ready's message, a Warning Event) so nobody has to find the pod to learn it.

use std::fmt;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

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

/// What keeps `pod` from running, if the scheduler or the kubelet said.
pub fn of(pod: &Pod) -> Option<Trouble> {
    let status = pod.status.as_ref()?;
    let trouble = |reason: &str, message: String| Trouble {
        pod: pod.name_any(),
        reason: reason.to_owned(),
        message: shorten(&message),
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
            last_exit(c)
        } else {
            waiting.message.clone().unwrap_or_default()
        };
        return Some(trouble(reason, format!("container {}: {message}", c.name)));
    }
    None
}

/// How the container last ended: its exit code and the error lines of its termination
/// message (the log's last lines, with FallbackToLogsOnError). Only lines that report an
/// error, and none that mentions a password: a log may quote a statement.
fn last_exit(c: &ContainerStatus) -> String {
    let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        return "restarting".to_owned();
    };
    let errors: Vec<&str> = t
        .message
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| {
            let lower = l.to_lowercase();
            ["error", "fatal", "panic", "critical"]
                .iter()
                .any(|w| lower.contains(w))
                && !lower.contains("password")
                && !lower.starts_with("statement:")
        })
        .collect();
    // The first error is usually the cause (initdb's), the last ones how the process ended.
    let shown: Vec<&str> = if errors.len() <= 3 {
        errors
    } else {
        vec![
            errors[0],
            "…",
            errors[errors.len() - 2],
            errors[errors.len() - 1],
        ]
    };
    let mut out = format!("exit code {}", t.exit_code);
    if !shown.is_empty() {
        out.push_str(": ");
        out.push_str(&shown.join(" | "));
    }
    out
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

    #[test]
    fn a_running_or_starting_pod_has_no_trouble() {
        assert_eq!(of(&pod(json!({"phase": "Running"}))), None);
        let creating = pod(
            json!({"containerStatuses": [{"name": "postgres", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(of(&creating), None);
    }

    #[test]
    fn the_schedulers_message_is_shown() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."}]}),
        );
        assert_eq!(
            of(&p).unwrap().to_string(),
            "db-1: Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn an_image_error_is_shown_with_the_kubelets_message() {
        let p = pod(
            json!({"containerStatuses": [{"name": "postgres", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image \"x\" is not present"}}}]}),
        );
        let t = of(&p).unwrap();
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
        let p = pod(
            json!({"containerStatuses": [{"name": "postgres", "image": "i", "imageID": "",
            "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "message": log}}}]}),
        );
        let t = of(&p).unwrap();
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
        let p = pod(
            json!({"containerStatuses": [{"name": "postgres", "image": "i", "imageID": "",
            "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": log}}}]}),
        );
        assert_eq!(
            of(&p).unwrap().message,
            "container postgres: exit code 1: initdb: error: invalid locale name \"xx\" | … | Traceback: raise PatroniFatalException | PatroniFatalException: 'Failed to bootstrap cluster'"
        );
    }

    #[test]
    fn a_long_message_is_cut() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "x".repeat(1000)}]}),
        );
        assert_eq!(of(&p).unwrap().message.chars().count(), MAX_MESSAGE + 1);
    }
}
