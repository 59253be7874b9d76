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
    // kstatus (Flux) reads it as Failed, not as a schedule still on its way.
    let stalled = c.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidSchedule")
    );
}

fn condition<'a>(
    pg: &'a pgpilot_api::PostgresCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pg.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The two controllers' hand-over before a restore, through the API: the cluster controller
/// creates no instance until a backup is chosen (and says why, with no backup controller);
/// the backup controller starts its check Job; the choice in `status.restore` lets the
/// instances come, bootstrapping from that backup.
#[tokio::test]
async fn a_restored_cluster_gets_no_instance_until_a_backup_is_chosen() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::ConfigMap;
    use pgpilot_api::PostgresCluster;

    let s = setup("restore-gate").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let mut cluster_only = spawn(s.c, &s.ns.name, "gate-1", &["--controllers=cluster"]);
    apply(
        &s,
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {name: db}\nspec:\n  instances: 2\n  postgresql: {version: 17, image: localhost/pgpilot/postgres:17}\n  storage: {size: 1Gi}\n  bootstrap:\n    restore:\n      source: {name: old}\n      repository: {s3: {endpoint: 'minio.storage.svc:9000', bucket: backups, credentials: {secretName: s3}}}\n    recoveryTarget: {time: '2026-12-06T01:02:03Z'}\n",
    );
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns.name);
    let timeout = Duration::from_secs(30);

    wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "BackupsHandled").is_some_and(|c| c.reason == "NoBackupController")
            && condition(pg, "Progressing").is_some_and(|c| c.reason == "WaitingForRestoreSource")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", cluster_only.log()));
    // The rest of the children are there (restore.conf with the source's stanza), not the
    // StatefulSet.
    let cm = wait_for(&config_maps, "db-pgbackrest", timeout, |_| true)
        .await
        .unwrap();
    let data = cm.data.unwrap_or_default();
    assert!(
        data["restore.conf"].contains(&format!("[{}-old]", s.ns.name)),
        "{data:?}"
    );
    assert!(statefulsets.get_opt("db").await.unwrap().is_none());

    // The backup controller takes over the check: its Job, owned by the cluster.
    cluster_only.signal("TERM").unwrap();
    cluster_only.wait_exit(timeout).await.unwrap();
    let both = spawn(s.c, &s.ns.name, "gate-2", &["--controllers=cluster,backup"]);
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), &s.ns.name);
    let job = wait_for(&jobs, "db-restore-check", timeout, |_| true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", both.log()));
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("PostgresCluster", "db")
    );
    wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "RestoreSourceReady").is_some() && condition(pg, "BackupsHandled").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", both.log()));
    assert!(statefulsets.get_opt("db").await.unwrap().is_none());

    // A choice (written here as the check would; kwok runs no pgBackRest): the instances
    // come, and the first one restores exactly that backup.
    clusters
        .patch_status(
            "db",
            &PatchParams::apply("test-restore-check").force(),
            &Patch::Apply(serde_json::json!({"apiVersion": "pgpilot.io/v1alpha1",
                "kind": "PostgresCluster", "status": {"restore": {
                    "stanza": format!("{}-old", s.ns.name), "backupId": "20261206-010000F"}}})),
        )
        .await
        .unwrap();
    wait_for(&statefulsets, "db", timeout, |_| true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", both.log()));
    let patroni = config_maps.get("db-patroni").await.unwrap();
    let yaml = &patroni.data.unwrap_or_default()["patroni.yaml"];
    assert!(
        yaml.contains("--set=20261206-010000F --delta restore"),
        "{yaml}"
    );
    assert!(
        yaml.contains(r#""recovery_target_time": "2026-12-06 01:02:03+00:00""#),
        "{yaml}"
    );
}

/// A cluster's backups live in one repository (`status.backup.repository`): CEL refuses to
/// change it in one apply, and removing `spec.backup` then adding it back with another bucket
/// does not move archiving or backups either until the annotation accepts the new one.
#[tokio::test]
async fn a_new_backup_repository_waits_for_acceptance_whatever_the_apply_order() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use pgpilot_api::PostgresCluster;

    let s = setup("repo-change").await;
    let _grant = Grant::new(s.c, &s.ns.name);
    let m = spawn(s.c, &s.ns.name, "repo", &["--controllers=cluster,backup"]);
    let with_bucket = |bucket: &str| {
        format!(
            "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {{name: db}}\nspec:\n  instances: 1\n  postgresql: {{version: 17, image: localhost/pgpilot/postgres:17}}\n  storage: {{size: 1Gi}}\n  backup:\n    repository: {{s3: {{endpoint: 'minio.storage.svc:9000', bucket: {bucket}, path: /pg, credentials: {{secretName: s3}}}}}}\n"
        )
    };
    apply(&s, &with_bucket("one"));
    let clusters: Api<PostgresCluster> = Api::namespaced(s.client.clone(), &s.ns.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns.name);
    let timeout = Duration::from_secs(30);
    wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "ContinuousArchiving").is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    // Backups exist in bucket one (recorded here as the stanza Job's success would; kwok runs
    // no pgBackRest).
    clusters
        .patch_status(
            "db",
            &PatchParams::apply("test-earlier-stanza").force(),
            &Patch::Apply(serde_json::json!({"apiVersion": "pgpilot.io/v1alpha1",
                "kind": "PostgresCluster", "status": {"backup": {
                    "repository": "s3://one/pg"}}})),
        )
        .await
        .unwrap();
    let refused =
        s.c.kubectl(
            &["apply", "-n", &s.ns.name, "-f", "-"],
            Some(&with_bucket("two")),
        )
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("bucket and path are immutable"),
        "{refused}"
    );

    // Removed, then added back with another bucket.
    let merge = |spec: serde_json::Value| {
        let clusters = clusters.clone();
        async move {
            clusters
                .patch(
                    "db",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": spec})),
                )
                .await
                .unwrap();
        }
    };
    merge(serde_json::json!({"backup": null})).await;
    let recorded = |pg: &PostgresCluster| {
        pg.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .and_then(|b| b.repository.clone())
    };
    let pg = wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "ContinuousArchiving").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    assert_eq!(recorded(&pg).as_deref(), Some("s3://one/pg"));
    apply(&s, &with_bucket("two"));
    let pg = wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "ContinuousArchiving")
            .is_some_and(|c| c.reason == "RepositoryChangeNotAccepted")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    let message = &condition(&pg, "ContinuousArchiving").unwrap().message;
    assert!(
        message.ends_with(&format!(
            "kubectl -n {} annotate pgc db pgpilot.io/backup-repository=s3://two/pg --overwrite",
            s.ns.name
        )),
        "{message}"
    );
    let pgbackrest_conf = || async {
        config_maps
            .get_opt("db-pgbackrest")
            .await
            .unwrap()
            .and_then(|cm| cm.data)
            .map(|d| d.values().cloned().collect::<String>())
            .unwrap_or_default()
    };
    assert!(
        !pgbackrest_conf().await.contains("repo1-s3-bucket=two"),
        "WAL would go to bucket two"
    );

    // Accepted: archiving moves to bucket two.
    s.c.kubectl(
        &[
            "annotate",
            "-n",
            &s.ns.name,
            "pgc",
            "db",
            "pgpilot.io/backup-repository=s3://two/pg",
        ],
        None,
    )
    .unwrap();
    wait_for(&clusters, "db", timeout, |pg| {
        condition(pg, "ContinuousArchiving")
            .is_some_and(|c| c.reason != "RepositoryChangeNotAccepted")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
    wait_for(&config_maps, "db-pgbackrest", timeout, |cm| {
        cm.data
            .as_ref()
            .is_some_and(|d| d.values().any(|v| v.contains("repo1-s3-bucket=two")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- manager log ---\n{}", m.log()));
}
