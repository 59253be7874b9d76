//! The loop every controller runs, so a controller crate writes only its watches and its
//! reconcile: one kube-runtime controller per watched namespace, caches stripped of
//! managedFields, a span and metrics around each reconcile, per-object backoff, and a
//! condition on the object when reconciles keep failing or are forbidden.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller as KubeController};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::backoff::{Backoff, Policy};
use crate::conditions::{self, Status, Update};
use crate::error::ReconcileError;
use crate::queue::{QueueDepth, Waiting};
use crate::relist::settled_objects;
use crate::runtime::{Namespaces, RunContext, RunError};
use crate::status::{StatusPart, apply_status};
use crate::telemetry::reconcile_span;

/// What every watched kind must be.
pub trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}
impl<K> Watched for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// One controller's reconcile of one kind.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    type Object: Watched;
    type Error: ReconcileError;
    async fn reconcile(&self, object: Arc<Self::Object>) -> Result<Action, Self::Error>;
}

/// A watched namespace (or all of them) while a controller is set up: each watch it adds
/// fills a cache the reconciles read from and wakes the reconcile of the object it belongs to.
pub struct Scope<K: Watched> {
    pub ctx: RunContext,
    pub namespace: Option<String>,
    /// The reconciled objects themselves, as the controller's own watch sees them.
    pub objects: Cache<K>,
    controller: Option<KubeController<K>>,
    caches: Vec<CacheState>,
    waiting: Arc<Waiting<K>>,
}

impl<K: Watched> Scope<K> {
    /// The API of `C` in this scope.
    pub fn api<C: Watched>(&self) -> Api<C> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.ctx.client.clone(), ns),
            None => Api::all(self.ctx.client.clone()),
        }
    }

    /// Children pgpilot manages (`app.kubernetes.io/managed-by`), cached; a change wakes the
    /// owner's reconcile (by owner reference).
    pub fn owns<C: Watched>(&mut self) -> Cache<C> {
        let selector = format!(
            "{}={}",
            pgpilot_api::labels::MANAGED_BY,
            pgpilot_api::labels::MANAGED_BY_VALUE
        );
        let (cache, stream) = self.cache(watcher::Config::default().labels(&selector));
        let waiting = self.waiting.clone();
        let stream = stream.inspect_ok(move |child| waiting.child_changed(child));
        self.controller = self.controller.take().map(|c| c.owns_stream(stream));
        cache
    }

    /// The objects `config` selects, cached; a change `predicate` lets through (a hash of
    /// what matters, `None` for "always") wakes the reconcile of each object `owner` names
    /// (an `Option` or a `Vec` of them).
    pub fn watches<C: Watched, I>(
        &mut self,
        config: watcher::Config,
        predicate: fn(&C) -> Option<u64>,
        owner: fn(C) -> I,
    ) -> Cache<C>
    where
        I: IntoIterator<Item = ObjectRef<K>> + Send + 'static,
        I::IntoIter: Send,
    {
        let (cache, stream) = self.cache(config);
        let stream = stream.predicate_filter(predicate, PredicateConfig::default());
        let waiting = self.waiting.clone();
        let owners = move |child: C| {
            let owners: Vec<ObjectRef<K>> = owner(child).into_iter().collect();
            for key in &owners {
                waiting.woken(key.clone());
            }
            owners
        };
        self.controller = self
            .controller
            .take()
            .map(|c| c.watches_stream(stream, owners));
        cache
    }

    fn cache<C: Watched>(
        &mut self,
        config: watcher::Config,
    ) -> (
        Cache<C>,
        impl Stream<Item = Result<C, watcher::Error>> + Send + 'static,
    ) {
        let (store, writer) = reflector::store();
        let state = CacheState::new(&store);
        let errors = state.clone();
        let stream = settled_objects(
            watcher(self.api::<C>(), config)
                .default_backoff()
                .inspect_err(move |e| errors.record(e))
                .modify(|o| o.managed_fields_mut().clear())
                .reflect(writer),
        );
        self.caches.push(state);
        (
            Cache {
                store,
                client: self.ctx.client.clone(),
            },
            stream,
        )
    }
}

/// A hash of what a user or another controller asks of an object, its status aside.
fn asked_for<K: Resource>(object: &K) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let meta = object.meta();
    let mut h = DefaultHasher::new();
    (
        meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
        &meta.finalizers,
    )
        .hash(&mut h);
    Some(h.finish())
}

/// A predicate for [`Scope::watches`] that lets every change through.
pub fn every_change<C: Resource>(object: &C) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    object.meta().resource_version.hash(&mut h);
    Some(h.finish())
}

/// Whether a cache has listed once, and the last error of its watch.
#[derive(Clone)]
struct CacheState {
    kind: String,
    ready: Shared<BoxFuture<'static, ()>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl CacheState {
    fn new<K: Watched>(store: &Store<K>) -> Self {
        let store = store.clone();
        Self {
            kind: K::kind(&()).into_owned(),
            ready: async move {
                let _ = store.wait_until_ready().await;
            }
            .boxed()
            .shared(),
            last_error: Arc::default(),
        }
    }

    fn record(&self, error: &watcher::Error) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }

    /// What to tell about a cache that has not listed yet.
    fn not_ready(&self) -> Option<(String, bool)> {
        if self.ready.peek().is_some() {
            return None;
        }
        let error = self.last_error.lock().ok().and_then(|e| e.clone());
        let forbidden = error.as_deref().is_some_and(|e| e.contains("forbidden"));
        Some((
            format!(
                "the watch of {} has not listed yet: {}",
                self.kind,
                error.as_deref().unwrap_or("no answer so far")
            ),
            forbidden,
        ))
    }
}

/// Objects of one kind as the watch last saw them.
#[derive(Clone)]
pub struct Cache<K: Watched> {
    store: Store<K>,
    client: kube::Client,
}

impl<K: Watched> Cache<K> {
    /// `namespace/name`, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every object in the cache, in no particular order.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The objects in `namespace` carrying every label of `selector`, by name.
    pub fn list(&self, namespace: &str, selector: &[(&str, &str)]) -> Vec<Arc<K>> {
        let mut found: Vec<Arc<K>> = self
            .store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(namespace))
            .filter(|o| {
                let labels = o.labels();
                selector
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        found.sort_by_key(|o| o.name_any());
        found
    }

    /// The API of `K` in `namespace`, for writes.
    pub fn api(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// Runs a controller of `R::Object` in every namespace of `ctx` until shutdown. `setup` adds
/// the watches of the children (each gives a cache) and returns the reconciler of that
/// namespace.
pub async fn run<R, S>(ctx: RunContext, name: &'static str, setup: S) -> Result<(), RunError>
where
    R: Reconciler,
    S: Fn(&mut Scope<R::Object>) -> Result<R, RunError>,
{
    let namespaces: Vec<Option<String>> = match &ctx.namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
    };
    let mut runs: Vec<BoxFuture<'static, ()>> = Vec::new();
    for namespace in namespaces {
        let (store, writer) = reflector::store();
        let waiting = Arc::new(Waiting::new(store.clone()));
        let mut scope = Scope {
            ctx: ctx.clone(),
            namespace,
            objects: Cache {
                store: store.clone(),
                client: ctx.client.clone(),
            },
            controller: None,
            caches: Vec::new(),
            waiting: waiting.clone(),
        };
        // Status writes (this controller's, or another's) wake nothing: only what someone
        // asked for does (spec, labels, annotations, deletion).
        let objects = settled_objects(
            watcher(scope.api::<R::Object>(), watcher::Config::default())
                .default_backoff()
                .modify(|o| o.managed_fields_mut().clear())
                .reflect(writer),
        )
        .predicate_filter(asked_for::<R::Object>, PredicateConfig::default())
        .inspect_ok({
            let waiting = waiting.clone();
            move |o| waiting.woken(ObjectRef::from_obj(o))
        });
        let listed = store.clone();
        scope.controller = Some(KubeController::for_stream(objects, store));
        let reconciler = setup(&mut scope)?;
        let controller = scope
            .controller
            .take()
            .ok_or("the controller was lost during setup")?;
        let shared = Arc::new(Loop {
            name,
            reconciler,
            ctx: ctx.clone(),
            backoff: Backoff::new(Policy::default()),
            caches: std::mem::take(&mut scope.caches),
            waiting: waiting.clone(),
        });
        let queue: Arc<dyn QueueDepth> = waiting;
        ctx.metrics.watch_queue(&queue);
        let shutdown = ctx.shutdown.clone();
        let run = controller
            .with_config(Config::default().concurrency(ctx.concurrency))
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, shared)
            .for_each(move |result| {
                if let Err(e) = result {
                    tracing::debug!(controller = name, error = %e, "controller event");
                }
                futures::future::ready(())
            });
        // kube-runtime holds its runner until the cache has listed once. A shutdown before
        // that stops the watch, so the cache never lists and the run would wait for it
        // forever (and the manager would never give its Lease back): with nothing reconciled
        // yet, there is nothing to finish, so it is dropped.
        let shutdown = ctx.shutdown.clone();
        let unlisted_at_shutdown = async move {
            shutdown.cancelled().await;
            if listed.wait_until_ready().now_or_never().is_some() {
                std::future::pending::<()>().await;
            }
        };
        runs.push(
            async move {
                tokio::select! {
                    () = run => {}
                    () = unlisted_at_shutdown => {
                        tracing::debug!(controller = name, "stopped before its cache listed");
                    }
                }
            }
            .boxed(),
        );
    }
    futures::future::join_all(runs).await;
    Ok(())
}

/// What the reconciles of one namespace share.
struct Loop<R: Reconciler> {
    name: &'static str,
    reconciler: R,
    ctx: RunContext,
    backoff: Backoff<ObjectRef<R::Object>>,
    caches: Vec<CacheState>,
    waiting: Arc<Waiting<R::Object>>,
}

/// How long a reconcile waits for the caches to list once before it reports them.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// Retryable errors show in the object's status after this many failures in a row (a
/// missing permission or an error retrying cannot fix shows at once).
const SHOW_AFTER_FAILURES: u32 = 3;
/// A reconcile still running after this long is abandoned (a hung call must not stall the
/// object) and runs again after a backoff.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

async fn reconcile<R: Reconciler>(
    object: Arc<R::Object>,
    shared: Arc<Loop<R>>,
) -> Result<Action, R::Error> {
    let span = reconcile_span(
        shared.name,
        object.namespace().as_deref(),
        &object.name_any(),
        object.meta().generation,
    );
    async {
        let key = ObjectRef::from_obj(object.as_ref());
        if let Some(wait) = shared.waiting.started(&key) {
            shared.ctx.metrics.waited(wait);
        }
        // A reconcile reads only from the caches: none runs before they have listed once. A
        // watch that cannot list (a missing permission) is shown on the object instead.
        let all = futures::future::join_all(shared.caches.iter().map(|c| c.ready.clone()));
        if tokio::time::timeout(CACHE_WAIT, all).await.is_err() {
            let (messages, forbidden): (Vec<String>, Vec<bool>) = shared
                .caches
                .iter()
                .filter_map(CacheState::not_ready)
                .unzip();
            let reason = if forbidden.contains(&true) {
                "WatchForbidden"
            } else {
                "WatchNotReady"
            };
            tracing::warn!(reason, caches = %messages.join("; "), "caches not ready");
            show_outcome(
                &shared,
                object.as_ref(),
                Status::False,
                reason,
                messages.join("; "),
            )
            .await;
            return Ok(Action::requeue(shared.backoff.failed(&key)));
        }
        let timer = shared.ctx.metrics.start();
        let Ok(result) = tokio::time::timeout(
            RECONCILE_TIMEOUT,
            shared.reconciler.reconcile(object.clone()),
        )
        .await
        else {
            tracing::warn!(timeout = ?RECONCILE_TIMEOUT, "reconcile abandoned");
            timer.error("timeout");
            let message = format!(
                "a reconcile ran longer than {} s and was abandoned; it runs again",
                RECONCILE_TIMEOUT.as_secs()
            );
            show_outcome(&shared, object.as_ref(), Status::False, "Timeout", message).await;
            return Ok(Action::requeue(shared.backoff.failed(&key)));
        };
        let span = tracing::Span::current();
        match &result {
            Ok(_) => span.record("result", "success"),
            Err(e) => span
                .record("result", e.metric_label())
                .record("otel.status_code", "ERROR"),
        };
        let condition = match &result {
            Ok(_) => {
                // A permanent error is not counted by the backoff (it waits for a change), so
                // the condition it left says so too.
                let failed_before = shared.backoff.failures(&key) > 0
                    || shows_failure(object.as_ref(), &outcome_condition(shared.name));
                shared.backoff.succeeded(&key);
                timer.success();
                failed_before.then(|| (Status::True, "Succeeded".to_owned(), String::new()))
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = e.metric_label(), "reconcile failed");
                timer.error(e.metric_label());
                let failures = shared.backoff.failures(&key) + 1;
                (e.is_forbidden() || !e.is_retryable() || failures >= SHOW_AFTER_FAILURES)
                    .then(|| (Status::False, pascal_case(e.metric_label()), e.to_string()))
            }
        };
        if let Some((status, reason, message)) = condition {
            show_outcome(&shared, object.as_ref(), status, &reason, message).await;
        }
        result
    }
    .instrument(span)
    .await
}

fn error_policy<R: Reconciler>(
    object: Arc<R::Object>,
    error: &R::Error,
    shared: Arc<Loop<R>>,
) -> Action {
    if error.is_retryable() {
        Action::requeue(shared.backoff.failed(&ObjectRef::from_obj(object.as_ref())))
    } else {
        // A bad spec waits for the spec to change (the watch brings it back).
        Action::await_change()
    }
}

/// The condition type a controller reports its reconciles under: `cluster` →
/// `ClusterReconciled`, `secret-rotation` → `SecretRotationReconciled`.
pub fn outcome_condition(controller: &str) -> String {
    format!("{}Reconciled", pascal_case(controller))
}

/// The field manager of that condition: apart from the controller's own status manager, so
/// neither removes what the other wrote.
pub fn outcome_field_manager(controller: &str) -> String {
    format!("{}-outcome", pgpilot_api::labels::field_manager(controller))
}

fn pascal_case(s: &str) -> String {
    s.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Whether `object`'s status carries condition `type_` as `False`.
fn shows_failure<K: Serialize>(object: &K, type_: &str) -> bool {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| {
            let conditions = v.pointer("/status/conditions")?.as_array()?.clone();
            conditions
                .into_iter()
                .find(|c| c.get("type").and_then(serde_json::Value::as_str) == Some(type_))
        })
        .is_some_and(|c| c.get("status").and_then(serde_json::Value::as_str) == Some("False"))
}

/// Writes the outcome condition when it changes (one condition, its own field manager).
async fn show_outcome<R: Reconciler>(
    shared: &Loop<R>,
    object: &R::Object,
    status: Status,
    reason: &str,
    message: String,
) {
    let type_ = outcome_condition(shared.name);
    let mut current: Vec<Condition> = serde_json::to_value(object)
        .ok()
        .and_then(|v| serde_json::from_value(v.pointer("/status/conditions")?.clone()).ok())
        .unwrap_or_default();
    let had = conditions::find(&current, &type_).is_some();
    if status == Status::True && !had {
        return;
    }
    conditions::set(
        &mut current,
        Update {
            type_: &type_,
            status,
            reason,
            message,
            observed_generation: object.meta().generation,
        },
        Time(Timestamp::now()),
    );
    let (Some(ns), Some(condition)) = (object.namespace(), conditions::find(&current, &type_))
    else {
        return;
    };
    let api: Api<R::Object> = Api::namespaced(shared.ctx.client.clone(), &ns);
    let part = StatusPart {
        fields: &[],
        conditions: &[type_.as_str()],
    };
    let desired = serde_json::json!({"conditions": [condition]});
    let fm = outcome_field_manager(shared.name);
    match apply_status(&api, &fm, &part, object, &desired).await {
        Ok(true) => {
            shared
                .ctx
                .metrics
                .wrote(&format!("{}/status", R::Object::kind(&())));
            // A failure is also an Event, once per new reason or message (the condition
            // changed), so `kubectl describe` shows it where users look first.
            if status == Status::False {
                shared
                    .ctx
                    .events
                    .warning(object, reason, "Reconcile", condition.message.clone())
                    .await;
            }
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "could not show the reconcile outcome in status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shown_is_found_in_the_status() {
        let with = |status: &str| {
            serde_json::json!({"status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "ClusterReconciled", "status": status}]}})
        };
        assert!(shows_failure(&with("False"), "ClusterReconciled"));
        assert!(!shows_failure(&with("True"), "ClusterReconciled"));
        assert!(!shows_failure(&with("False"), "BackupReconciled"));
        assert!(!shows_failure(&serde_json::json!({}), "ClusterReconciled"));
    }

    #[test]
    fn condition_names_follow_the_controller() {
        assert_eq!(outcome_condition("cluster"), "ClusterReconciled");
        assert_eq!(
            outcome_condition("secret-rotation"),
            "SecretRotationReconciled"
        );
        assert_eq!(pascal_case("api_forbidden"), "ApiForbidden");
        assert_eq!(outcome_field_manager("cluster"), "pgpilot-cluster-outcome");
    }
}
