//! `pause`, `resume`, `maintenance`: one spec field, server-side applied under the field
//! manager `kubectl-pgpilot`. A field kubectl set (`kubectl apply`, `create`, `edit`) is taken
//! over; when anything else owns it — Argo CD, Flux, Helm: something that syncs it back — the
//! change is refused with who owns it: it belongs in Git, or `--force` takes the field over.

use anyhow::{Result, bail};
use kube::api::{Patch, PatchParams};
use pgpilot_api::PostgresCluster;

use crate::client::Target;

pub const FIELD_MANAGER: &str = "kubectl-pgpilot";

#[derive(clap::Args)]
pub struct Args {
    cluster: String,
    /// Take the field over from the manager that owns it (a GitOps tool will set it back
    /// on its next sync unless Git changes too).
    #[arg(long)]
    force: bool,
}

/// The apply: only `field`.
fn patch(cluster: &str, field: &str, value: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": cluster},
        "spec": {field: value},
    })
}

/// The field managers an apply conflict names (`conflict with "argocd-controller"`).
fn conflicting_managers(message: &str) -> Vec<&str> {
    message
        .split("conflict with \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// kubectl's own managers: a person's edit, not a tool that will sync the field back.
fn by_hand(manager: &str) -> bool {
    manager == "kubectl" || manager.starts_with("kubectl-")
}

pub async fn set(target: &Target, args: Args, field: &str, value: bool) -> Result<()> {
    target.cluster(&args.cluster).await?;
    let api = target.api::<PostgresCluster>();
    let body = patch(&args.cluster, field, value);
    let apply = async |force: bool| {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        api.patch(&args.cluster, &params, &Patch::Apply(&body))
            .await
    };
    let result = match apply(args.force).await {
        Err(kube::Error::Api(e))
            if e.code == 409 && conflicting_managers(&e.message).into_iter().all(by_hand) =>
        {
            apply(true).await
        }
        other => other,
    };
    match result {
        Ok(_) => {
            println!("postgrescluster/{} spec.{field}: {value}", args.cluster);
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => bail!(
            "spec.{field} of {} is managed elsewhere: {}\nChange it where the cluster is \
             declared (Git), or pass --force to take the field over.",
            args.cluster,
            e.message
        ),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubectl_edits_are_taken_over() {
        let argo = r#"Apply failed with 2 conflicts: conflict with "argocd-controller" using pgpilot.io/v1alpha1: .spec.paused, conflict with "kubectl-client-side-apply" using pgpilot.io/v1alpha1: .spec.paused"#;
        assert_eq!(
            conflicting_managers(argo),
            ["argocd-controller", "kubectl-client-side-apply"]
        );
        assert!(!conflicting_managers(argo).into_iter().all(by_hand));
        let kubectl = r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using pgpilot.io/v1alpha1: .spec.paused"#;
        assert!(conflicting_managers(kubectl).into_iter().all(by_hand));
        assert!(!by_hand("kustomize-controller"));
    }

    #[test]
    fn the_apply_carries_one_field() {
        let p = patch("db", "maintenance", true);
        assert_eq!(p["spec"], serde_json::json!({"maintenance": true}));
        assert_eq!(p["metadata"]["name"], "db");
    }
}
