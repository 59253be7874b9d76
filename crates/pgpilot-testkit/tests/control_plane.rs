//! The local control plane is the real thing: the version we built, controllers that act,
//! and kwok nodes on which pods run and Jobs complete.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams};
use pgpilot_testkit::{TestNamespace, cluster, wait_for};

const ON_KWOK: &str = r#"
      nodeSelector: {type: kwok}
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
      containers: [{name: app, image: fake.invalid/app:1}]"#;

#[tokio::test]
async fn the_api_server_reports_the_version_built_here() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, c.k8s_version);
}

#[tokio::test]
async fn controllers_run_and_pods_become_ready_on_kwok_nodes() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    let ns = TestNamespace::create(&client, "kwok").await.unwrap();

    // The ServiceAccount controller and token signing work.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    wait_for(&sas, "default", Duration::from_secs(20), |_| true)
        .await
        .unwrap();

    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:{ON_KWOK}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: once, namespace: {ns}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never{ON_KWOK}\n",
        ns = ns.name
    );
    c.kubectl(&["apply", "-f", "-"], Some(&manifest)).unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let ready = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2);
    wait_for(&deployments, "web", Duration::from_secs(60), ready)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert!(running.items.iter().all(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with("kwok-node-"))
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    }));

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let complete = |j: &Job| j.status.as_ref().and_then(|s| s.succeeded) == Some(1);
    wait_for(&jobs, "once", Duration::from_secs(60), complete)
        .await
        .unwrap();
    ns.delete().await.unwrap();
}
