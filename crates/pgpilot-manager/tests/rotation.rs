//! The secret-rotation controller against a real API server (control plane with kwok's fake
//! nodes: Deployments really roll, pods are simulated). It runs alone, as its own
//! ServiceAccount with only the RBAC `pgpilot-manager rbac --controllers=secret-rotation`
//! prints. PostgreSQL roles need real instances: the e2e tier rotates those.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Grant, setup};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use pgpilot_api::rotation::RolloutState;
use pgpilot_api::{SecretRotation, labels};
use pgpilot_testkit::{ManagerProcess, wait_for};

const CONTROLLER: &str = "secret-rotation";

/// ServiceAccount `rotator`, granted only what the controller's RBAC prints: its kubeconfig.
fn identity(s: &common::Setup) -> (PathBuf, Grant<'static>) {
    let kubeconfig = common::service_account_kubeconfig(s.c, &s.ns.name, "rotator");
    let grantee = format!("serviceaccount:{}/rotator", s.ns.name);
    let grant = Grant::for_controllers(s.c, &s.ns.name, &grantee, CONTROLLER);
    (kubeconfig, grant)
}

/// A manager running only this controller, as `kubeconfig`'s user, named `name` in the Lease.
fn manager(s: &common::Setup, kubeconfig: &Path, name: &str) -> ManagerProcess {
    common::spawn_leading(
        kubeconfig,
        &s.ns.name,
        CONTROLLER,
        name,
        &[&format!("--controllers={CONTROLLER}")],
    )
}

fn apply(s: &common::Setup, yaml: &str) {
    s.c.kubectl(&["apply", "-n", &s.ns.name, "-f", "-"], Some(yaml))
        .unwrap();
}

/// A Deployment on kwok's fake nodes; `schedulable: false` keeps its pods Pending.
fn deployment(name: &str, schedulable: bool) -> String {
    let node = if schedulable { "kwok" } else { "nowhere" };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n\
         \x20     nodeSelector: {{type: {node}}}\n      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]\n\
         \x20     containers: [{{name: app, image: localhost/app:1}}]\n"
    )
}

fn value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8(v.0.clone()).unwrap())
}

fn count(s: &Secret) -> i64 {
    s.annotations()
        .get(labels::ROTATION_COUNT)
        .map_or(0, |c| c.parse().unwrap())
}

fn rotations(r: &SecretRotation) -> i64 {
    r.status.as_ref().map_or(0, |s| s.rotations)
}

fn condition(r: &SecretRotation, type_: &str) -> Option<(String, String, String)> {
    let c = r
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn template_hash(d: &Deployment, rotation: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(&format!("rotation.pgpilot.io/{rotation}"))
        .cloned()
}

async fn annotate(api: &Api<SecretRotation>, name: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_secret_is_completed_rotated_on_demand_and_on_schedule_and_its_consumers_roll() {
    let s = setup("rotation").await;
    let (kubeconfig, _grant) = identity(&s);
    let m = manager(&s, &kubeconfig, "rotator");
    let log = || format!("\n--- manager log ---\n{}", m.log());
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    let rotations_api: Api<SecretRotation> = Api::namespaced(s.client.clone(), &s.ns.name);
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns.name);

    // A Secret someone else made: `keep` is theirs, `token` is to be rotated, `id` is missing.
    apply(
        &s,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: api}\nstringData: {keep: untouched, token: old}\n",
    );
    apply(&s, &deployment("web", true));
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: SecretRotation\nmetadata: {name: api-keys}\nspec:\n\
         \x20 target:\n    secret:\n      name: api\n      keys:\n\
         \x20     - {key: token, generator: Hex, length: 16}\n\
         \x20     - {key: id, generator: Uuid}\n\
         \x20     - {key: signing.key, generator: KeyPair, keyPair: {algorithm: Ed25519}}\n\
         \x20 rotateEvery: {interval: 720h}\n\
         \x20 consumers: [{kind: Deployment, selector: {app: web}}]\n",
    );

    // The missing key makes the first rotation at once; every listed key is new, `keep` stays.
    let r = wait_for(&rotations_api, "api-keys", Duration::from_secs(60), |r| {
        rotations(r) == 1 && condition(r, "Progressing").is_some_and(|c| c.1 == "Idle")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let first = secrets.get("api").await.unwrap();
    assert_eq!(count(&first), 1);
    assert_eq!(value(&first, "keep").as_deref(), Some("untouched"));
    let token = value(&first, "token").unwrap();
    assert_eq!(token.len(), 32, "16 bytes, hex");
    assert_ne!(token, "old");
    assert_eq!(value(&first, "id").unwrap().len(), 36);
    assert!(
        value(&first, "signing.key")
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(
        value(&first, "signing.key.pub")
            .unwrap()
            .contains("PUBLIC KEY")
    );
    let st = r.status.clone().unwrap();
    assert_eq!(st.secret_name.as_deref(), Some("api"));
    assert!(st.last_rotation_time.is_some());
    assert!(st.next_rotation_time.is_some());
    assert_eq!(st.consumers.len(), 1);
    assert_eq!(st.consumers[0].name, "web");
    assert_eq!(st.consumers[0].rollout, RolloutState::Rolled);
    let web = deployments.get("web").await.unwrap();
    let hash1 = template_hash(&web, "api-keys").expect("web annotated");

    // On demand: one request, one rotation.
    annotate(&rotations_api, "api-keys", labels::ROTATE_NOW, "ticket-1").await;
    wait_for(&rotations_api, "api-keys", Duration::from_secs(60), |r| {
        rotations(r) == 2 && condition(r, "Progressing").is_some_and(|c| c.1 == "Idle")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let second = secrets.get("api").await.unwrap();
    assert_eq!(count(&second), 2);
    assert_eq!(
        second
            .annotations()
            .get(labels::ROTATION_REQUEST)
            .map(String::as_str),
        Some("ticket-1")
    );
    assert_eq!(value(&second, "keep").as_deref(), Some("untouched"));
    assert_ne!(value(&second, "token"), Some(token));
    let web = deployments.get("web").await.unwrap();
    let hash2 = template_hash(&web, "api-keys").unwrap();
    assert_ne!(hash1, hash2, "the consumer rolled again");

    // A second SecretRotation of the same Secret is refused, and rotates nothing.
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: SecretRotation\nmetadata: {name: api-keys-again}\nspec:\n\
         \x20 target: {secret: {name: api, keys: [{key: token}]}}\n  rotateEvery: {interval: 1h}\n",
    );
    let refused = wait_for(
        &rotations_api,
        "api-keys-again",
        Duration::from_secs(30),
        |r| condition(r, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "Conflict"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let message = condition(&refused, "Ready").unwrap().2;
    assert!(message.contains("SecretRotation api-keys"), "{message}");

    // On schedule: a short interval makes the next one due 20 s after the last.
    let patch = serde_json::json!({"spec": {"rotateEvery": {"interval": "20s"}}});
    rotations_api
        .patch("api-keys", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = wait_for(&rotations_api, "api-keys", Duration::from_secs(90), |r| {
        rotations(r) == 3
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let third = secrets.get("api").await.unwrap();
    assert_eq!(count(&third), 3, "one rotation per due time");
    let at = |s: &Secret| {
        s.annotations()[labels::ROTATED_AT]
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert!(at(&third) - at(&second) >= 20, "not before it was due");
    assert_eq!(value(&third, "keep").as_deref(), Some("untouched"));
    assert_eq!(
        secrets
            .get("api")
            .await
            .unwrap()
            .annotations()
            .get(labels::ROTATED_BY)
            .map(String::as_str),
        Some("api-keys")
    );
    assert!(r.status.unwrap().next_rotation_time.is_some());
    assert!(
        !m.log().contains("forbidden"),
        "least privilege was not enough{}",
        log()
    );
}

/// Killed while a rotation waits on a consumer that cannot roll, another manager takes over
/// the same rotation: no second flip, and a request made meanwhile is answered once after.
#[tokio::test]
async fn a_manager_killed_mid_rotation_is_resumed_without_a_second_flip() {
    let s = setup("rotation-kill").await;
    let (kubeconfig, _grant) = identity(&s);
    let first = manager(&s, &kubeconfig, "first");
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    let rotations_api: Api<SecretRotation> = Api::namespaced(s.client.clone(), &s.ns.name);
    apply(&s, &deployment("stuck", false));
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: SecretRotation\nmetadata: {name: creds}\nspec:\n\
         \x20 target: {secret: {name: creds, keys: [{key: password, length: 24}]}}\n\
         \x20 rotateEvery: {interval: 720h}\n  strategy: {gracePeriod: 1s}\n\
         \x20 consumers: [{kind: Deployment, name: stuck}]\n",
    );
    // Made (the Secret did not exist), flipped, and stuck on the rollout.
    wait_for(&rotations_api, "creds", Duration::from_secs(60), |r| {
        condition(r, "Progressing").is_some_and(|c| c.1 == "Stalled")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", first.log()));
    let stuck = rotations_api.get("creds").await.unwrap();
    assert_eq!(
        condition(&stuck, "Stalled").map(|c| (c.0, c.1)),
        Some(("True".into(), "ConsumersStalled".into())),
        "kstatus reads a stuck rollout as Failed"
    );
    let flipped = secrets.get("creds").await.unwrap();
    assert_eq!(count(&flipped), 1);
    let password = value(&flipped, "password").unwrap();
    assert_eq!(password.len(), 24);
    first.signal("KILL").unwrap();

    // A request while in flight waits for it; a spec change shows the new manager looked.
    annotate(&rotations_api, "creds", labels::ROTATE_NOW, "leaked").await;
    let patch = serde_json::json!({"spec": {"strategy": {"gracePeriod": "2s"}}});
    let r = rotations_api
        .patch("creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = r.metadata.generation;
    let second = manager(&s, &kubeconfig, "second");
    let log = || {
        format!(
            "\n--- first ---\n{}\n--- second ---\n{}",
            first.log(),
            second.log()
        )
    };
    wait_for(&rotations_api, "creds", Duration::from_secs(90), |r| {
        r.status.as_ref().and_then(|s| s.observed_generation) == generation
            && condition(r, "Progressing").is_some_and(|c| c.1 == "Stalled")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let still = secrets.get("creds").await.unwrap();
    assert_eq!(count(&still), 1, "no second flip{}", log());
    assert_eq!(
        value(&still, "password").as_deref(),
        Some(password.as_str())
    );

    // The consumer can roll now: the rotation completes, then the request gets its one flip.
    s.c.kubectl(
        &[
            "patch",
            "deployment",
            "stuck",
            "-n",
            &s.ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"nodeSelector":{"type":"kwok"}}}}}"#,
        ],
        None,
    )
    .unwrap();
    wait_for(&rotations_api, "creds", Duration::from_secs(90), |r| {
        rotations(r) == 2 && condition(r, "Progressing").is_some_and(|c| c.1 == "Idle")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", log()));
    let after = secrets.get("creds").await.unwrap();
    assert_eq!(count(&after), 2);
    assert_eq!(
        after
            .annotations()
            .get(labels::ROTATION_REQUEST)
            .map(String::as_str),
        Some("leaked")
    );
    assert_ne!(value(&after, "password"), Some(password));
}
