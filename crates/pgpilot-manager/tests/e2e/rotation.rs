//! Credential rotation under a live client: a Deployment that opens a new connection for every
//! insert, with the credentials its pods got from the role's Secret (env), goes through three
//! AlternatingUsers rotations. PostgreSQL itself says whether any login failed.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use pgpilot_api::{SecretRotation, labels};

use crate::harness::{ClusterYaml, Credentials, Env, connect, eventually, secret_value, timeline};

/// From `kubectl apply` to Ready, on a loaded shared node.
const CREATE: Duration = Duration::from_secs(300);
/// One rotation: the flip, the client's rollout, the grace period, the revocation.
const ROTATION: Duration = Duration::from_secs(180);
const SECRET: &str = "db-app-credentials";
/// What PostgreSQL logs (after `FATAL:`) when it refuses a login.
const REFUSED: [&str; 3] = [
    "password authentication failed",
    "is not permitted to log in",
    "does not exist",
];

/// Two pods; each inserts one row per new connection, every 200 ms, and is Ready once one
/// insert went through. A rollout replaces one pod at a time and keeps both serving.
fn client() -> String {
    let env = ["host", "port", "username", "password", "dbname"]
        .iter()
        .zip(["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"])
        .map(|(key, var)| {
            format!("        - {{name: {var}, valueFrom: {{secretKeyRef: {{name: {SECRET}, key: {key}}}}}}}\n")
        })
        .collect::<String>();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: client}}}}
  strategy: {{rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, runAsUser: 999, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: client
        image: localhost/pgpilot/pgclient:17
        imagePullPolicy: Never
        env:
{env}        - {{name: PGCONNECT_TIMEOUT, value: '3'}}
        command: [bash, -c]
        args:
        - |
          # Logins count from the moment the server is reachable: a new pod's address is let
          # through the NetworkPolicy within a second or two (pg_isready does not log in).
          until pg_isready -q -t 1; do sleep 0.1; done
          while true; do
            if out=$(psql -v ON_ERROR_STOP=1 -qAtc \"INSERT INTO ticks (pod) VALUES ('$HOSTNAME')\" 2>&1); then
              touch /tmp/ok
            else
              echo \"FAILED $(date +%T.%N) $out\"
            fi
            sleep 0.2
          done
        readinessProbe: {{exec: {{command: [test, -f, /tmp/ok]}}, periodSeconds: 1}}
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
        securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"
    )
}

fn rotations(r: &SecretRotation) -> i64 {
    r.status.as_ref().map_or(0, |s| s.rotations)
}

fn idle(r: &SecretRotation) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == "Idle")
    })
}

/// Logins PostgreSQL refused so far, from the instance pods' logs.
fn refused_logins(env: &Env) -> Result<Vec<String>> {
    let log = env.kubectl(&["logs", "db-0", "-c", "postgres"])?;
    Ok(log
        .lines()
        .filter(|l| l.contains("FATAL") && REFUSED.iter().any(|r| l.contains(r)))
        .map(str::to_owned)
        .collect())
}

#[tokio::test]
async fn three_alternating_rotations_under_a_live_client_refuse_no_login() {
    let env = Env::start("rotation").await;
    let result = three_rotations(&env).await;
    env.finish(result).await;
}

async fn three_rotations(env: &Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .spec("roles: [{name: app}]")
            .spec("databases: [{name: shop, owner: app}]")
            .yaml(),
    )?;
    env.wait_ready("db", 1, CREATE).await?;
    let original = eventually("the app role's login", CREATE, || async {
        let creds = env.credentials(SECRET).await.map_err(|e| e.to_string())?;
        let client = env
            .connect("db-rw", &creds, Duration::from_secs(5))
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok((creds, client))
    })
    .await?;
    let (original, app) = original;
    ensure!(original.username == "app");
    app.batch_execute(
        "CREATE TABLE ticks (pod text NOT NULL, login text NOT NULL DEFAULT session_user, at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    env.apply(&client())?;
    let deployments = env.api::<Deployment>();
    eventually("the client's two pods Ready", CREATE, || async {
        let d = deployments.get("client").await.map_err(|e| e.to_string())?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        (ready == 2).then_some(()).ok_or(format!("{ready}/2 ready"))
    })
    .await?;
    let before = refused_logins(env)?;

    env.apply(
        "apiVersion: pgpilot.io/v1alpha1
kind: SecretRotation
metadata: {name: app}
spec:
  target: {postgresRole: {cluster: db, role: app}}
  rotateEvery: {interval: 720h}
  strategy: {type: AlternatingUsers, gracePeriod: 15s}
  consumers: [{kind: Deployment, name: client}]
",
    )?;
    let rotations_api = env.api::<SecretRotation>();
    let mut seen: Vec<Credentials> = vec![original.clone()];
    let mut owners = BTreeSet::new();
    for n in 1..=3 {
        let patch = serde_json::json!({"metadata": {"annotations": {labels::ROTATE_NOW: format!("test-{n}")}}});
        rotations_api
            .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        eventually(&format!("rotation {n} complete"), ROTATION, || async {
            let r = rotations_api.get("app").await.map_err(|e| e.to_string())?;
            (rotations(&r) == n && idle(&r))
                .then_some(())
                .ok_or(format!("{:?}", r.status))
        })
        .await?;
        let creds = env.credentials(SECRET).await?;
        let expected = if n % 2 == 1 { "app_a" } else { "app_b" };
        ensure!(
            creds.username == expected,
            "rotation {n} logs in as {}",
            creds.username
        );
        ensure!(
            !seen.iter().any(|c| c.password == creds.password),
            "rotation {n} reused a password"
        );
        // What the new login creates belongs to the role, not to the login.
        let client = env
            .connect("db-rw", &creds, Duration::from_secs(10))
            .await?;
        let table = format!("made_by_{}_{n}", creds.username);
        client
            .batch_execute(&format!("CREATE TABLE {table} (x int)"))
            .await?;
        let owner: String = client
            .query_one(
                "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
                &[&table],
            )
            .await?
            .get(0);
        owners.insert(owner);
        // The login it replaced no longer works.
        let previous = seen.last().context("a previous login")?;
        match connect(&env.pg_config("db-rw", previous).await?).await {
            Ok(_) => bail!(
                "rotation {n}: {} still logs in with its password",
                previous.username
            ),
            Err(e) => ensure!(
                format!("{e:#}").contains("password authentication failed"),
                "rotation {n}: {} refused for another reason: {e:#}",
                previous.username
            ),
        }
        seen.push(creds);
    }
    ensure!(
        owners == BTreeSet::from(["app".to_owned()]),
        "owners {owners:?}"
    );

    // Refused: only the test's own three attempts with revoked logins.
    let after = refused_logins(env)?;
    let during: Vec<&String> = after.iter().skip(before.len()).collect();
    ensure!(
        during.len() == 3,
        "PostgreSQL refused {} login(s) during the rotations (3 expected, the test's own):\n{}",
        during.len(),
        during
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The client kept inserting as each login in turn (the first connection, as `app`, was
    // ended with that login).
    let last = seen.last().context("the last login")?;
    let latest = env.connect("db-rw", last, Duration::from_secs(10)).await?;
    let logins: BTreeSet<String> = latest
        .query("SELECT DISTINCT login FROM ticks", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        logins == BTreeSet::from(["app", "app_a", "app_b"].map(str::to_owned)),
        "the client inserted as {logins:?}"
    );
    let failed = env.kubectl(&["logs", "-l", "app=client", "--tail=-1"])?;
    ensure!(
        !failed.contains("FAILED"),
        "the client's pods saw failures:\n{failed}"
    );

    // No secret value anywhere pgpilot writes: its log, Events, status, metrics.
    let events = env.kubectl(&["get", "events", "-o", "yaml"])?;
    let status = env.kubectl(&["get", "secretrotation", "app", "-o", "yaml"])?;
    let deployment = env.kubectl(&["get", "deployment", "client", "-o", "yaml"])?;
    let outputs = [
        ("manager log", env.manager_log()),
        ("events", events),
        ("SecretRotation", status),
        ("client Deployment", deployment),
        ("metrics", env.metrics().await?),
    ];
    for creds in &seen {
        for (what, text) in &outputs {
            ensure!(
                !text.contains(&creds.password),
                "the password of {} is in the {what}",
                creds.username
            );
        }
    }
    let secret = env.secret(SECRET).await?;
    ensure!(secret_value(&secret, "username")? == "app_a", "a, b, a");
    ensure!(
        secret
            .annotations()
            .get(labels::ROTATION_COUNT)
            .map(String::as_str)
            == Some("3"),
        "rotation count {:?}",
        secret.annotations().get(labels::ROTATION_COUNT)
    );
    Ok(())
}

/// The replication user's SCRAM verifier, as the primary stores it.
async fn verifier(su: &tokio_postgres::Client) -> Result<String> {
    let row = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'replicator'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The superuser, the replication user and an application role rotated in place on a cluster
/// with a replica: Patroni reloads the new passwords without a restart, the standby reconnects
/// with the new replication password, no failover follows; then neither a failover nor a
/// manager restart puts an old password back.
#[tokio::test]
async fn superuser_replication_and_in_place_rotations_keep_the_cluster_without_a_failover() {
    let mut env = Env::start("rotation-su").await;
    let result = in_place_rotations(&mut env).await;
    env.finish(result).await;
}

async fn in_place_rotations(env: &mut Env) -> Result<()> {
    env.apply(
        &ClusterYaml::new("db")
            .instances(2)
            .spec("roles: [{name: app}]")
            .yaml(),
    )?;
    let pg = env.wait_ready("db", 2, CREATE).await?;
    let primary = pg.status.as_ref().and_then(|s| s.current_primary.clone());
    let before_timeline = timeline(&pg);
    let old = [
        env.credentials("db-superuser").await?,
        env.credentials(SECRET).await?,
    ];
    let old_replication = env.credentials("db-replication").await?;
    let old_verifier = verifier(
        &env.connect("db-rw", &old[0], Duration::from_secs(30))
            .await?,
    )
    .await?;
    for (name, role) in [("su", "postgres"), ("repl", "replicator"), ("app", "app")] {
        env.apply(&format!(
            "apiVersion: pgpilot.io/v1alpha1
kind: SecretRotation
metadata: {{name: {name}, annotations: {{pgpilot.io/rotate-now: first}}}}
spec:
  target: {{postgresRole: {{cluster: db, role: {role}}}}}
  rotateEvery: {{interval: 720h}}
"
        ))?;
    }
    let rotations_api = env.api::<SecretRotation>();
    for name in ["su", "repl", "app"] {
        eventually(&format!("rotation {name} complete"), ROTATION, || async {
            let r = rotations_api.get(name).await.map_err(|e| e.to_string())?;
            (rotations(&r) == 1 && idle(&r))
                .then_some(())
                .ok_or(format!("{:?}", r.status))
        })
        .await?;
    }
    let new = [
        env.credentials("db-superuser").await?,
        env.credentials(SECRET).await?,
    ];
    for (o, n) in old.iter().zip(&new) {
        ensure!(
            o.username == n.username && o.password != n.password,
            "{} not rotated",
            o.username
        );
    }
    ensure!(
        secret_value(&env.secret("db-superuser").await?, "password.previous").is_err(),
        "the previous superuser password is forgotten once the rotation completed"
    );

    let su = env
        .connect("db-rw", &new[0], Duration::from_secs(30))
        .await?;
    let replication = env.credentials("db-replication").await?;
    ensure!(
        replication.password != old_replication.password && verifier(&su).await? != old_verifier,
        "the replication user has a new password, in its Secret and on the role"
    );

    // The standby's next connection (a new WAL sender) authenticates with the new password:
    // the role has no other.
    let senders = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<i32> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    let before = senders(su.query("SELECT pid FROM pg_stat_replication", &[]).await?);
    su.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        .await?;
    eventually(
        "a new WAL sender streaming",
        Duration::from_secs(60),
        || async {
            let now = senders(
                su.query(
                    "SELECT pid FROM pg_stat_replication WHERE state = 'streaming'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?,
            );
            (now.len() == 1 && now.is_disjoint(&before))
                .then_some(())
                .ok_or(format!("streaming senders {now:?}, before {before:?}"))
        },
    )
    .await?;
    let pg = env.cluster("db").await?;
    ensure!(
        pg.status.as_ref().and_then(|s| s.current_primary.clone()) == primary
            && timeline(&pg) == before_timeline,
        "a failover happened: primary {:?} → {:?}, timeline {before_timeline:?} → {:?}",
        primary,
        pg.status.as_ref().and_then(|s| s.current_primary.clone()),
        timeline(&pg)
    );
    let refused = |e: anyhow::Error| format!("{e:#}").contains("password authentication failed");
    for (o, n) in old.iter().zip(&new) {
        match connect(&env.pg_config("db-rw", o).await?).await {
            Ok(_) => bail!("{}'s old password still works", o.username),
            Err(e) => ensure!(refused(e), "{} refused for another reason", o.username),
        }
        env.connect("db-rw", n, Duration::from_secs(10)).await?;
    }

    // A failover, then a manager restart: the Secrets stay the truth.
    let primary = primary.context("a primary")?;
    env.kubectl(&["delete", "pod", &primary, "--wait=false"])?;
    env.wait_cluster("db", "a new primary", CREATE, |pg| {
        let now = pg.status.as_ref().and_then(|s| s.current_primary.clone());
        if now.is_some() && now.as_deref() != Some(primary.as_str()) {
            Ok(())
        } else {
            Err(format!("primary {now:?}"))
        }
    })
    .await?;
    env.wait_ready("db", 2, CREATE).await?;
    env.restart_manager().await?;
    env.wait_ready("db", 2, CREATE).await?;
    for n in &new {
        env.connect("db-rw", n, Duration::from_secs(60)).await?;
    }
    // The old primary came back as a standby of the new one, with the new password.
    let su = env
        .connect("db-rw", &new[0], Duration::from_secs(30))
        .await?;
    eventually(
        "the old primary streaming from the new one",
        Duration::from_secs(120),
        || async {
            let n: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            (n == 1).then_some(()).ok_or(format!("{n} streaming"))
        },
    )
    .await?;
    for o in &old {
        match connect(&env.pg_config("db-rw", o).await?).await {
            Ok(_) => bail!("{}'s old password works again", o.username),
            Err(e) => ensure!(refused(e), "{} refused for another reason", o.username),
        }
    }
    for name in ["su", "repl", "app"] {
        let r = rotations_api.get(name).await?;
        ensure!(rotations(&r) == 1, "{name} rotated again: {:?}", r.status);
    }
    Ok(())
}
