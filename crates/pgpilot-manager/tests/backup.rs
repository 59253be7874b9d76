//! The backup controller's schedules against a real API server (control plane only: no
//! PostgreSQL, so the backups they create stay Pending; the e2e tier takes real backups).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{Grant, Setup, setup, spawn};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pgpilot_api::{BackupSchedule, PostgresBackup};
use pgpilot_testkit::wait_for;

fn apply(s: &Setup, yaml: &str) {
    s.c.kubectl(&["apply", "-n", &s.ns.name, "-f", "-"], Some(yaml))
        .unwrap();
}

/// A finished backup of schedule `nightly`, as an earlier run left it.
async fn finished_backup(s: &Setup, name: &str) {
    let api: Api<PostgresBackup> = Api::namespaced(s.client.clone(), &s.ns.name);
    let b: PostgresBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
        "metadata": {"name": name, "labels": {"pgpilot.io/schedule": "nightly",
            "pgpilot.io/cluster": "db", "app.kubernetes.io/managed-by": "pgpilot"}},
        "spec": {"cluster": {"name": "db"}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &b).await.unwrap();
    let status = serde_json::json!({"status": {"phase": "Completed", "backupId": format!("{name}F"),
        "stopTime": "2026-12-01T03:00:00Z"}});
    api.patch_status(
        name,
        &PatchParams::apply("test-earlier-run").force(),
        &Patch::Apply(serde_json::json!({"apiVersion": "pgpilot.io/v1alpha1",
            "kind": "PostgresBackup", "status": status["status"]})),
    )
    .await
    .unwrap();
    // One second apart: history limits drop the oldest first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn a_schedule_creates_each_run_once_and_keeps_its_history_limit() {
    let s = setup("schedule").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    // Before the manager starts: the backups' status is the earlier runs', not a race with
    // the controller's first look at them.
    for name in ["nightly-old-1", "nightly-old-2", "nightly-old-3"] {
        finished_backup(&s, name).await;
    }
    let m = spawn(s.c, &s.ns.name, "schedule", &["--controllers=backup"]);
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: nightly}\nspec: {cluster: {name: db}, schedule: '* * * * *', type: Incremental, retention: {successful: 1}}\n",
    );
    let backups: Api<PostgresBackup> = Api::namespaced(s.client.clone(), &s.ns.name);
    let of_schedule = ListParams::default().labels("pgpilot.io/schedule=nightly");

    // The history limit: only the newest finished backup stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = backups
            .list(&of_schedule)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|b| b.name_any().starts_with("nightly-old"))
            .map(|b| b.name_any())
            .collect();
        if names == ["nightly-old-3"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished backups left: {names:?}\n--- manager log ---\n{}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The next minute's run: one PostgresBackup named after its time, owned by the schedule.
    let schedules: Api<BackupSchedule> = Api::namespaced(s.client.clone(), &s.ns.name);
    let sched = wait_for(&schedules, "nightly", Duration::from_secs(75), |b| {
        b.status
            .as_ref()
            .is_some_and(|st| st.last_schedule_time.is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    let st = sched.status.clone().unwrap();
    let created = st.last_backup.clone().expect("status.lastBackup");
    let b = backups.get(&created).await.unwrap();
    let when = st.last_schedule_time.as_ref().unwrap().0;
    assert_eq!(
        created,
        format!("nightly-{}", when.strftime("%Y%m%d%H%M")),
        "named after its run"
    );
    assert_eq!(b.spec.cluster.name, "db");
    assert_eq!(
        b.spec.backup_type,
        pgpilot_api::common::BackupType::Incremental
    );
    assert_eq!(b.owner_references()[0].name, "nightly");
    assert_eq!(
        b.annotations()["pgpilot.io/scheduled-at"],
        when.to_string(),
        "the backup records its run, so a stale read of the schedule cannot take it again"
    );
    assert_eq!(st.active, [created], "pending: there is no cluster");
    assert!(st.next_schedule_time.is_some_and(|n| n.0 > when));
    let scheduled = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Scheduled")
        .expect("Scheduled condition");
    assert_eq!(scheduled.status, "True", "{scheduled:?}");
    let runs = backups
        .list(&of_schedule)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| !b.name_any().starts_with("nightly-old"))
        .count();
    assert_eq!(runs, 1, "one backup per run");
}

#[tokio::test]
async fn a_schedule_in_an_unknown_time_zone_says_so() {
    let s = setup("schedule-tz").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = spawn(s.c, &s.ns.name, "schedule-tz", &["--controllers=backup"]);
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: BackupSchedule\nmetadata: {name: nightly}\nspec: {cluster: {name: db}, schedule: '@daily', timeZone: Mars/Olympus}\n",
    );
    let schedules: Api<BackupSchedule> = Api::namespaced(s.client.clone(), &s.ns.name);
    let sched = wait_for(&schedules, "nightly", Duration::from_secs(30), |b| {
        b.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Scheduled" && c.reason == "InvalidSchedule")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    let c = &sched.status.unwrap().conditions;
    let scheduled = c.iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(scheduled.status, "False");
    assert!(scheduled.message.contains("Mars/Olympus") && scheduled.message.contains("IANA"));
}
