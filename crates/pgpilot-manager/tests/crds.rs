//! The CRDs against a real API server: they install, the table of good and bad objects gets
//! the intended verdicts, and printer columns, categories, short names and the scale
//! subresource work through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use pgpilot_api::fixtures::{Case, validation_cases};
use pgpilot_testkit::{TestNamespace, cluster, install_crds};
use serde_json::Value;

fn resource(kind: &str) -> ApiResource {
    let plural = match kind {
        "PostgresCluster" => "postgresclusters",
        "PostgresBackup" => "postgresbackups",
        "BackupSchedule" => "backupschedules",
        "PostgresUpgrade" => "postgresupgrades",
        "SecretRotation" => "secretrotations",
        other => panic!("unknown kind {other}"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pgpilot.io", "v1alpha1", kind),
        plural,
    )
}

fn object(value: &Value) -> DynamicObject {
    serde_json::from_value(value.clone()).unwrap()
}

/// Sends one case; returns the API server's verdict as Ok or the rejection message.
async fn send(api: &Api<DynamicObject>, case: &Case) -> Result<(), String> {
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let new = object(&case.object);
    match &case.old {
        None => api.create(&dry_run, &new).await.map(|_| ()),
        Some(old) => {
            let stored = api
                .create(&PostParams::default(), &object(old))
                .await
                .map_err(|e| format!("the old object of {} was refused: {e}", case.name))?;
            let mut replacement = new;
            replacement.metadata.resource_version = stored.metadata.resource_version;
            api.replace(&replacement.name_any(), &dry_run, &replacement)
                .await
                .map(|_| ())
        }
    }
    .map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => format!("transport error: {other}"),
    })
}

#[tokio::test]
async fn the_api_server_gives_every_case_of_the_table_the_intended_verdict() {
    let client = cluster().admin().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "cel").await.unwrap();
    let cases = validation_cases();
    assert!(cases.len() > 90, "the table lost its cases");
    let mut failures = vec![];
    for case in &cases {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns.name, &resource(&case.kind));
        let verdict = send(&api, case).await;
        let problem = case.judge(verdict);
        if let Some(p) = problem {
            failures.push(format!("{p} ({:?})", case.layer));
        }
    }
    ns.delete().await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn printer_columns_categories_and_short_names_work_through_kubectl() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "columns").await.unwrap();
    let examples = pgpilot_testkit::repo_root().join("examples");
    c.kubectl(
        &["apply", "-n", &ns.name, "-f", examples.to_str().unwrap()],
        None,
    )
    .unwrap();

    let clusters = c.kubectl(&["get", "pgc", "-n", &ns.name], None).unwrap();
    let header: Vec<&str> = clusters
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "INSTANCES",
            "READY",
            "VERSION",
            "PRIMARY",
            "PHASE",
            "AGE"
        ],
        "{clusters}"
    );
    assert!(
        clusters
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("demo "),
        "{clusters}"
    );

    let backups = c
        .kubectl(&["get", "pgbackup", "-n", &ns.name], None)
        .unwrap();
    assert!(backups.starts_with("NAME"), "{backups}");
    assert!(
        backups.contains("CLUSTER") && backups.contains("SIZE"),
        "{backups}"
    );

    // `kubectl get pgpilot` lists every kind through the category.
    let all = c
        .kubectl(&["get", "pgpilot", "-n", &ns.name, "-o", "name"], None)
        .unwrap();
    for kind in [
        "postgrescluster",
        "postgresbackup",
        "backupschedule",
        "postgresupgrade",
        "secretrotation",
    ] {
        assert!(
            all.contains(&format!("{kind}.pgpilot.io/")),
            "{kind} missing from `get pgpilot`:\n{all}"
        );
    }
    for short in [
        "pgc",
        "pgcluster",
        "pgb",
        "pgbs",
        "pgu",
        "pgupgrade",
        "pgrot",
    ] {
        c.kubectl(&["get", short, "-n", &ns.name], None)
            .unwrap_or_else(|e| panic!("short name {short}: {e}"));
    }
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn the_scale_subresource_sets_instances() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "scale").await.unwrap();
    let examples = pgpilot_testkit::repo_root().join("examples/cluster.yaml");
    c.kubectl(
        &["apply", "-n", &ns.name, "-f", examples.to_str().unwrap()],
        None,
    )
    .unwrap();
    c.kubectl(&["scale", "-n", &ns.name, "pgc/demo", "--replicas=5"], None)
        .unwrap();
    let api: Api<pgpilot_api::PostgresCluster> = Api::namespaced(client.clone(), &ns.name);
    let scaled = pgpilot_testkit::wait_for(&api, "demo", Duration::from_secs(10), |c| {
        c.spec.instances == 5
    })
    .await;
    assert!(scaled.is_ok(), "{scaled:?}");
    let scale = c
        .kubectl(
            &[
                "get",
                "--raw",
                &format!(
                    "/apis/pgpilot.io/v1alpha1/namespaces/{}/postgresclusters/demo/scale",
                    ns.name
                ),
            ],
            None,
        )
        .unwrap();
    let scale: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["spec"]["replicas"], 5, "{scale}");
    // The CEL rules guard the scale subresource too.
    let refused = c.kubectl(&["scale", "-n", &ns.name, "pgc/demo", "--replicas=0"], None);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("spec.instances must be at least 1")),
        "{refused:?}"
    );
    ns.delete().await.unwrap();
}
