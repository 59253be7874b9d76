//! The manager binary against a real API server, running as its own least-privilege user
//! with exactly the RBAC `pgpilot-manager rbac` generates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use pgpilot_testkit::{ManagerProcess, TestNamespace, cluster, http_get};

mod common;

use common::{Grant, spawn};

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Waits until the Lease holder starts with `prefix-`; returns how long that took.
async fn wait_for_holder(
    leases: &Api<Lease>,
    prefix: &str,
    timeout: Duration,
    logs: &[&ManagerProcess],
) -> Duration {
    let start = Instant::now();
    let want = format!("{prefix}-");
    let result =
        pgpilot_testkit::wait_for(leases, "pgpilot", timeout, |l| holder(l).starts_with(&want))
            .await;
    if let Err(e) = result {
        let logs: Vec<String> = logs.iter().map(|m| m.log()).collect();
        panic!("{e}\n--- manager logs ---\n{}", logs.join("\n-----\n"));
    }
    start.elapsed()
}

/// SIGTERM, then a clean exit (code 0) that gave the Lease back.
async fn stop_and_release(m: &mut ManagerProcess, leases: &Api<Lease>) {
    m.signal("TERM").unwrap();
    assert_eq!(
        m.wait_exit(Duration::from_secs(10)).await.unwrap(),
        Some(0),
        "{}",
        m.log()
    );
    let released = pgpilot_testkit::wait_for(leases, "pgpilot", Duration::from_secs(5), |l| {
        holder(l).is_empty()
    })
    .await;
    assert!(
        released.is_ok(),
        "lease not released: {released:?}\n{}",
        m.log()
    );
}

#[tokio::test]
async fn serves_probes_and_metrics_with_only_its_generated_rbac() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    pgpilot_testkit::install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "mgr").await.unwrap();
    let _grant = Grant::new(c, &ns.name);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);

    let mut m = spawn(c, &ns.name, "solo", &[]);
    m.wait_ready(Duration::from_secs(20)).await.unwrap();
    assert_eq!(http_get(m.probes_port(), "/healthz").await.unwrap().0, 200);
    let (status, metrics) = http_get(m.metrics_port(), "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("pgpilot_build_info{version="), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    // Leading needs the Lease rights of the generated Role, and nothing more.
    wait_for_holder(&leases, "solo", Duration::from_secs(20), &[&m]).await;
    let mut metrics = String::new();
    for _ in 0..20 {
        metrics = http_get(m.metrics_port(), "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if metrics.contains("pgpilot_leader 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("pgpilot_leader 1"), "{metrics}");
    let can = |args: &[&str]| c.can_i("pgpilot-manager", args).unwrap();
    assert!(can(&["update", "leases", "-n", &ns.name]));
    assert!(!can(&["update", "leases", "-n", "default"]));
    // The cluster controller needs Secrets, StatefulSets, … — but nothing cluster-wide.
    assert!(can(&["create", "secrets", "-n", &ns.name]));
    assert!(!can(&["list", "nodes"]));
    assert!(!can(&[
        "create",
        "customresourcedefinitions.apiextensions.k8s.io"
    ]));
    assert!(!can(&["create", "clusterroles.rbac.authorization.k8s.io"]));
    assert!(!can(&["create", "pods/exec", "-n", &ns.name]));
    assert!(!can(&["create", "pods", "-n", &ns.name]));
    assert!(can(&["create", "events.events.k8s.io", "-n", "default"]));

    // SIGTERM: a clean exit that gives the Lease back.
    stop_and_release(&mut m, &leases).await;
    ns.delete().await.unwrap();
}

/// A stop right after winning the Lease, before the caches listed once: kube-runtime holds its
/// runner until they have, and a stopped watch never lists, yet the manager must exit and give
/// the Lease back (it hung here before).
#[tokio::test]
async fn a_stop_right_after_winning_the_lease_still_exits_and_releases_it() {
    let c = cluster();
    let client = c.admin().await.unwrap();
    pgpilot_testkit::install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "early").await.unwrap();
    let _grant = Grant::new(c, &ns.name);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    for attempt in 0..3 {
        let mut m = spawn(c, &ns.name, &format!("early{attempt}"), &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.log().contains("became leader") {
            assert!(Instant::now() < deadline, "never led:\n{}", m.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_and_release(&mut m, &leases).await;
    }
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn exactly_one_of_two_managers_leads_and_a_standby_takes_over() {
    const LEASE_SECONDS: u64 = 4;
    let c = cluster();
    let client = c.admin().await.unwrap();
    pgpilot_testkit::install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "leader").await.unwrap();
    let _grant = Grant::new(c, &ns.name);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let duration = format!("--leader-election-lease-duration={LEASE_SECONDS}");

    let a = spawn(c, &ns.name, "a", &[&duration]);
    wait_for_holder(&leases, "a", Duration::from_secs(20), &[&a]).await;
    let mut b = spawn(c, &ns.name, "b", &[&duration]);
    b.wait_ready(Duration::from_secs(20)).await.unwrap();
    // Give b more than a full lease term to (wrongly) grab the lock.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let lease = leases.get("pgpilot").await.unwrap();
    assert!(
        holder(&lease).starts_with("a-"),
        "a must still lead: {lease:?}"
    );
    assert!(a.log().contains("became leader"), "{}", a.log());
    assert!(
        !b.log().contains("became leader"),
        "b leads too:\n{}",
        b.log()
    );
    let (_, b_metrics) = http_get(b.metrics_port(), "/metrics").await.unwrap();
    assert!(b_metrics.contains("pgpilot_leader 0"), "{b_metrics}");

    // Hard kill: a never renews; b leads once the lease term runs out.
    a.signal("KILL").unwrap();
    let took = wait_for_holder(
        &leases,
        "b",
        Duration::from_secs(LEASE_SECONDS * 3),
        &[&a, &b],
    )
    .await;
    eprintln!("takeover after SIGKILL of the leader: {took:?}");
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS),
        "takeover after SIGKILL took {took:?}, more than the {LEASE_SECONDS}s lease"
    );

    // Graceful stop: b releases the lease and the standby c takes over within 2 s.
    let c_proc = spawn(c, &ns.name, "c", &[&duration]);
    c_proc.wait_ready(Duration::from_secs(20)).await.unwrap();
    b.signal("TERM").unwrap();
    let took = wait_for_holder(
        &leases,
        "c",
        Duration::from_secs(LEASE_SECONDS * 3),
        &[&b, &c_proc],
    )
    .await;
    eprintln!("takeover after SIGTERM of the leader: {took:?}");
    assert!(
        took <= Duration::from_secs(2),
        "takeover after a graceful stop took {took:?}"
    );
    assert_eq!(
        b.wait_exit(Duration::from_secs(10)).await.unwrap(),
        Some(0),
        "{}",
        b.log()
    );
    ns.delete().await.unwrap();
}
