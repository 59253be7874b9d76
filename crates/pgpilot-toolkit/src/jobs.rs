//! What a Job of ours ended with: its conditions and the termination message its pods wrote.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// The Job's condition `type_` (`Complete`, `Failed`) when it is True.
pub fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// What the latest of the Job's pods (among `pods`) that ended wrote as its termination
/// message; with `failed_only`, the latest that failed.
pub fn last_message(job: &Job, pods: &[Arc<Pod>], failed_only: bool) -> Option<String> {
    let uid = job.uid()?;
    pods.iter()
        .filter(|p| p.labels().get("batch.kubernetes.io/controller-uid") == Some(&uid))
        .filter_map(|p| {
            let terminated = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.clone())?;
            (!failed_only || terminated.exit_code != 0)
                .then_some((terminated.finished_at, terminated.message?))
        })
        .max_by_key(|(at, _)| at.as_ref().map(|t| t.0))
        .map(|(_, message)| message)
}
