//! Answering an AdmissionReview: read the object, look up what it refers to (a GET or a LIST
//! of one namespace, fresh from the API server: a cache could miss an object applied a moment
//! before), apply the rule.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use pgpilot_api::backup::PostgresBackup;
use pgpilot_api::cluster::PostgresCluster;
use pgpilot_api::rotation::SecretRotation;
use pgpilot_api::upgrade::PostgresUpgrade;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::Error;
use crate::rules::{self, Verdict};
use crate::webhooks::{self, Check, FailurePolicy, Webhook};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    /// [`Webhook::id`].
    webhook: String,
    /// `allowed`, `warned`, `denied` or `error`.
    result: String,
}

/// Reviews answered, and how long they took.
#[derive(Clone)]
pub struct ReviewMetrics {
    reviews: Family<ReviewLabels, Counter>,
    seconds: Histogram,
}

impl ReviewMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ReviewMetrics {
            reviews: Family::default(),
            seconds: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        };
        registry.register(
            "pgpilot_webhook_reviews",
            "Admission reviews answered, by webhook and result",
            m.reviews.clone(),
        );
        registry.register(
            "pgpilot_webhook_review_duration_seconds",
            "Time to answer an admission review, lookups included",
            m.seconds.clone(),
        );
        m
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Reviewer {
    pub client: kube::Client,
    pub metrics: ReviewMetrics,
}

/// `POST /validate/...`.
pub async fn handle(
    State(reviewer): State<Reviewer>,
    Path(path): Path<String>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Result<Json<AdmissionReview<DynamicObject>>, (StatusCode, String)> {
    let path = format!("/validate/{path}");
    let Some(webhook) = webhooks::by_path(&path) else {
        return Err((StatusCode::NOT_FOUND, format!("no webhook at {path}")));
    };
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("not an AdmissionReview request: {e}"),
        )
    })?;
    let started = Instant::now();
    let span = tracing::info_span!(
        "admission review",
        webhook = webhook.id,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        uid = %request.uid,
        result = tracing::field::Empty,
    );
    let verdict = review_one(&reviewer.client, webhook, &request)
        .instrument(span.clone())
        .await;
    let (response, result) = span.in_scope(|| respond(&request, webhook, verdict));
    span.record("result", result);
    reviewer
        .metrics
        .reviews
        .get_or_create(&ReviewLabels {
            webhook: webhook.id.into(),
            result: result.into(),
        })
        .inc();
    reviewer
        .metrics
        .seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(response.into_review()))
}

/// The response for `verdict`, and its result label. An error (a lookup that failed)
/// is answered as the API server would answer the webhook being unreachable.
fn respond(
    request: &AdmissionRequest<DynamicObject>,
    webhook: &Webhook,
    verdict: Result<Verdict, Error>,
) -> (AdmissionResponse, &'static str) {
    let response = AdmissionResponse::from(request);
    match verdict {
        Ok(Verdict {
            denied: Some(reason),
            warnings,
        }) => {
            tracing::info!(reason = %reason, "denied");
            (with_warnings(response.deny(reason), warnings), "denied")
        }
        Ok(Verdict {
            denied: None,
            warnings,
        }) => {
            let result = if warnings.is_empty() {
                "allowed"
            } else {
                "warned"
            };
            (with_warnings(response, warnings), result)
        }
        Err(e) => {
            tracing::warn!(error = %e, reason = e.metric_label(), "cannot review");
            let message = format!(
                "pgpilot webhook {} cannot check this object: {e}",
                webhook.name
            );
            let response = match webhook.failure_policy {
                FailurePolicy::Fail => response.deny(format!("{message}; retry")),
                FailurePolicy::Ignore => with_warnings(response, vec![message]),
            };
            (response, "error")
        }
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn typed<T: DeserializeOwned>(request: &AdmissionRequest<DynamicObject>) -> Result<T, Error> {
    let object = request.object.as_ref().ok_or(Error::NoObject)?;
    let value = serde_json::to_value(object).map_err(Error::Decode)?;
    serde_json::from_value(value).map_err(Error::Decode)
}

async fn list<T>(client: &kube::Client, namespace: &str) -> Result<Vec<T>, Error>
where
    T: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    T::DynamicType: Default,
{
    let api: Api<T> = Api::namespaced(client.clone(), namespace);
    let kind = T::kind(&T::DynamicType::default()).into_owned();
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Lookup { kind, source })?;
    Ok(list.items)
}

async fn cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<PostgresCluster>, Error> {
    Api::<PostgresCluster>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Lookup {
            kind: "PostgresCluster".into(),
            source,
        })
}

/// Whether the user behind `request` may get PostgresCluster `namespace/name`.
async fn may_read_cluster(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    namespace: &str,
    name: &str,
) -> Result<bool, Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let user = &request.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(pgpilot_api::GROUP.into()),
                resource: Some("postgresclusters".into()),
                verb: Some("get".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(|source| Error::Lookup {
            kind: "SubjectAccessReview".into(),
            source,
        })?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn review_one(
    client: &kube::Client,
    webhook: &Webhook,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Verdict, Error> {
    let namespace = request.namespace.clone().unwrap_or_default();
    Ok(match webhook.check {
        Check::RestoreSource => {
            let new: PostgresCluster = typed(request)?;
            let Some(r) = new.spec.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) else {
                return Ok(Verdict::default());
            };
            let ns = r.source.namespace.as_deref().unwrap_or(&namespace);
            // The webhook reads with the operator's rights: a source in another namespace is
            // looked at only for a user who may read it, or the answer would tell what is there.
            if ns != namespace && !may_read_cluster(client, request, ns, &r.source.name).await? {
                return Ok(Verdict {
                    denied: None,
                    warnings: vec![format!(
                        "the restore's source in namespace {ns} is not checked: you may not get PostgresClusters there"
                    )],
                });
            }
            let source = cluster(client, ns, &r.source.name).await?;
            rules::restore_source(&new, &namespace, source.as_ref())
        }
        Check::EarlierBackups => {
            let new: PostgresCluster = typed(request)?;
            let backups: Vec<PostgresBackup> = list(client, &namespace).await?;
            rules::earlier_cluster_backups(&new, &namespace, &backups)
        }
        Check::OneUpgradeAtATime => {
            let new: PostgresUpgrade = typed(request)?;
            let upgrades: Vec<PostgresUpgrade> = list(client, &namespace).await?;
            rules::one_upgrade_at_a_time(&new, &upgrades)
        }
        Check::RotationTarget => {
            let new: SecretRotation = typed(request)?;
            let target = match &new.spec.target.postgres_role {
                Some(r) => cluster(client, &namespace, &r.cluster).await?,
                None => None,
            };
            let rotations: Vec<SecretRotation> = list(client, &namespace).await?;
            rules::rotation_target(&new, &namespace, target.as_ref(), &rotations)
        }
    })
}
