//! One look at a SecretRotation: observe (its Secret and the rotation record on it, the
//! consumers, and for a role the database's view of the logins) → [`plan`] (pure) → act (one
//! step) → status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::SecretRotation;
use pgpilot_api::labels;
use pgpilot_api::rotation::{
    ConsumerKind, ConsumerStatus, GeneratedKey, Generator, RolloutState, SecretRotationStatus,
    StrategyType,
};
use pgpilot_postgres::credentials::{
    self, Csprng, Endpoint, Login, PasswordSource, password_of, text_of, user_of,
};
use pgpilot_postgres::names::{self, Names, POSTGRES_PORT};
use pgpilot_postgres::patroni;
use pgpilot_postgres::sql::{self, SqlError};
use pgpilot_postgres::tls::CA_CERT;
use pgpilot_toolkit::conditions::{self, Status, Update};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::{Cache, Reconciler};
use pgpilot_toolkit::status::{StatusPart, apply_status};
use pgpilot_toolkit::{Error as ApiError, Sensitive};
use tracing::Instrument;

use crate::consumers::{self, Seen};
use crate::database;
use crate::error::Error;
use crate::generate::{self, Ca};
use crate::metrics::RotationMetrics;
use crate::plan::{self, Facts, Kind, LoginSeen, Record, Step, Why};
use crate::schedule::Timing;

/// The whole status of a SecretRotation is this controller's.
pub const PART: StatusPart<'static> = StatusPart {
    fields: &[
        "observedGeneration",
        "secretName",
        "lastRotationTime",
        "nextRotationTime",
        "rotations",
        "activeUser",
        "previousUser",
        "consumers",
    ],
    conditions: &[plan::READY, plan::PROGRESSING, conditions::STALLED],
};

pub struct Caches {
    pub secrets: Cache<Secret>,
    /// Instance pods: where the primary is.
    pub pods: Cache<Pod>,
    pub deployments: Cache<Deployment>,
    pub statefulsets: Cache<StatefulSet>,
    pub daemonsets: Cache<DaemonSet>,
}

pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub caches: Caches,
    /// Every SecretRotation of the namespace (the one-rotation-per-target rule).
    pub rotations: Cache<SecretRotation>,
    pub rotation_metrics: RotationMetrics,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = SecretRotation;
    type Error = Error;

    async fn reconcile(&self, rotation: Arc<SecretRotation>) -> Result<Action, Error> {
        let result = reconcile(&rotation, self).await;
        if let Err(e) = &result {
            self.rotation_metrics
                .failed(pgpilot_toolkit::ReconcileError::metric_label(e));
        }
        result
    }
}

/// What a SecretRotation rotates.
#[derive(Clone, Debug)]
enum Target {
    Secret {
        name: String,
        keys: Vec<GeneratedKey>,
    },
    Role {
        cluster: String,
        role: String,
        secret: String,
        alternating: bool,
    },
}

impl Target {
    fn of(rotation: &SecretRotation) -> Option<Target> {
        let t = &rotation.spec.target;
        match (&t.secret, &t.postgres_role) {
            (Some(s), None) => Some(Target::Secret {
                name: s.name.clone(),
                keys: s.keys.clone(),
            }),
            (None, Some(r)) => {
                let secret = Names::new(&r.cluster).credentials_secret(&r.role);
                Some(Target::Role {
                    cluster: r.cluster.clone(),
                    role: r.role.clone(),
                    secret,
                    alternating: rotation.spec.strategy.strategy_type
                        == StrategyType::AlternatingUsers,
                })
            }
            _ => None,
        }
    }

    fn secret(&self) -> &str {
        match self {
            Target::Secret { name, .. } | Target::Role { secret: name, .. } => name,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Target::Secret { .. } => Kind::Secret,
            Target::Role {
                alternating: true, ..
            } => Kind::Alternating,
            Target::Role { role, .. } if role == names::REPLICATION_USER => Kind::Replication,
            Target::Role { .. } => Kind::InPlace,
        }
    }
}

/// The rotation record a Secret carries.
pub fn record_of(secret: Option<&Secret>) -> Record {
    let Some(a) = secret.and_then(|s| s.metadata.annotations.as_ref()) else {
        return Record::default();
    };
    Record {
        count: a
            .get(labels::ROTATION_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        rotated_at: a
            .get(labels::ROTATED_AT)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second()),
        request: a.get(labels::ROTATION_REQUEST).cloned(),
        previous_user: a.get(labels::PREVIOUS_USER).cloned(),
    }
}

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

fn time(s: i64) -> Option<Time> {
    Timestamp::from_second(s).ok().map(Time)
}

/// The SecretRotation that rotates `secret` in `ns`: the oldest of those naming it (then by
/// name), so every manager picks the same one.
fn owner_of(ctx: &Context, ns: &str, secret: &str) -> Option<Arc<SecretRotation>> {
    ctx.rotations
        .list(ns, &[])
        .into_iter()
        .filter(|r| Target::of(r).is_some_and(|t| t.secret() == secret))
        .min_by_key(|r| (r.creation_timestamp().map(|t| t.0), r.name_any()))
}

/// Key a superuser rotation keeps the previous password under until it completes, so that a
/// flip whose `ALTER ROLE` did not run can still be repaired (the Secret is the only place
/// either password lives).
const PREVIOUS_PASSWORD: &str = "password.previous";

/// Where to run SQL for a role of a cluster: its primary, as its superuser.
pub struct Database {
    target: sql::Target,
    /// The superuser's previous password, while a rotation of it is in flight.
    previous: Option<Sensitive>,
}

impl Database {
    /// Connects with the superuser's password, or with the previous one when the new one is
    /// not set yet.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, SqlError> {
        match self.target.connect("postgres").await {
            Err(e) if self.previous.is_some() => {
                let mut with_previous = self.target.clone();
                with_previous.password = self.previous.clone().unwrap_or_default();
                with_previous.connect("postgres").await.map_err(|_| e)
            }
            result => result,
        }
    }
}

fn primary(ctx: &Context, ns: &str, cluster: &str) -> Option<Database> {
    let pod = ctx
        .caches
        .pods
        .list(
            ns,
            &[
                (labels::CLUSTER, cluster),
                (labels::ROLE, labels::ROLE_PRIMARY),
            ],
        )
        .into_iter()
        .next()?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let n = Names::new(cluster);
    let secret = ctx.caches.secrets.get(ns, &n.superuser_secret())?;
    Some(Database {
        target: sql::Target::superuser(&n, ns, &pod.name_any(), &ip, &secret)?,
        previous: text_of(&secret, PREVIOUS_PASSWORD).map(Sensitive::new),
    })
}

/// Instances of `cluster` whose Patroni reports other credentials than the superuser and
/// replication Secrets hold now (Patroni's member data on the pod carries its tags).
fn patroni_pending(ctx: &Context, ns: &str, cluster: &str) -> usize {
    let n = Names::new(cluster);
    let secrets = patroni::auth_secrets(&n).map(|name| ctx.caches.secrets.get(ns, &name));
    let token = patroni::auth_token([0, 1, 2, 3].map(|i| secrets[i].as_deref()));
    ctx.caches
        .pods
        .list(ns, &[(labels::CLUSTER, cluster)])
        .iter()
        .filter_map(|p| {
            let status: serde_json::Value =
                serde_json::from_str(p.annotations().get("status")?).ok()?;
            (status.get("state")?.as_str()? == "running").then_some(status)
        })
        .filter(|status| {
            status
                .pointer(&format!("/tags/{}", patroni::AUTH_TAG))
                .and_then(serde_json::Value::as_str)
                != Some(token.as_str())
        })
        .count()
}

/// Every consumer the spec names, as found.
fn consumers_of(ctx: &Context, rotation: &SecretRotation, ns: &str, hash: &str) -> Vec<Seen> {
    let name = rotation.name_any();
    let (d, s, ds) = (
        ctx.caches.deployments.list(ns, &[]),
        ctx.caches.statefulsets.list(ns, &[]),
        ctx.caches.daemonsets.list(ns, &[]),
    );
    let mut found: Vec<Seen> = Vec::new();
    for c in &rotation.spec.consumers {
        let seen = match c.kind {
            ConsumerKind::Deployment => consumers::find(c, &d, &name, hash),
            ConsumerKind::StatefulSet => consumers::find(c, &s, &name, hash),
            ConsumerKind::DaemonSet => consumers::find(c, &ds, &name, hash),
        };
        for one in seen {
            if !found
                .iter()
                .any(|f| f.kind == one.kind && f.name == one.name)
            {
                found.push(one);
            }
        }
    }
    found
}

fn duration(s: &str, field: &str) -> Result<i64, String> {
    humantime::parse_duration(s)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .map_err(|e| format!("{field} {s:?} is not a duration such as 10m: {e}"))
}

async fn reconcile(rotation: &SecretRotation, ctx: &Context) -> Result<Action, Error> {
    let ns = rotation.namespace().unwrap_or_default();
    let name = rotation.name_any();
    if rotation.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now().as_second();
    let spec = &rotation.spec;
    let Some(target) = Target::of(rotation) else {
        // The schema requires exactly one target; nothing else reaches here.
        return Ok(Action::await_change());
    };
    let secret = ctx.caches.secrets.get(&ns, target.secret());
    let record = record_of(secret.as_deref());
    let hash = consumers::content_hash(secret.as_deref());
    let seen = consumers_of(ctx, rotation, &ns, &hash);
    let timing = Timing::parse(&spec.rotate_every);
    let grace = duration(&spec.strategy.grace_period, "gracePeriod");
    let created = rotation.creation_timestamp().map_or(now, |t| seconds(&t));

    let blocked = blocked(
        ctx,
        rotation,
        &ns,
        &target,
        secret.as_deref(),
        &timing,
        &grace,
    );
    let mut facts = Facts {
        now,
        kind: target.kind(),
        suspend: spec.suspend,
        blocked,
        // A Secret made again (its record gone) starts the count again.
        completed: rotation
            .status
            .as_ref()
            .map_or(0, |s| s.rotations)
            .min(record.count),
        due: timing.as_ref().ok().and_then(|t| {
            t.next_due(
                record.rotated_at.unwrap_or(created),
                &rotation.uid().unwrap_or_default(),
            )
        }),
        request: rotation.annotations().get(labels::ROTATE_NOW).cloned(),
        incomplete: match &target {
            Target::Secret { keys, .. } => missing_keys(secret.as_deref(), keys),
            Target::Role { .. } => false,
        },
        consumers: seen.iter().map(|s| s.state).collect(),
        grace: grace.clone().unwrap_or(0),
        wait_for_rollout: spec.strategy.wait_for_rollout,
        active: None,
        previous: None,
        patroni_pending: match &target {
            Target::Role { cluster, role, .. }
                if role == names::SUPERUSER || role == names::REPLICATION_USER =>
            {
                patroni_pending(ctx, &ns, cluster)
            }
            _ => 0,
        },
        record,
    };

    // A role's rotation needs its primary: to flip, and to see the logins while in flight.
    let mut database = None;
    if let Target::Role { cluster, role, .. } = &target
        && facts.blocked.is_none()
        && (plan::in_flight(&facts.record, facts.completed)
            || matches!(plan::plan(&facts), Step::Rotate(_)))
    {
        match primary(ctx, &ns, cluster) {
            None => {
                facts.blocked = Some((
                    "WaitingForPrimary",
                    format!("PostgresCluster {cluster} has no primary to connect to"),
                ))
            }
            Some(t) => {
                if plan::in_flight(&facts.record, facts.completed)
                    && let Some(secret) = &secret
                {
                    let client = t.connect().await?;
                    let (active, previous) =
                        observe_logins(&client, secret, role, &facts.record).await?;
                    facts.active = Some(active);
                    facts.previous = previous;
                }
                database = Some(t);
            }
        }
    }

    let step = plan::plan(&facts);
    let look = Look {
        rotation,
        ns: &ns,
        target: &target,
        facts: &facts,
        secret: secret.as_deref(),
        database: database.as_ref(),
        seen: &seen,
        hash: &hash,
    };
    let span = tracing::info_span!(
        "rotation.step",
        rotation = %name,
        secret = %target.secret(),
        step = step_name(&step),
    );
    let (requeue, completed) = act(ctx, &look, &step).instrument(span).await?;

    let status = status_of(&look, &step, completed);
    let api: Api<SecretRotation> = Api::namespaced(ctx.client.clone(), &ns);
    if apply_status(&api, &ctx.field_manager, &PART, rotation, &status).await? {
        ctx.metrics.wrote("SecretRotation");
    }
    Ok(requeue)
}

/// One reconcile's observations, for the act and the status.
struct Look<'a> {
    rotation: &'a SecretRotation,
    ns: &'a str,
    target: &'a Target,
    facts: &'a Facts,
    secret: Option<&'a Secret>,
    database: Option<&'a Database>,
    seen: &'a [Seen],
    hash: &'a str,
}

/// Why nothing can be done, if so: an invalid spec, another SecretRotation of the same Secret,
/// a role whose Secret does not exist.
fn blocked(
    ctx: &Context,
    rotation: &SecretRotation,
    ns: &str,
    target: &Target,
    secret: Option<&Secret>,
    timing: &Result<Timing, String>,
    grace: &Result<i64, String>,
) -> Option<(&'static str, String)> {
    if let Err(e) = timing {
        return Some(("InvalidSpec", format!("spec.rotateEvery: {e}")));
    }
    if let Err(e) = grace {
        return Some(("InvalidSpec", format!("spec.strategy: {e}")));
    }
    let name = rotation.name_any();
    if !rotation.spec.consumers.is_empty() && name.len() > 63 {
        return Some((
            "InvalidSpec",
            format!(
                "a SecretRotation with consumers needs a name of at most 63 characters (it names their pod-template annotation {}<name>)",
                labels::CONSUMER_PREFIX
            ),
        ));
    }
    if let Some(owner) = owner_of(ctx, ns, target.secret())
        && owner.name_any() != name
    {
        return Some((
            "Conflict",
            format!(
                "Secret {} is rotated by SecretRotation {}: one SecretRotation per credential; delete one of them",
                target.secret(),
                owner.name_any()
            ),
        ));
    }
    if let Target::Role {
        cluster,
        role,
        secret: secret_name,
        ..
    } = target
    {
        if secret.is_none() {
            return Some((
                "TargetNotFound",
                format!(
                    "Secret {secret_name} does not exist: is {role} declared with login in PostgresCluster {cluster}?"
                ),
            ));
        }
        if rotation.spec.strategy.strategy_type == StrategyType::AlternatingUsers
            && let Some(s) = secret
        {
            let user = text_of(s, "username").unwrap_or_default();
            if user != *role && !credentials::alternates(role).contains(&user) {
                return Some((
                    "Conflict",
                    format!(
                        "Secret {secret_name} logs in as {user}, neither {role} nor its alternates"
                    ),
                ));
            }
        }
    }
    None
}

/// Whether a Secret target lacks the Secret or one of the keys its generators write.
fn missing_keys(secret: Option<&Secret>, keys: &[GeneratedKey]) -> bool {
    let Some(data) = secret.and_then(|s| s.data.as_ref()) else {
        return true;
    };
    keys.iter().any(|k| {
        let mut written = vec![k.key.clone()];
        match k.generator {
            Generator::KeyPair => written.push(
                k.key_pair
                    .as_ref()
                    .and_then(|o| o.public_key.clone())
                    .unwrap_or_else(|| format!("{}.pub", k.key)),
            ),
            Generator::Certificate => {
                if let Some(c) = &k.certificate {
                    written.push(c.private_key.clone());
                    written.extend(c.ca_key.clone());
                }
            }
            _ => {}
        }
        written.iter().any(|w| !data.contains_key(w))
    })
}

/// The login the Secret names and, after an AlternatingUsers flip, the one it left.
async fn observe_logins(
    client: &tokio_postgres::Client,
    secret: &Secret,
    role: &str,
    record: &Record,
) -> Result<(LoginSeen, Option<LoginSeen>), SqlError> {
    let user = user_of(secret, role);
    let password = password_of(secret);
    let active = database::observe(client, &user, role)
        .await?
        .seen(password.as_ref(), user != role);
    let previous = match &record.previous_user {
        Some(p) if p != &user => Some(
            database::observe(client, p, role)
                .await?
                .seen(None, p != role),
        ),
        _ => None,
    };
    Ok((active, previous))
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Blocked { .. } => "blocked",
        Step::Rotate(_) => "rotate",
        Step::SyncLogin => "sync-login",
        Step::RollConsumers => "roll-consumers",
        Step::Revoke => "revoke",
        Step::Wait { .. } => "wait",
        Step::Complete => "complete",
        Step::Idle { .. } => "idle",
    }
}

/// Carries out `step`. Returns when to look again and, for `Complete`, that the rotation is
/// now complete.
async fn act(ctx: &Context, look: &Look<'_>, step: &Step) -> Result<(Action, bool), Error> {
    let rotation = look.rotation;
    let soon = Action::requeue(Duration::from_secs(1));
    match step {
        Step::Blocked { reason, message } => {
            let was = rotation
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, plan::READY))
                .map(|c| c.reason.as_str());
            if was != Some(*reason) {
                ctx.events
                    .warning(rotation, reason, "Rotate", message.clone())
                    .await;
            }
            let wait = match *reason {
                "WaitingForPrimary" | "TargetNotFound" => Duration::from_secs(10),
                _ => Duration::from_secs(300),
            };
            Ok((Action::requeue(wait), false))
        }
        Step::Rotate(why) => match rotate(ctx, look, *why).await {
            // The cache is behind a flip (usually this controller's own, a moment ago): the
            // guard worked; look again once the watch caught up.
            Err(Error::Stale(secret)) => {
                tracing::debug!(%secret, "Secret changed since the cache saw it; looking again");
                Ok((soon, false))
            }
            result => result.map(|()| (soon, false)),
        },
        Step::SyncLogin => {
            sync_login(ctx, look).await?;
            Ok((soon, false))
        }
        Step::RollConsumers => {
            roll(ctx, look).await?;
            Ok((Action::requeue(Duration::from_secs(2)), false))
        }
        Step::Revoke => {
            revoke(ctx, look).await?;
            Ok((soon, false))
        }
        Step::Wait { until, .. } => {
            let wait = until.map_or(10, |u| (u - look.facts.now).clamp(1, 300));
            Ok((Action::requeue(Duration::from_secs(wait as u64)), false))
        }
        Step::Complete => {
            let f = look.facts;
            forget_previous_password(ctx, look).await?;
            ctx.events
                .normal(
                    rotation,
                    "RotationCompleted",
                    "Rotate",
                    format!(
                        "rotation {} of Secret {} complete: {} consumer(s) rolled{}",
                        f.record.count,
                        look.target.secret(),
                        look.seen
                            .iter()
                            .filter(|s| s.state == RolloutState::Rolled)
                            .count(),
                        match (&f.record.previous_user, f.kind) {
                            (Some(p), Kind::Alternating) => format!(", {p} invalidated"),
                            _ => String::new(),
                        }
                    ),
                )
                .await;
            Ok((soon, true))
        }
        Step::Idle { next_due } => {
            let wait = next_due.map_or(3600, |d| (d - look.facts.now).clamp(1, 3600));
            Ok((Action::requeue(Duration::from_secs(wait as u64)), false))
        }
    }
}

/// The Secret as the API server has it now: a flip starts from the latest, never from a
/// cache that may be behind a flip it made a moment ago.
async fn fresh_secret(ctx: &Context, look: &Look<'_>) -> Result<Option<Secret>, Error> {
    let name = look.target.secret();
    let fresh = ctx
        .caches
        .secrets
        .api(look.ns)
        .get_opt(name)
        .instrument(tracing::debug_span!("kube.get", kind = "Secret", name = %name))
        .await
        .map_err(ApiError::api::<Error>("get", "Secret", name))?;
    if record_of(fresh.as_ref()) != look.facts.record {
        return Err(Error::Stale(name.to_owned()));
    }
    Ok(fresh)
}

/// The rotation record of the flip that `fresh` is about to get.
fn next_record(look: &Look<'_>, previous_user: Option<String>) -> BTreeMap<String, Option<String>> {
    let f = look.facts;
    let at = Timestamp::from_second(f.now)
        .map(|t| t.to_string())
        .unwrap_or_default();
    BTreeMap::from([
        (
            labels::ROTATED_BY.to_owned(),
            Some(look.rotation.name_any()),
        ),
        (
            labels::ROTATION_COUNT.to_owned(),
            Some((f.record.count + 1).to_string()),
        ),
        (labels::ROTATED_AT.to_owned(), Some(at)),
        (labels::ROTATION_REQUEST.to_owned(), f.request.clone()),
        (labels::PREVIOUS_USER.to_owned(), previous_user),
    ])
}

/// Writes `data` and the rotation record in one write: a merge patch conditional on the
/// version read (keys not named stay as they are), or a create.
async fn write_secret(
    ctx: &Context,
    look: &Look<'_>,
    fresh: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
    record: BTreeMap<String, Option<String>>,
) -> Result<(), Error> {
    let name = look.target.secret();
    let api: Api<Secret> = ctx.caches.secrets.api(look.ns);
    let params = PatchParams {
        field_manager: Some(ctx.field_manager.clone()),
        ..Default::default()
    };
    ctx.metrics.wrote("Secret");
    let result = match fresh {
        Some(s) => {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": s.resource_version(), "annotations": record},
                "data": data,
            });
            api.patch(name, &params, &Patch::Merge(&patch))
                .instrument(tracing::info_span!("kube.patch", kind = "Secret", name = %name))
                .await
                .map(|_| ())
        }
        None => {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    annotations: Some(
                        record
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, v?)))
                            .collect(),
                    ),
                    labels: Some(BTreeMap::from([(
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    )])),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(data),
                ..Default::default()
            };
            let params = PostParams {
                field_manager: Some(ctx.field_manager.clone()),
                ..Default::default()
            };
            api.create(&params, &secret)
                .instrument(tracing::info_span!("kube.create", kind = "Secret", name = %name))
                .await
                .map(|_| ())
        }
    };
    match result {
        // Someone wrote it since it was read: look again rather than overwrite.
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale(name.to_owned())),
        r => r.map_err(ApiError::api::<Error>("write", "Secret", name)),
    }
}

/// Removes the previous superuser password a rotation kept while in flight.
async fn forget_previous_password(ctx: &Context, look: &Look<'_>) -> Result<(), Error> {
    let Some(secret) = look.secret else {
        return Ok(());
    };
    if !secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(PREVIOUS_PASSWORD))
    {
        return Ok(());
    }
    let name = look.target.secret();
    let params = PatchParams {
        field_manager: Some(ctx.field_manager.clone()),
        ..Default::default()
    };
    let patch = serde_json::json!({"data": {PREVIOUS_PASSWORD: null}});
    ctx.metrics.wrote("Secret");
    ctx.caches
        .secrets
        .api(look.ns)
        .patch(name, &params, &Patch::Merge(&patch))
        .instrument(tracing::info_span!("kube.patch", kind = "Secret", name = %name))
        .await
        .map_err(ApiError::api::<Error>("patch", "Secret", name))?;
    Ok(())
}

/// The flip: new values (for a role, its login ready first) and the record, in one write.
async fn rotate(ctx: &Context, look: &Look<'_>, why: Why) -> Result<(), Error> {
    let fresh = fresh_secret(ctx, look).await?;
    let rotation = look.rotation;
    let count = look.facts.record.count + 1;
    let note = match look.target {
        Target::Secret { keys, .. } => {
            let mut data = BTreeMap::new();
            for key in keys {
                let issuer = issuer(ctx, look.ns, key).await?;
                for (k, v) in generate::generate(key, issuer.as_ref(), SystemTime::now())? {
                    data.insert(k, ByteString(v.expose().as_bytes().to_vec()));
                }
            }
            let n = data.len();
            write_secret(ctx, look, fresh.as_ref(), data, next_record(look, None)).await?;
            ctx.rotation_metrics.rotated("Secret");
            format!(
                "rotation {count} ({}): {n} key(s) of Secret {} regenerated",
                why.as_str(),
                look.target.secret()
            )
        }
        Target::Role {
            cluster,
            role,
            alternating,
            ..
        } => {
            let fresh = fresh
                .as_ref()
                .ok_or_else(|| Error::Stale(look.target.secret().to_owned()))?;
            let database = look
                .database
                .ok_or_else(|| Error::Stale(look.target.secret().to_owned()))?;
            let password = Csprng.new_password();
            let current = user_of(fresh, role);
            let (user, previous) = if *alternating {
                let [a, b] = credentials::alternates(role);
                let next = if current == a { b } else { a };
                // The idle alternate gets the new password before the Secret names it; a crash
                // in between leaves it idle, and the next flip sets it again.
                let client = database.connect().await?;
                let observed = database::observe(&client, &next, role).await?;
                database::execute(
                    &client,
                    &database::sync_login(&next, role, &password, &observed),
                )
                .await?;
                (next, Some(current.clone()))
            } else {
                (role.clone(), None)
            };
            let mut data = role_data(fresh, look.ns, cluster, &user, &password);
            if role == names::SUPERUSER
                && let Some(old) = fresh.data.as_ref().and_then(|d| d.get("password"))
            {
                // pgpilot itself logs in as the superuser: until the new password is set,
                // only the old one does.
                data.insert(PREVIOUS_PASSWORD.to_owned(), old.clone());
            }
            write_secret(
                ctx,
                look,
                Some(fresh),
                data,
                next_record(look, previous.clone()),
            )
            .await?;
            if !alternating && role != names::REPLICATION_USER {
                // The Secret is the truth from here: a crash before this statement is
                // repaired by SyncLogin (which sets the replication user's password too, once
                // every Patroni loaded it).
                let client = database.connect().await?;
                let observed = database::observe(&client, role, role).await?;
                database::execute(
                    &client,
                    &database::sync_login(role, role, &password, &observed),
                )
                .await?;
            }
            ctx.rotation_metrics.rotated(if *alternating {
                "AlternatingUsers"
            } else {
                "InPlace"
            });
            match previous {
                Some(p) => format!(
                    "rotation {count} ({}): Secret {} now logs in as {user}; {p} keeps working for the grace period",
                    why.as_str(),
                    look.target.secret()
                ),
                None => format!(
                    "rotation {count} ({}): role {role} has a new password in Secret {}",
                    why.as_str(),
                    look.target.secret()
                ),
            }
        }
    };
    ctx.events.normal(rotation, "Rotated", "Rotate", note).await;
    Ok(())
}

/// A credential Secret's data for `user`, rendered as the cluster controller renders it,
/// where the Secret already says clients connect.
fn role_data(
    secret: &Secret,
    ns: &str,
    cluster: &str,
    user: &str,
    password: &Sensitive,
) -> BTreeMap<String, ByteString> {
    let endpoint = Endpoint {
        host: text_of(secret, "host").unwrap_or_else(|| Names::new(cluster).rw_host(ns)),
        port: text_of(secret, "port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(POSTGRES_PORT),
        ca: text_of(secret, CA_CERT),
    };
    let dbname = text_of(secret, "dbname").unwrap_or_else(|| "postgres".to_owned());
    credentials::render(
        &Login {
            user,
            password,
            dbname: &dbname,
        },
        &endpoint,
    )
}

/// The CA a certificate key is signed by, from its issuer Secret.
async fn issuer(ctx: &Context, ns: &str, key: &GeneratedKey) -> Result<Option<Ca>, Error> {
    let Some(issuer) = key.certificate.as_ref().and_then(|c| c.issuer.as_ref()) else {
        return Ok(None);
    };
    let name = &issuer.secret_name;
    let unusable = |reason: &str| generate::Error::Issuer {
        key: key.key.clone(),
        secret: name.clone(),
        reason: reason.to_owned(),
    };
    let secret = ctx
        .caches
        .secrets
        .get(ns, name)
        .ok_or_else(|| unusable("the Secret does not exist"))?;
    let (Some(cert), Some(private)) = (text_of(&secret, "tls.crt"), text_of(&secret, "tls.key"))
    else {
        return Err(unusable("it lacks tls.crt or tls.key").into());
    };
    Ok(Some(Ca {
        secret: name.clone(),
        certificate_pem: Sensitive::new(cert),
        key_pem: Sensitive::new(private),
    }))
}

/// Makes the login the Secret names work with the Secret's password.
async fn sync_login(ctx: &Context, look: &Look<'_>) -> Result<(), Error> {
    let (Target::Role { role, .. }, Some(secret), Some(database)) =
        (look.target, look.secret, look.database)
    else {
        return Ok(());
    };
    let Some(password) = password_of(secret) else {
        return Ok(());
    };
    let user = user_of(secret, role);
    let client = database.connect().await?;
    let observed = database::observe(&client, &user, role).await?;
    database::execute(
        &client,
        &database::sync_login(&user, role, &password, &observed),
    )
    .await?;
    ctx.events
        .normal(
            look.rotation,
            "LoginSynced",
            "Rotate",
            format!(
                "{user} set to log in with the password in Secret {}",
                look.target.secret()
            ),
        )
        .await;
    Ok(())
}

/// Asks every consumer that has not rolled for the Secret as it is to roll.
async fn roll(ctx: &Context, look: &Look<'_>) -> Result<(), Error> {
    let name = look.rotation.name_any();
    let params = PatchParams::apply(&ctx.field_manager).force();
    let mut rolled = Vec::new();
    for c in look
        .seen
        .iter()
        .filter(|c| c.state == RolloutState::Pending)
    {
        let body = consumers::roll_patch(c.kind, &c.name, &name, look.hash);
        let kind = format!("{:?}", c.kind);
        let span = tracing::info_span!("kube.apply", kind = %kind, name = %c.name);
        let result = match c.kind {
            ConsumerKind::Deployment => ctx
                .caches
                .deployments
                .api(look.ns)
                .patch(&c.name, &params, &Patch::Apply(&body))
                .instrument(span)
                .await
                .map(|_| ()),
            ConsumerKind::StatefulSet => ctx
                .caches
                .statefulsets
                .api(look.ns)
                .patch(&c.name, &params, &Patch::Apply(&body))
                .instrument(span)
                .await
                .map(|_| ()),
            ConsumerKind::DaemonSet => ctx
                .caches
                .daemonsets
                .api(look.ns)
                .patch(&c.name, &params, &Patch::Apply(&body))
                .instrument(span)
                .await
                .map(|_| ()),
        };
        result.map_err(ApiError::api::<Error>("apply", &kind, &c.name))?;
        ctx.metrics.wrote(&kind);
        ctx.rotation_metrics.rolled(&kind);
        rolled.push(format!("{kind}/{}", c.name));
    }
    if !rolled.is_empty() {
        ctx.events
            .normal(
                look.rotation,
                "ConsumersRolling",
                "Roll",
                format!("asked to roll for the new Secret: {}", rolled.join(", ")),
            )
            .await;
    }
    Ok(())
}

/// Invalidates the login the last flip left.
async fn revoke(ctx: &Context, look: &Look<'_>) -> Result<(), Error> {
    let (Target::Role { role, .. }, Some(previous), Some(database)) = (
        look.target,
        look.facts.record.previous_user.as_deref(),
        look.database,
    ) else {
        return Ok(());
    };
    let client = database.connect().await?;
    database::execute(&client, &database::revoke(previous, role)).await?;
    ctx.rotation_metrics.revoked();
    ctx.events
        .normal(
            look.rotation,
            "LoginRevoked",
            "Revoke",
            format!(
                "{previous} can no longer log in{}; its sessions were ended",
                if previous == role {
                    " with a password"
                } else {
                    ""
                }
            ),
        )
        .await;
    Ok(())
}

/// The status after this reconcile.
fn status_of(look: &Look<'_>, step: &Step, completed: bool) -> SecretRotationStatus {
    let f = look.facts;
    let rotation = look.rotation;
    let generation = rotation.metadata.generation;
    let mut status = rotation.status.clone().unwrap_or_default();
    if completed {
        status.last_rotation_time = f.record.rotated_at.and_then(time);
        status.rotations = f.record.count;
    } else {
        status.rotations = f.completed;
    }
    let in_flight = plan::in_flight(&f.record, status.rotations);
    status.observed_generation = generation;
    status.secret_name = Some(look.target.secret().to_owned());
    status.next_rotation_time = match step {
        _ if f.suspend || in_flight => None,
        Step::Rotate(_) => None,
        _ => f.due.and_then(time),
    };
    status.active_user = match (look.target, look.secret) {
        (Target::Role { role, .. }, Some(s)) => Some(user_of(s, role)),
        _ => None,
    };
    status.previous_user = match (f.kind, in_flight) {
        (Kind::Alternating, true) => f.record.previous_user.clone(),
        _ => None,
    };
    status.consumers = look
        .seen
        .iter()
        .map(|c| ConsumerStatus {
            kind: c.kind,
            name: c.name.clone(),
            rollout: plan::shown(c.state, f),
            message: c.message.clone(),
        })
        .collect();

    let now = Time(Timestamp::now());
    let (ready, ready_reason, ready_message) = match step {
        Step::Blocked { reason, message } => (Status::False, *reason, message.clone()),
        _ if f.suspend => (
            Status::True,
            "Suspended",
            "suspended: no rotation starts".to_owned(),
        ),
        _ => (
            Status::True,
            "Ready",
            format!(
                "Secret {} rotated {} time(s)",
                look.target.secret(),
                status.rotations
            ),
        ),
    };
    let (progressing, reason, message) = match step {
        Step::Wait {
            reason, message, ..
        } => (
            if *reason == "Stalled" {
                Status::False
            } else {
                Status::True
            },
            *reason,
            message.clone(),
        ),
        Step::Rotate(_) | Step::SyncLogin | Step::RollConsumers | Step::Revoke => (
            Status::True,
            "Rotating",
            format!("step {}", step_name(step)),
        ),
        _ if in_flight => (
            Status::True,
            "Rotating",
            "finishing the rotation".to_owned(),
        ),
        _ => (Status::False, "Idle", "no rotation in flight".to_owned()),
    };
    for (type_, status_, reason, message) in [
        (plan::READY, ready, ready_reason, ready_message),
        (plan::PROGRESSING, progressing, reason, message),
    ] {
        conditions::set(
            &mut status.conditions,
            Update {
                type_,
                status: status_,
                reason,
                message,
                observed_generation: generation,
            },
            now.clone(),
        );
    }
    // What needs someone to look: consumers still on the old credentials after the grace
    // period, a spec that cannot be acted on, a Secret another rotation owns.
    let stalled = match step {
        Step::Wait {
            reason: "Stalled",
            message,
            ..
        } => Some(("ConsumersStalled", message.clone())),
        Step::Blocked { reason, message } if matches!(*reason, "Conflict" | "InvalidSpec") => {
            Some((*reason, message.clone()))
        }
        _ => None,
    };
    conditions::set_stalled(&mut status.conditions, stalled, generation, now);
    status
}
