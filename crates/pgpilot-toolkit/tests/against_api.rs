//! The toolkit's API helpers against a real API server: apply costs no write when nothing
//! changed and repairs drift; Events are recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use pgpilot_testkit::{TestNamespace, cluster};
use pgpilot_toolkit::apply::{Outcome, apply};
use pgpilot_toolkit::events::Events;

fn config_map(ns: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            namespace: Some(ns.into()),
            labels: Some([("pgpilot.io/cluster".to_owned(), "db".to_owned())].into()),
            ..Default::default()
        },
        data: Some([("mode".to_owned(), value.to_owned())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn apply_writes_once_repairs_drift_and_is_free_when_converged() {
    let client = cluster().admin().await.unwrap();
    let ns = TestNamespace::create(&client, "apply").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let desired = config_map(&ns.name, "fast");

    assert_eq!(
        apply(&api, "pgpilot-test", &desired, None).await.unwrap(),
        Outcome::Created
    );
    let live = api.get("settings").await.unwrap();
    let version = live.metadata.resource_version.clone();

    // Converged: no request at all, so the resourceVersion cannot move.
    assert_eq!(
        apply(&api, "pgpilot-test", &desired, Some(&live))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        api.get("settings").await.unwrap().metadata.resource_version,
        version
    );

    // Someone else edits a field we own: the next apply puts it back.
    let drift = serde_json::json!({"data": {"mode": "slow"}});
    api.patch("settings", &PatchParams::default(), &Patch::Merge(&drift))
        .await
        .unwrap();
    let drifted = api.get("settings").await.unwrap();
    assert_eq!(
        apply(&api, "pgpilot-test", &desired, Some(&drifted))
            .await
            .unwrap(),
        Outcome::Updated
    );
    let repaired = api.get("settings").await.unwrap();
    assert_eq!(repaired.data.unwrap()["mode"], "fast");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn events_are_recorded_against_the_object() {
    let client = cluster().admin().await.unwrap();
    let ns = TestNamespace::create(&client, "events").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    apply(&api, "pgpilot-test", &config_map(&ns.name, "x"), None)
        .await
        .unwrap();
    let obj = api.get("settings").await.unwrap();

    let events = Events::new(client.clone(), "pgpilot-test", Some("test-pod".into()));
    events
        .normal(&obj, "ChildrenApplied", "Apply", "applied 1 child")
        .await;
    events
        .warning(&obj, "BackupFailed", "Backup", "repository unreachable")
        .await;

    let list: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let mut found = vec![];
    for _ in 0..50 {
        found = list.list(&ListParams::default()).await.unwrap().items;
        if found.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<(String, String, String)> = found
        .iter()
        .map(|e| {
            (
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.involved_object.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        summary.contains(&("Normal".into(), "ChildrenApplied".into(), "settings".into())),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("Warning".into(), "BackupFailed".into(), "settings".into())),
        "{summary:?}"
    );
    assert!(
        found
            .iter()
            .all(|e| e.reporting_component.as_deref() == Some("pgpilot-test")),
        "{found:?}"
    );
    ns.delete().await.unwrap();
}
