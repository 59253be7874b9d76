//! The cluster controller against a real API server (control plane only: instance pods are
//! scheduled nowhere, so these tests cover the Kubernetes side — children, ownership, drift,
//! idempotence, status — and the e2e tier covers PostgreSQL itself).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Grant, Setup, setup, spawn};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::ClusterPhase;
use pgpilot_testkit::{ManagerProcess, http_get, wait_for};
use pgpilot_toolkit::status::{StatusPart, apply_status};
use serde::de::DeserializeOwned;

const IMAGE: &str = "17=localhost/pgpilot/postgres:17";

fn manager(s: &Setup, identity: &str) -> ManagerProcess {
    spawn(
        s.c,
        &s.ns.name,
        identity,
        &["--controllers=cluster", "--default-image", IMAGE],
    )
}

/// The sum of the samples whose line starts with `prefix` (a metric and some of its labels).
fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn create_demo(s: &Setup, extra_spec: &str) {
    let example =
        std::fs::read_to_string(pgpilot_testkit::repo_root().join("examples/cluster.yaml"))
            .unwrap();
    let yaml = format!("{example}{extra_spec}");
    s.c.kubectl(&["apply", "-n", &s.ns.name, "-f", "-"], Some(&yaml))
        .unwrap();
}

async fn converged(s: &Setup, m: &ManagerProcess) -> PostgresCluster {
    let api: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let result = wait_for(&api, "demo", Duration::from_secs(60), |c| {
        c.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == c.metadata.generation && st.phase.is_some())
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()))
}

async fn get<K>(s: &Setup, name: &str) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(s.client.clone(), &s.ns.name);
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())))
}

/// resourceVersion of every child, by kind/name.
async fn child_versions(s: &Setup) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("pgpilot.io/cluster=demo");
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty) => {
            let api: Api<$kind> = Api::namespaced(s.client.clone(), &s.ns.name);
            for o in api.list(&lp).await.unwrap() {
                out.insert(
                    format!("{}/{}", <$kind>::kind(&()), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(ServiceAccount);
    collect!(Role);
    collect!(RoleBinding);
    collect!(Secret);
    collect!(ConfigMap);
    collect!(Service);
    collect!(PodDisruptionBudget);
    collect!(NetworkPolicy);
    collect!(StatefulSet);
    out
}

#[tokio::test]
async fn a_cluster_gets_every_child_owned_by_it_and_a_status() {
    let s = setup("children").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "children");
    create_demo(&s, "");
    let pg = converged(&s, &m).await;
    let uid = pg.uid().unwrap();

    let sts: StatefulSet = get(&s, "demo").await;
    let spec = sts.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.update_strategy.unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("localhost/pgpilot/postgres:17")
    );

    let children: Vec<(
        String,
        Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    )> = vec![
        ("sts/demo".into(), sts.metadata.owner_references.clone()),
        (
            "svc/demo-pods".into(),
            get::<Service>(&s, "demo-pods")
                .await
                .metadata
                .owner_references,
        ),
        (
            "svc/demo-rw".into(),
            get::<Service>(&s, "demo-rw")
                .await
                .metadata
                .owner_references,
        ),
        (
            "svc/demo-ro".into(),
            get::<Service>(&s, "demo-ro")
                .await
                .metadata
                .owner_references,
        ),
        (
            "svc/demo-r".into(),
            get::<Service>(&s, "demo-r").await.metadata.owner_references,
        ),
        (
            "cm/demo-patroni".into(),
            get::<ConfigMap>(&s, "demo-patroni")
                .await
                .metadata
                .owner_references,
        ),
        (
            "cm/demo-ca-cert".into(),
            get::<ConfigMap>(&s, "demo-ca-cert")
                .await
                .metadata
                .owner_references,
        ),
        (
            "secret/demo-ca".into(),
            get::<Secret>(&s, "demo-ca").await.metadata.owner_references,
        ),
        (
            "secret/demo-tls".into(),
            get::<Secret>(&s, "demo-tls")
                .await
                .metadata
                .owner_references,
        ),
        (
            "sa/demo-instance".into(),
            get::<ServiceAccount>(&s, "demo-instance")
                .await
                .metadata
                .owner_references,
        ),
        (
            "role/demo-instance".into(),
            get::<Role>(&s, "demo-instance")
                .await
                .metadata
                .owner_references,
        ),
        (
            "rb/demo-instance".into(),
            get::<RoleBinding>(&s, "demo-instance")
                .await
                .metadata
                .owner_references,
        ),
        (
            "pdb/demo".into(),
            get::<PodDisruptionBudget>(&s, "demo")
                .await
                .metadata
                .owner_references,
        ),
        (
            "netpol/demo".into(),
            get::<NetworkPolicy>(&s, "demo")
                .await
                .metadata
                .owner_references,
        ),
    ];
    for (what, owners) in children {
        let owners = owners.unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{what} is not controlled by the cluster: {owners:?}"
        );
    }
    // The volumes stay when the cluster goes (whenDeleted: Retain, the default), and so do the
    // passwords stored in them: the credential Secrets have no owner.
    for name in ["demo-superuser", "demo-replication", "demo-app-credentials"] {
        let owners = get::<Secret>(&s, name)
            .await
            .metadata
            .owner_references
            .unwrap_or_default();
        assert!(
            owners.is_empty(),
            "secret/{name} would go with the cluster: {owners:?}"
        );
    }

    let app = get::<Secret>(&s, "demo-app-credentials")
        .await
        .data
        .unwrap();
    let text = |k: &str| String::from_utf8(app[k].0.clone()).unwrap();
    assert_eq!(text("username"), "app");
    assert_eq!(text("dbname"), "shop");
    assert_eq!(text("host"), format!("demo-rw.{}.svc", s.ns.name));
    assert_eq!(text("password").len(), 32);

    let st = pg.status.unwrap();
    assert_eq!(
        st.phase,
        Some(ClusterPhase::Creating),
        "no pod can run on the control plane alone"
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NoPrimary")
    );
    assert_eq!(ready.observed_generation, Some(1));
    assert_eq!(
        st.selector.as_deref(),
        Some("pgpilot.io/cluster=demo,pgpilot.io/component=instance")
    );

    // The controller that was named runs, and reports it.
    let (_, metrics) = http_get(m.metrics_port(), "/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"pgpilot_controller_running{controller="cluster"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pgpilot_reconcile_total{controller="cluster",result="success"}"#),
        "{metrics}"
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn drift_is_repaired_and_a_converged_cluster_costs_no_writes() {
    let s = setup("drift").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "drift");
    create_demo(&s, "");
    converged(&s, &m).await;

    // A deleted child comes back; a changed field is set back.
    let services: Api<Service> = Api::namespaced(s.client.clone(), &s.ns.name);
    services
        .delete("demo-rw", &DeleteParams::default())
        .await
        .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    statefulsets
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_for(&services, "demo-rw", Duration::from_secs(30), |_| true)
        .await
        .unwrap();
    wait_for(&statefulsets, "demo", Duration::from_secs(30), |s| {
        s.spec.as_ref().and_then(|s| s.replicas) == Some(3)
    })
    .await
    .unwrap();

    // Let the StatefulSet controller finish its own status updates, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = child_versions(&s).await;
    assert!(before.len() >= 13, "{before:#?}");
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let status_before = clusters.get("demo").await.unwrap().status;
    let reconciles = |metrics: &str| {
        metric_sum(
            metrics,
            r#"pgpilot_reconcile_total{controller="cluster",result="success"}"#,
        )
    };
    let writes =
        |metrics: &str| metric_sum(metrics, r#"pgpilot_api_writes_total{controller="cluster""#);
    let waits = |metrics: &str| {
        metric_sum(
            metrics,
            r#"pgpilot_reconcile_queue_wait_seconds_count{controller="cluster"}"#,
        )
    };
    // Requests other than watches (which start once and stay open).
    let requests = |metrics: &str| -> BTreeMap<String, u64> {
        metrics
            .lines()
            .filter_map(|l| {
                l.strip_prefix(r#"pgpilot_api_requests_total{controller="cluster",verb=""#)
            })
            .filter_map(|l| {
                let (verb, n) = l.split_once("\"} ")?;
                Some((verb.to_owned(), n.parse().ok()?))
            })
            .filter(|(verb, _)| !verb.starts_with("watch"))
            .collect()
    };
    let metrics_before = http_get(m.metrics_port(), "/metrics").await.unwrap().1;
    let count_before = reconciles(&metrics_before);
    let writes_before = writes(&metrics_before);
    let requests_before = requests(&metrics_before);
    let waits_before = waits(&metrics_before);
    assert!(
        writes_before >= 14,
        "the first reconciles wrote the children: {metrics_before}"
    );
    // Each annotation change is a watch event, so a full reconcile, which must write nothing.
    for i in 0..3 {
        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(
                    &serde_json::json!({"metadata": {"annotations": {"test/poke": i.to_string()}}}),
                ),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let metrics_after = http_get(m.metrics_port(), "/metrics").await.unwrap().1;
    let count_after = reconciles(&metrics_after);
    assert!(
        count_after >= count_before + 3,
        "reconciles did run: {count_before} → {count_after}"
    );
    // Each poke woke the cluster: its wait in the queue was measured, and nothing waits now.
    assert!(
        waits(&metrics_after) >= waits_before + 3,
        "queue waits: {waits_before} → {}",
        waits(&metrics_after)
    );
    let depth = r#"pgpilot_reconcile_queue_depth{controller="cluster"} "#;
    let mut metrics = metrics_after.clone();
    for _ in 0..50 {
        if metrics.contains(&format!("{depth}0")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = http_get(m.metrics_port(), "/metrics").await.unwrap().1;
    }
    assert!(metrics.contains(&format!("{depth}0")), "{metrics}");
    // The request budget of a converged reconcile: at most 2, none of them a write (the
    // children and pods come from the watch caches).
    let requests_after = requests(&metrics_after);
    let sent: u64 = requests_after
        .iter()
        .map(|(verb, n)| n - requests_before.get(verb).copied().unwrap_or(0))
        .sum();
    eprintln!(
        "request budget: {sent} requests (non-watch) for {} converged reconciles",
        count_after - count_before
    );
    assert!(
        sent <= 2 * (count_after - count_before),
        "{sent} requests for {} converged reconciles: {requests_before:?} → {requests_after:?}",
        count_after - count_before
    );
    assert_eq!(
        writes(&metrics_after),
        writes_before,
        "no write at steady state"
    );
    assert_eq!(
        child_versions(&s).await,
        before,
        "a converged cluster must cost no writes\n{}",
        m.log()
    );
    assert_eq!(
        clusters.get("demo").await.unwrap().status,
        status_before,
        "status rewritten without change"
    );
    s.ns.delete().await.unwrap();
}

/// Reconciles so far (every result), from the manager's metrics.
async fn reconcile_count(m: &ManagerProcess) -> u64 {
    let metrics = http_get(m.metrics_port(), "/metrics").await.unwrap().1;
    metrics
        .lines()
        .filter(|l| l.starts_with(r#"pgpilot_reconcile_total{controller="cluster""#))
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

#[tokio::test]
async fn patronis_per_loop_writes_wake_nothing_but_its_decisions_do() {
    let s = setup("triggers").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "triggers");
    create_demo(&s, "");
    converged(&s, &m).await;
    // What Patroni writes: its member record on the pods, its lock renewal in `<scope>-leader`
    // (the instance labels, no owner until the controller adopts it).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    wait_for(&pods, "demo-0", Duration::from_secs(30), |_| true)
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns.name);
    let patroni_cm = |name: &str, annotations: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": name,
            "labels": {"pgpilot.io/cluster": "demo", "pgpilot.io/component": "instance"},
            "annotations": annotations,
        }})
    };
    let patroni = PatchParams::apply("patroni-stand-in");
    for name in ["demo-leader", "demo-sync"] {
        config_maps
            .patch(
                name,
                &patroni,
                &Patch::Apply(patroni_cm(
                    name,
                    serde_json::json!({"leader": "demo-0", "renewTime": "0"}),
                )),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = reconcile_count(&m).await;
    for i in 0..8 {
        let member = format!(r#"{{"role": "primary", "xlog_location": {i}}}"#);
        pods.patch(
            "demo-0",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"annotations": {"status": member}}})),
        )
        .await
        .unwrap();
        config_maps
            .patch(
                "demo-leader",
                &patroni,
                &Patch::Apply(patroni_cm(
                    "demo-leader",
                    serde_json::json!({"leader": "demo-0", "renewTime": i.to_string()}),
                )),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = reconcile_count(&m).await;
    // At most the periodic reconcile (every 10 s while not Ready) may fall in these 3.4 s.
    assert!(
        quiet <= before + 1,
        "16 writes that decide nothing woke {} reconciles",
        quiet - before
    );

    // Patroni names a synchronous standby: that is a decision.
    config_maps
        .patch(
            "demo-sync",
            &patroni,
            &Patch::Apply(patroni_cm(
                "demo-sync",
                serde_json::json!({"leader": "demo-0", "sync_standby": "demo-1", "renewTime": "0"}),
            )),
        )
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), async {
        while reconcile_count(&m).await <= quiet {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        woken.is_ok(),
        "a new synchronous standby woke no reconcile\n{}",
        m.log()
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_manager_killed_mid_reconcile_is_replaced_without_duplicates_or_new_passwords() {
    let s = setup("restart").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let first = manager(&s, "first");
    first.wait_ready(Duration::from_secs(20)).await.unwrap();
    create_demo(&s, "");
    // Kill it as soon as its first writes appear.
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    wait_for(&secrets, "demo-superuser", Duration::from_secs(30), |_| {
        true
    })
    .await
    .unwrap();
    first.signal("KILL").unwrap();
    let password = |s: &Secret| s.data.as_ref().map(|d| d["password"].0.clone());
    let superuser = password(&secrets.get("demo-superuser").await.unwrap());

    let second = manager(&s, "second");
    converged(&s, &second).await;
    let lp = ListParams::default().labels("pgpilot.io/cluster=demo");
    let services: Api<Service> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert_eq!(services.list(&lp).await.unwrap().items.len(), 4);
    // Superuser, replication, a role's, the exporter's, Patroni's credentials file and its
    // REST API's, the CA and the server certificate.
    assert_eq!(secrets.list(&lp).await.unwrap().items.len(), 8);
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert_eq!(statefulsets.list(&lp).await.unwrap().items.len(), 1);
    assert_eq!(
        password(&secrets.get("demo-superuser").await.unwrap()),
        superuser,
        "password regenerated"
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn deleting_the_cluster_garbage_collects_its_children() {
    let s = setup("gc").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "gc");
    create_demo(&s, "");
    converged(&s, &m).await;
    // The StatefulSet and its claims exist (unbound here): the credentials outlive the cluster.
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    wait_for(&secrets, "demo-superuser", Duration::from_secs(30), |s| {
        s.metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    clusters
        .delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    let lp = ListParams::default().labels("pgpilot.io/cluster=demo");
    let services: Api<Service> = Api::namespaced(s.client.clone(), &s.ns.name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    let mut left = usize::MAX;
    for _ in 0..150 {
        left = services.list(&lp).await.unwrap().items.len()
            + statefulsets.list(&lp).await.unwrap().items.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, 0, "children left after the cluster was deleted");
    assert!(
        secrets.get_opt("demo-superuser").await.unwrap().is_some(),
        "the superuser's password went, though the volumes holding it are retained"
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn an_unusable_spec_is_reported_in_status_and_events() {
    let s = setup("invalid").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "invalid");
    // PostgreSQL 16 without an image, and the manager has a default only for 17.
    let yaml = "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: demo}\nspec: {instances: 1, postgresql: {version: 16}, storage: {size: 1Gi}}\n";
    s.c.kubectl(&["apply", "-n", &s.ns.name, "-f", "-"], Some(yaml))
        .unwrap();
    let pg = converged(&s, &m).await;
    let ready = pg
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready.message.contains("no default image for PostgreSQL 16"),
        "{}",
        ready.message
    );
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    let found = wait_for_event(&events, "InvalidSpec").await;
    assert!(found, "no InvalidSpec event\n{}", m.log());
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert!(
        statefulsets.get_opt("demo").await.unwrap().is_none(),
        "nothing is built from a bad spec"
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_shown_on_the_cluster_with_the_servers_message() {
    let s = setup("refused").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "refused");
    // Admission lets an extended resource through (the API server decides which need a
    // limit); the StatefulSet's validation refuses a request without one.
    create_demo(&s, "  resources: {requests: {example.com/gpu: \"1\"}}\n");
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let pg = wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        reconciled(c).is_some_and(|(s, _, _)| s == "False")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let (_, reason, message) = reconciled(&pg).unwrap();
    assert_eq!(reason, "ApiInvalid", "{message}");
    assert!(
        message.contains("StatefulSet") && message.contains("Limit must be set"),
        "the message names the child and the server's reason: {message}"
    );
    // Ready says it too, so `kubectl get` and GitOps health checks show it.
    let ready = |c: &PostgresCluster| {
        let conditions = &c.status.as_ref()?.conditions;
        let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
        Some((
            ready.status.clone(),
            ready.reason.clone(),
            ready.message.clone(),
        ))
    };
    let pg = wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        ready(c).is_some_and(|(_, reason, _)| reason == "ChildRefused")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let (status, _, message) = ready(&pg).unwrap();
    assert!(
        status == "False"
            && message.contains("StatefulSet")
            && message.contains("Limit must be set"),
        "Ready {status}: {message}"
    );
    assert_eq!(
        pg.status.as_ref().and_then(|s| s.phase),
        Some(ClusterPhase::Creating)
    );
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert!(
        wait_for_event(&events, "ApiInvalid").await,
        "no Warning Event\n{}",
        m.log()
    );
    // No hot loop: a refusal retrying cannot fix waits for a change. Five seconds of watching
    // (an observation window, not a synchronisation) see at most a couple of reconciles.
    let reconciles =
        |metrics: &str| metric_sum(metrics, r#"pgpilot_reconcile_total{controller="cluster""#);
    let before = reconciles(&http_get(m.metrics_port(), "/metrics").await.unwrap().1);
    assert!(before > 0, "no reconcile counted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = reconciles(&http_get(m.metrics_port(), "/metrics").await.unwrap().1);
    assert!(
        after - before <= 2,
        "{} reconciles in 5 s after the refusal\n{}",
        after - before,
        m.log()
    );

    // Fixed: the StatefulSet is made and the condition says so.
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"resources": {"limits": {"example.com/gpu": "1"}}}}),
            ),
        )
        .await
        .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    wait_for(&statefulsets, "demo", Duration::from_secs(30), |_| true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        reconciled(c).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
            && ready(c).is_some_and(|(_, reason, _)| reason != "ChildRefused")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn an_instance_that_cannot_be_scheduled_is_explained_on_the_cluster() {
    let s = setup("unschedulable").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "unschedulable");
    // This tier has no volume provisioner: the claims stay unbound and the scheduler says so,
    // as it would to a user whose cluster has no default StorageClass.
    create_demo(&s, "");
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let pg = wait_for(&clusters, "demo", Duration::from_secs(60), |c| {
        c.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.message.contains("Unschedulable"))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let ready = pg
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    // The scheduler's own words, for the pod it could not place.
    assert!(
        ready.message.contains("demo-0: Unschedulable: ")
            && ready
                .message
                .contains("unbound immediate PersistentVolumeClaims"),
        "{}",
        ready.message
    );
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert!(
        wait_for_event(&events, "Unschedulable").await,
        "no Warning Event\n{}",
        m.log()
    );
    s.ns.delete().await.unwrap();
}

/// The runner's `ClusterReconciled` condition: status, reason, message.
fn reconciled(c: &PostgresCluster) -> Option<(String, String, String)> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ClusterReconciled")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_for_event(events: &Api<Event>, reason: &str) -> bool {
    for _ in 0..50 {
        let list = events.list(&ListParams::default()).await.unwrap();
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn a_paused_cluster_is_left_alone_until_resumed() {
    let s = setup("paused").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "paused");
    create_demo(&s, "");
    converged(&s, &m).await;
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Paused)
    })
    .await
    .unwrap();
    let services: Api<Service> = Api::namespaced(s.client.clone(), &s.ns.name);
    services
        .delete("demo-ro", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        services.get_opt("demo-ro").await.unwrap().is_none(),
        "a paused cluster was reconciled"
    );
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    wait_for(&services, "demo-ro", Duration::from_secs(30), |_| true)
        .await
        .unwrap();
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_new_version_or_image_in_the_spec_never_reaches_running_instances_by_itself() {
    let s = setup("version").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "version");
    create_demo(&s, "");
    converged(&s, &m).await;
    let image = |sts: &StatefulSet| {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };
    let before: StatefulSet = get(&s, "demo").await;
    assert_eq!(
        before
            .annotations()
            .get("pgpilot.io/postgres-version")
            .map(String::as_str),
        Some("17")
    );

    // A major upgrade and another image in the spec: an upgrade's job, not a re-render.
    s.c.kubectl(
        &[
            "patch",
            "pgc",
            "demo",
            "-n",
            &s.ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"postgresql":{"version":18,"image":"localhost/pgpilot/postgres:18"}}}"#,
        ],
        None,
    )
    .unwrap();
    let api: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let c = wait_for(&api, "demo", Duration::from_secs(60), |c| {
        c.status.as_ref().is_some_and(|st| {
            st.observed_generation == c.metadata.generation
                && pgpilot_toolkit::conditions::find(&st.conditions, "VersionCurrent")
                    .is_some_and(|v| v.status == "False")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    let st = c.status.unwrap();
    let cond = pgpilot_toolkit::conditions::find(&st.conditions, "VersionCurrent").unwrap();
    assert_eq!(cond.reason, "UpgradePending");
    assert!(cond.message.contains("PostgreSQL 18"), "{}", cond.message);
    assert_eq!(st.version, Some(17), "status shows what runs");
    let after: StatefulSet = get(&s, "demo").await;
    assert_eq!(image(&after), image(&before), "the pods keep their image");
    assert_eq!(
        after
            .annotations()
            .get("pgpilot.io/postgres-version")
            .map(String::as_str),
        Some("17")
    );
    let config: ConfigMap = get(&s, "demo-patroni").await;
    assert!(
        config.data.unwrap()["patroni.yaml"].contains("/usr/lib/postgresql/17/bin"),
        "Patroni keeps the running major's binaries"
    );
}

/// Another controller's part of the status, as the backup controller will write it.
const BACKUP_PART: StatusPart<'static> = StatusPart {
    fields: &["lastBackup"],
    conditions: &["ContinuousArchiving"],
};

async fn write_backup_part(s: &Setup, backup: &str) {
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let live = clusters.get("demo").await.unwrap();
    let status = serde_json::json!({
        "lastBackup": {"name": backup},
        "conditions": [{"type": "ContinuousArchiving", "status": "True", "reason": "Archiving",
            "message": "", "lastTransitionTime": "2026-12-05T00:00:00Z"}],
    });
    let wrote = apply_status(&clusters, "pgpilot-backup", &BACKUP_PART, &live, &status)
        .await
        .unwrap();
    assert!(wrote, "the backup part was new");
}

#[tokio::test]
async fn two_controllers_write_their_own_status_fields_and_keep_each_others() {
    let s = setup("owners").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "owners");
    create_demo(&s, "");
    converged(&s, &m).await;
    write_backup_part(&s, "demo-full-1").await;

    // The cluster controller rewrites its part (a scale changes replicas and conditions)…
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"instances": 2}})),
        )
        .await
        .unwrap();
    let pg = wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        c.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == c.metadata.generation)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    // …and the backup controller's part is still there, and the reverse.
    let status = pg.status.unwrap();
    assert_eq!(
        status.last_backup.map(|b| b.name).as_deref(),
        Some("demo-full-1")
    );
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert!(types.contains(&"ContinuousArchiving"), "{types:?}");
    assert!(types.contains(&"Ready"), "{types:?}");
    write_backup_part(&s, "demo-full-2").await;
    let status = clusters.get("demo").await.unwrap().status.unwrap();
    assert!(status.phase.is_some() && status.observed_generation == Some(2));
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready"));
    // Each field belongs to the manager that wrote it.
    let owners: Vec<String> = clusters
        .get("demo")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .filter_map(|f| f.manager)
        .collect();
    assert!(owners.contains(&"pgpilot-cluster".to_owned()), "{owners:?}");
    assert!(owners.contains(&"pgpilot-backup".to_owned()), "{owners:?}");
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_missing_permission_is_retried_shown_on_the_cluster_and_converges_once_granted() {
    let s = setup("forbidden").await;
    let kubeconfig = common::service_account_kubeconfig(s.c, &s.ns.name, "operator");
    let grantee = format!("serviceaccount:{}/operator", s.ns.name);
    let _grant = Grant::without(s.c, &s.ns.name, &grantee, "statefulsets", "patch");
    let m = common::spawn_as(
        &kubeconfig,
        &s.ns.name,
        "forbidden",
        &["--controllers=cluster", "--default-image", IMAGE],
    );
    create_demo(&s, "");
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let pg = wait_for(&clusters, "demo", Duration::from_secs(60), |c| {
        reconciled(c).is_some_and(|(s, _, _)| s == "False")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let (_, reason, message) = reconciled(&pg).unwrap();
    assert_eq!(reason, "ApiForbidden");
    assert!(
        message.contains("statefulsets") && message.contains("patch"),
        "the message names the permission: {message}"
    );

    // Granted (the same ClusterRole, now whole): the retries get through.
    let _whole = Grant::to(s.c, &s.ns.name, &grantee);
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    wait_for(&statefulsets, "demo", Duration::from_secs(90), |_| true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    wait_for(&clusters, "demo", Duration::from_secs(90), |c| {
        reconciled(c).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_parameter_value_postgresql_would_refuse_is_named_on_the_cluster() {
    let s = setup("parameters").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "parameters");
    create_demo(&s, "");
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let accepted = |c: &PostgresCluster| {
        c.status
            .as_ref()
            .and_then(|st| {
                st.conditions
                    .iter()
                    .find(|c| c.type_ == "ParametersAccepted")
            })
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let pg = wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        accepted(c).is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    assert_eq!(
        accepted(&pg).unwrap(),
        (
            "True".to_owned(),
            "Valid".to_owned(),
            "checked against PostgreSQL 17; max_connections, shared_buffers take effect on a restart, which pgpilot makes one instance at a time".to_owned()
        )
    );

    // Admission passes numbers to the controller, which names the parameter and the rule.
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"postgresql": {"parameters": {"max_connections": "0"}}}})),
        )
        .await
        .unwrap();
    let pg = wait_for(&clusters, "demo", Duration::from_secs(30), |c| {
        accepted(c).is_some_and(|(s, _, _)| s == "False")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let (_, reason, message) = accepted(&pg).unwrap();
    assert_eq!(reason, "InvalidParameters");
    assert_eq!(
        message,
        "max_connections: \"0\" is not valid: at least 1; not passed to Patroni: the instances keep their current value"
    );
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    assert!(
        wait_for_event(&events, "InvalidParameters").await,
        "no Warning Event\n{}",
        m.log()
    );
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn the_credentials_of_a_cluster_that_never_had_a_volume_go_with_it() {
    let s = setup("no-volume").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = manager(&s, "no-volume");
    // The StatefulSet is refused (an extended resource without a limit): no claim is made.
    create_demo(&s, "  resources: {requests: {example.com/gpu: \"1\"}}\n");
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    let secret = wait_for(&secrets, "demo-superuser", Duration::from_secs(30), |_| {
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    assert_eq!(
        secret
            .labels()
            .get("pgpilot.io/cluster")
            .map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        secret.metadata.owner_references.unwrap_or_default()[0].kind,
        "PostgresCluster"
    );
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    clusters
        .delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    let mut left = Vec::new();
    for _ in 0..150 {
        left = secrets
            .list(&ListParams::default().labels("pgpilot.io/cluster=demo"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.name_any())
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(left.is_empty(), "Secrets left behind: {left:?}");
    s.ns.delete().await.unwrap();
}
