//! The controllers built into this manager. A controller crate joins with one line here.

use std::sync::Arc;

use pgpilot_backup::BackupController;
use pgpilot_cluster::validate::DefaultImages;
use pgpilot_cluster::{ClusterController, OperatorPods};
use pgpilot_rotation::RotationController;
use pgpilot_toolkit::runtime::ControllerRef;
use pgpilot_upgrade::UpgradeController;

/// What controllers take from the command line.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub default_images: DefaultImages,
    /// Image of the clusters' metrics exporter sidecar.
    pub exporter_image: String,
    /// The manager's pods, let in by the clusters' NetworkPolicies.
    pub operator: Option<OperatorPods>,
}

/// Every controller this build can run, in start order.
pub fn available(settings: &Settings) -> Vec<ControllerRef> {
    vec![
        Arc::new(ClusterController {
            default_images: settings.default_images.clone(),
            exporter_image: settings.exporter_image.clone(),
            operator: settings.operator.clone(),
            metrics: Default::default(),
        }),
        Arc::new(BackupController {
            default_images: settings.default_images.clone(),
            metrics: Default::default(),
        }),
        Arc::new(UpgradeController {
            default_images: settings.default_images.clone(),
            metrics: Default::default(),
        }),
        Arc::new(RotationController::default()),
    ]
}

/// The controllers to run for the names given on the command line (all available when
/// none are given). A known controller that this build lacks is an error, not a silent skip.
pub fn select(names: &[String], settings: &Settings) -> Result<Vec<ControllerRef>, String> {
    select_from(available(settings), names)
}

fn select_from(
    available: Vec<ControllerRef>,
    names: &[String],
) -> Result<Vec<ControllerRef>, String> {
    if names.is_empty() {
        return Ok(available);
    }
    names
        .iter()
        .map(|name| {
            available.iter().find(|c| c.name() == name).cloned().ok_or_else(|| {
                let have: Vec<&str> = available.iter().map(|c| c.name()).collect();
                format!(
                    "controller '{name}' is not built into this pgpilot-manager (available: {})",
                    if have.is_empty() {
                        "none yet".to_owned()
                    } else {
                        have.join(", ")
                    }
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::rbac::v1::PolicyRule;
    use pgpilot_toolkit::runtime::{Controller, RunContext, RunError};

    use super::*;

    /// Stands in for a controller crate in selection tests only; it is never run.
    struct Named(&'static str);

    #[async_trait::async_trait]
    impl Controller for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn rbac_rules(&self) -> Vec<PolicyRule> {
            vec![]
        }
        async fn run(&self, _: RunContext) -> Result<(), RunError> {
            Ok(())
        }
    }

    fn built() -> Vec<ControllerRef> {
        vec![
            Arc::new(Named("cluster")),
            Arc::new(Named("backup")),
            Arc::new(Named("upgrade")),
        ]
    }

    fn names(selected: &[ControllerRef]) -> Vec<&'static str> {
        selected.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn no_names_selects_everything_built() {
        assert_eq!(
            names(&select_from(built(), &[]).unwrap()),
            ["cluster", "backup", "upgrade"]
        );
    }

    #[test]
    fn a_subset_selects_only_what_it_names_in_the_given_order() {
        let picked = select_from(built(), &["upgrade".into(), "cluster".into()]).unwrap();
        assert_eq!(names(&picked), ["upgrade", "cluster"]);
    }

    #[test]
    fn a_name_missing_from_the_build_is_an_error_naming_what_is_available() {
        let err = select_from(built(), &["secret-rotation".into()])
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            "controller 'secret-rotation' is not built into this pgpilot-manager (available: cluster, backup, upgrade)"
        );
        assert_eq!(
            names(&select(&["secret-rotation".into()], &Settings::default()).unwrap()),
            ["secret-rotation"],
            "this build has it"
        );
    }
}
