//! The admission webhooks against the real API server: a manager outside the cluster serves
//! them on 127.0.0.1 with the certificate it bootstraps, keeps the CA bundle of its
//! ValidatingWebhookConfiguration (URL mode, limited to the test's namespace), and the API
//! server calls it for each kind. With the manager gone, only the webhook chosen to fail
//! closed refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::{Grant, MANAGER, setup};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use pgpilot_api::backup::PostgresBackup;
use pgpilot_testkit::{LocalCluster, ManagerProcess};

/// `kubectl apply` of `yaml` as admin: (succeeded, stderr), where kubectl prints the webhooks'
/// denials and warnings.
fn apply(c: &LocalCluster, ns: &str, yaml: &str) -> (bool, String) {
    apply_as(c, ns, yaml, None)
}

/// The same, as `user` (impersonated) when given.
fn apply_as(c: &LocalCluster, ns: &str, yaml: &str, user: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = c
        .kubectl_command()
        .args(["-n", ns, "create", "-f", "-"])
        .args(user.map(|u| format!("--as={u}")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admitted(c: &LocalCluster, ns: &str, yaml: &str) -> String {
    let (ok, stderr) = apply(c, ns, yaml);
    assert!(ok, "denied: {stderr}");
    stderr
}

fn denied(c: &LocalCluster, ns: &str, yaml: &str) -> String {
    let (ok, stderr) = apply(c, ns, yaml);
    assert!(!ok, "admitted: {yaml}");
    stderr
}

fn repository(bucket: &str) -> String {
    format!(
        "{{s3: {{endpoint: 'minio:9000', bucket: {bucket}, path: /pgbackrest, credentials: {{secretName: s3}}}}}}"
    )
}

fn cluster(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresCluster\nmetadata: {{name: {name}}}\nspec:\n  instances: 1\n  postgresql: {{version: 17}}\n  storage: {{size: 1Gi}}\n{extra}"
    )
}

fn restore(name: &str, source: &str, bucket: &str) -> String {
    cluster(
        name,
        &format!(
            "  bootstrap: {{restore: {{source: {{name: {source}}}, repository: {}}}}}\n",
            repository(bucket)
        ),
    )
}

fn upgrade(name: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresUpgrade\nmetadata: {{name: {name}}}\nspec: {{cluster: {{name: db}}, targetVersion: 17, targetImage: 'pg:17.2'}}\n"
    )
}

fn rotation(name: &str, cluster: &str, role: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1alpha1\nkind: SecretRotation\nmetadata: {{name: {name}}}\nspec: {{target: {{postgresRole: {{cluster: {cluster}, role: {role}}}}}, rotateEvery: {{interval: 720h}}}}\n"
    )
}

/// A PostgresBackup `name` of `cluster`, recorded as completed.
async fn completed_backup(
    c: &LocalCluster,
    backups: &Api<PostgresBackup>,
    name: &str,
    cluster: &str,
) {
    let ns = backups.namespace().unwrap_or_default().to_owned();
    admitted(
        c,
        &ns,
        &format!(
            "apiVersion: pgpilot.io/v1alpha1\nkind: PostgresBackup\nmetadata: {{name: {name}}}\nspec: {{cluster: {{name: {cluster}}}}}\n"
        ),
    );
    backups
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Completed"}})),
        )
        .await
        .unwrap();
}

/// Deletes the (cluster-scoped) webhook configuration even when the test fails.
struct Configuration<'a>(&'a LocalCluster, String);

impl Drop for Configuration<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(
            &[
                "delete",
                "validatingwebhookconfiguration",
                &self.1,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

#[tokio::test]
async fn the_api_server_calls_the_managers_webhooks_and_only_the_restore_one_fails_closed() {
    let s = setup("webhook").await;
    let (c, ns) = (s.c, s.ns.name.clone());
    let configuration = format!("pgpilot-{ns}");
    let secret = "pgpilot-webhook-tls";
    let _grant = Grant::for_controllers(c, &ns, "user:pgpilot-manager", "secret-rotation");
    let _webhook_grant =
        Grant::for_webhooks(c, &ns, "user:pgpilot-manager", &configuration, secret);

    // The configuration, as `pgpilot-manager webhooks` prints it, without a CA bundle yet.
    let port = pgpilot_testkit::free_port().unwrap();
    let printed = std::process::Command::new(MANAGER)
        .args(["webhooks", "--name", &configuration, "--namespace", &ns])
        .arg(format!("--url=https://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    c.kubectl(
        &["apply", "-f", "-"],
        Some(&String::from_utf8(printed.stdout).unwrap()),
    )
    .unwrap();
    let _configuration = Configuration(c, configuration.clone());

    let spawn = || {
        ManagerProcess::spawn_with(
            std::path::Path::new(MANAGER),
            &c.manager_kubeconfig,
            &[
                "--controllers=secret-rotation",
                &format!("--namespace={ns}"),
                &format!("--webhook-bind-address=127.0.0.1:{port}"),
                "--webhook-extra-name=127.0.0.1",
                &format!("--webhook-configuration={configuration}"),
                &format!("--webhook-secret={secret}"),
            ],
            "127.0.0.1",
            &[("POD_NAMESPACE".into(), ns.clone())],
        )
        .unwrap()
    };
    let mut manager = spawn();
    manager.wait_ready(Duration::from_secs(30)).await.unwrap();

    // Ready means the certificate is in the Secret and its CA in every webhook.
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &ns);
    let issued = secrets.get(secret).await.unwrap();
    let bundle = issued.data.as_ref().unwrap()["bundle.crt"].0.clone();
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(s.client.clone());
    let live = configurations.get(&configuration).await.unwrap();
    for hook in live.webhooks.unwrap() {
        assert_eq!(
            hook.client_config.ca_bundle.map(|b| b.0),
            Some(bundle.clone()),
            "{}",
            hook.name
        );
    }

    // Restores: the source's repository, or none to check.
    admitted(
        c,
        &ns,
        &cluster(
            "db",
            &format!(
                "  backup: {{repository: {}}}\n  roles: [{{name: app_user}}]\n",
                repository("one")
            ),
        ),
    );
    let reason = denied(c, &ns, &restore("wrong", "db", "two"));
    assert!(
        reason.contains("admission webhook \"restores.postgresclusters.pgpilot.io\" denied the request: spec.bootstrap.restore.repository is s3://two/pgbackrest, but PostgresCluster")
            && reason.contains("backs up to s3://one/pgbackrest"),
        "{reason}"
    );
    admitted(c, &ns, &restore("copy", "db", "one"));
    let warning = admitted(c, &ns, &restore("from-gone", "gone", "one"));
    assert!(
        warning.contains(&format!(
            "Warning: PostgresCluster {ns}/gone does not exist"
        )),
        "{warning}"
    );

    // One active upgrade per cluster.
    admitted(c, &ns, &upgrade("first"));
    let reason = denied(c, &ns, &upgrade("second"));
    assert!(
        reason.contains("PostgresUpgrade first is under way for cluster db"),
        "{reason}"
    );

    // A source in another namespace is checked only for a user who may read it there: the
    // webhook reads with the operator's rights, and must not tell others what is there.
    let other = format!("{ns}-other");
    let cross = |name: &str| {
        cluster(
            name,
            &format!(
                "  bootstrap: {{restore: {{source: {{name: db, namespace: {other}}}, repository: {}}}}}\n",
                repository("one")
            ),
        )
    };
    let warning = admitted(c, &ns, &cross("cross-admin"));
    assert!(
        warning.contains(&format!("PostgresCluster {other}/db does not exist")),
        "{warning}"
    );
    c.kubectl(
        &[
            "-n",
            &ns,
            "create",
            "role",
            "restorer",
            "--verb=create",
            "--resource=postgresclusters.pgpilot.io",
        ],
        None,
    )
    .unwrap();
    c.kubectl(
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            "restorer",
            "--role=restorer",
            "--user=alice",
        ],
        None,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let warning = loop {
        let (ok, stderr) = apply_as(c, &ns, &cross("cross-alice"), Some("alice"));
        if ok {
            break stderr;
        }
        // (The authorizer learns of the binding from a watch.)
        assert!(
            Instant::now() < deadline,
            "alice may not create clusters: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        warning.contains(&format!(
            "the restore's source in namespace {other} is not checked"
        )),
        "{warning}"
    );

    // A rotation's target: declared, and one owner.
    admitted(c, &ns, &rotation("app", "db", "app_user"));
    let reason = denied(c, &ns, &rotation("again", "db", "app_user"));
    assert!(
        reason.contains("Secret db-app-user-credentials is rotated by SecretRotation app"),
        "{reason}"
    );
    let reason = denied(c, &ns, &rotation("nobody", "db", "nobody"));
    assert!(reason.contains("declares no role nobody"), "{reason}");
    let warning = admitted(c, &ns, &rotation("later", "not-yet", "app_user"));
    assert!(warning.contains("does not exist (yet)"), "{warning}");

    // A new cluster named like one whose completed backups are still recorded.
    let backups: Api<PostgresBackup> = Api::namespaced(s.client.clone(), &ns);
    completed_backup(c, &backups, "old-1", "old").await;
    let warning = admitted(
        c,
        &ns,
        &cluster(
            "old",
            &format!("  backup: {{repository: {}}}\n", repository("one")),
        ),
    );
    assert!(
        warning
            .contains("Warning: PostgresBackups old-1 hold backups of an earlier PostgresCluster"),
        "{warning}"
    );
    // The same warning when backups are added later (an update) to a cluster named like one
    // whose backups are recorded; none for an update that does not add them, or without such
    // records.
    let add_backup = |name: &str| {
        let out = c
            .kubectl_command()
            .args(["-n", &ns, "patch", "pgc", name, "--type=merge", "-p"])
            .arg(r#"{"spec":{"backup":{"repository":{"s3":{"endpoint":"minio:9000","bucket":"one","credentials":{"secretName":"s3"}}}}}}"#)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    completed_backup(c, &backups, "prior-1", "prior").await;
    admitted(c, &ns, &cluster("prior", ""));
    let warning = add_backup("prior");
    assert!(
        warning.contains(
            "Warning: PostgresBackups prior-1 hold backups of an earlier PostgresCluster"
        ),
        "{warning}"
    );
    assert_eq!(
        add_backup("old"),
        "",
        "old had backups already: not an update that adds them"
    );
    admitted(c, &ns, &cluster("again", ""));
    assert_eq!(add_backup("again"), "", "no backups recorded for again");

    // A second start finds the certificate good: no new one, no write.
    manager.signal("TERM").unwrap();
    manager.wait_exit(Duration::from_secs(30)).await.unwrap();
    let mut manager = spawn();
    manager.wait_ready(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        secrets.get(secret).await.unwrap().metadata.resource_version,
        issued.metadata.resource_version
    );
    admitted(c, &ns, &restore("copy-2", "db", "one"));

    // The manager gone: the restore webhook fails closed with its name in the error, the
    // others let the request through (their controllers check again).
    manager.signal("TERM").unwrap();
    manager.wait_exit(Duration::from_secs(30)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    let reason = loop {
        // (A create that raced the exit goes through: the next attempt takes another name.)
        attempt += 1;
        let (ok, stderr) = apply(
            c,
            &ns,
            &restore(&format!("while-down-{attempt}"), "db", "one"),
        );
        if !ok {
            break stderr;
        }
        assert!(
            Instant::now() < deadline,
            "restores still admitted with the webhook down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reason.contains("failed calling webhook \"restores.postgresclusters.pgpilot.io\""),
        "{reason}"
    );
    admitted(c, &ns, &upgrade("while-down"));
    admitted(c, &ns, &cluster("plain", ""));
}
