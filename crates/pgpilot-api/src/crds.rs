//! The CustomResourceDefinitions of every pgpilot kind.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{BackupSchedule, PostgresBackup, PostgresCluster, PostgresUpgrade, SecretRotation};

/// Every CRD with the file name it has under `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("postgresclusters.yaml", PostgresCluster::crd()),
        ("postgresbackups.yaml", PostgresBackup::crd()),
        ("backupschedules.yaml", BackupSchedule::crd()),
        ("postgresupgrades.yaml", PostgresUpgrade::crd()),
        ("secretrotations.yaml", SecretRotation::crd()),
    ]
}
