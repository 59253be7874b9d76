//! The upgrade controller against a real API server (control plane only: the instances never
//! become Ready, so an upgrade stops at its gates; the e2e tier moves real instances).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{Grant, setup};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pgpilot_api::upgrade::{StepState, UpgradePhase};
use pgpilot_api::{PostgresCluster, PostgresUpgrade, labels};
use pgpilot_testkit::wait_for;

const OLD: &str = "localhost/pgpilot/postgres:17";
const NEW: &str = "localhost/pgpilot/postgres:17-next";

fn step(u: &PostgresUpgrade, name: &str) -> Option<StepState> {
    u.status
        .as_ref()?
        .steps
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.state)
}

fn phase(u: &PostgresUpgrade) -> Option<UpgradePhase> {
    u.status.as_ref()?.phase
}

fn reason(u: &PostgresUpgrade, type_: &str) -> Option<String> {
    u.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The two controllers run as two managers, each under its own identity with only the RBAC
/// `pgpilot-manager rbac --controllers=<it>` prints: they cooperate through the API alone.
#[tokio::test]
async fn a_new_image_gets_one_owned_upgrade_that_honours_approval_pause_and_abort() {
    let s = setup("upgrade").await;
    let mut managers = Vec::new();
    let mut grants = Vec::new();
    for controller in ["cluster", "upgrade"] {
        let kubeconfig = common::service_account_kubeconfig(s.c, &s.ns.name, controller);
        let grantee = format!("serviceaccount:{}/{controller}", s.ns.name);
        grants.push(Grant::for_controllers(
            s.c, &s.ns.name, &grantee, controller,
        ));
        managers.push(common::spawn_leading(
            &kubeconfig,
            &s.ns.name,
            controller,
            controller,
            &[&format!("--controllers={controller}")],
        ));
    }
    let log = || {
        format!(
            "\n--- cluster controller log ---\n{}\n--- upgrade controller log ---\n{}",
            managers[0].log(),
            managers[1].log()
        )
    };
    s.c.kubectl(
        &["apply", "-n", &s.ns.name, "-f", "-"],
        Some(&format!(
            "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {{name: db}}\nspec: {{instances: 1, postgresql: {{version: 17, image: '{OLD}'}}, storage: {{size: 1Gi}}, upgrade: {{approval: Manual}}}}\n"
        )),
    )
    .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let upgrades: Api<PostgresUpgrade> = Api::namespaced(s.client.clone(), &s.ns.name);
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
    wait_for(&statefulsets, "db", Duration::from_secs(30), |sts| {
        image(sts).as_deref() == Some(OLD)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));

    // A new image in the spec: one PostgresUpgrade, owned by the cluster, with its policy.
    merge(
        &clusters,
        "db",
        serde_json::json!({"spec": {"postgresql": {"image": NEW}}}),
    )
    .await;
    // Named after the target and the spec's generation; the only one labelled for `db`.
    let name = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = upgrades
                .list(&kube::api::ListParams::default().labels("pgpilot.io/cluster=db"))
                .await
                .unwrap();
            if let [u] = found.items.as_slice() {
                break u.name_any();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no PostgresUpgrade{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(name.starts_with("db-upgrade-"), "{name}");
    let u = wait_for(&upgrades, &name, Duration::from_secs(30), |u| {
        phase(u) == Some(UpgradePhase::AwaitingApproval)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    assert_eq!(u.owner_references()[0].name, "db");
    assert!(u.spec.require_approval);
    assert_eq!(u.spec.target_image, NEW);
    let st = u.status.clone().unwrap();
    assert_eq!(st.from_image.as_deref(), Some(OLD));
    // The cluster names it, and its instances stay on the old image meanwhile.
    let c = wait_for(&clusters, "db", Duration::from_secs(30), |c| {
        c.annotations().get(labels::UPGRADE) == Some(&name)
            && c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "VersionCurrent" && c.reason == "Upgrading")
            })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    assert!(!c.annotations().contains_key(labels::UPGRADE_TARGET));
    assert_eq!(
        image(&statefulsets.get("db").await.unwrap()).as_deref(),
        Some(OLD)
    );

    // A second upgrade of the same cluster waits, and says for which.
    let second: PostgresUpgrade = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
        "metadata": {"name": "by-hand"},
        "spec": {"cluster": {"name": "db"}, "targetVersion": 17, "targetImage": "localhost/pgpilot/postgres:17-other"},
    }))
    .unwrap();
    upgrades
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    let waiting = wait_for(&upgrades, "by-hand", Duration::from_secs(30), |u| {
        reason(u, "Progressing").as_deref() == Some("AnotherUpgradeActive")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let message = &waiting.status.unwrap().conditions[0].message;
    assert!(message.contains(&name), "{message}");

    // Approved: on to the gates, which a cluster that is not Ready does not pass.
    merge(
        &upgrades,
        &name,
        serde_json::json!({"spec": {"approved": true}}),
    )
    .await;
    let u = wait_for(&upgrades, &name, Duration::from_secs(30), |u| {
        step(u, "gates") == Some(StepState::Running)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    assert_eq!(step(&u, "approval"), Some(StepState::Done));
    assert_eq!(phase(&u), Some(UpgradePhase::Pending));
    assert_eq!(
        reason(&u, "Progressing").as_deref(),
        Some("WaitingForGates")
    );

    // Paused, then aborted: nothing moved, and the cluster carries nothing of the upgrade.
    merge(
        &upgrades,
        &name,
        serde_json::json!({"spec": {"paused": true}}),
    )
    .await;
    wait_for(&upgrades, &name, Duration::from_secs(30), |u| {
        phase(u) == Some(UpgradePhase::Paused)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    merge(
        &upgrades,
        &name,
        serde_json::json!({"spec": {"abort": true}}),
    )
    .await;
    wait_for(&upgrades, &name, Duration::from_secs(30), |u| {
        phase(u) == Some(UpgradePhase::Aborted)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    // The hand-made upgrade is the active one now: its target is not what the spec asks for.
    wait_for(&upgrades, "by-hand", Duration::from_secs(30), |u| {
        reason(u, "Progressing").as_deref() == Some("TargetNotInSpec")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let c = wait_for(&clusters, "db", Duration::from_secs(30), |c| {
        c.annotations().get(labels::UPGRADE).map(String::as_str) == Some("by-hand")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    assert!(!c.annotations().contains_key(labels::UPGRADE_TARGET));
    assert_eq!(
        image(&statefulsets.get("db").await.unwrap()).as_deref(),
        Some(OLD)
    );
}
