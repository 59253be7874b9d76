//! One reconcile of one PostgresCluster: read → validate → desired → apply → status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_toolkit::apply::{Outcome, apply};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::desired::{self, Csprng, Desired, Inputs};
use crate::error::Error;
use crate::status::{self, Observed};
use crate::validate::{self, DefaultImages};

/// What every reconcile of this controller shares.
pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub default_images: DefaultImages,
    pub events: Events,
    pub metrics: ControllerMetrics,
}

fn api_error(verb: &'static str, kind: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let (kind, name) = (kind.to_owned(), name.to_owned());
    move |source| {
        Error::Toolkit(pgpilot_toolkit::Error::Api {
            verb,
            kind,
            name,
            source: Box::new(source),
        })
    }
}

/// Reads an object, `None` when it does not exist.
async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    api.get_opt(name)
        .instrument(tracing::debug_span!("kube.get", kind = %kind, name))
        .await
        .map_err(api_error("get", &kind, name))
}

/// Applies one child unless the live object already matches. Returns whether it wrote.
async fn ensure<K>(client: &Client, ns: &str, fm: &str, desired: &K) -> Result<Outcome, Error>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let live = get(&api, &desired.name_any()).await?;
    Ok(apply(&api, fm, desired, live.as_ref()).await?)
}

async fn apply_all(
    client: &Client,
    ns: &str,
    fm: &str,
    d: &Desired,
) -> Result<Vec<(String, Outcome)>, Error> {
    let mut done = vec![];
    let mut note = |kind: &str, name: Option<&String>, o: Outcome| {
        done.push((format!("{kind}/{}", name.cloned().unwrap_or_default()), o));
    };
    // Identity and RBAC first, configuration and Services next, the workload last.
    note(
        "ServiceAccount",
        d.service_account.metadata.name.as_ref(),
        ensure(client, ns, fm, &d.service_account).await?,
    );
    note(
        "Role",
        d.role.metadata.name.as_ref(),
        ensure(client, ns, fm, &d.role).await?,
    );
    note(
        "RoleBinding",
        d.role_binding.metadata.name.as_ref(),
        ensure(client, ns, fm, &d.role_binding).await?,
    );
    for s in &d.secrets {
        note(
            "Secret",
            s.metadata.name.as_ref(),
            ensure(client, ns, fm, s).await?,
        );
    }
    note(
        "ConfigMap",
        d.patroni_config.metadata.name.as_ref(),
        ensure(client, ns, fm, &d.patroni_config).await?,
    );
    for s in &d.services {
        note(
            "Service",
            s.metadata.name.as_ref(),
            ensure(client, ns, fm, s).await?,
        );
    }
    if let Some(pdb) = &d.pdb {
        note(
            "PodDisruptionBudget",
            pdb.metadata.name.as_ref(),
            ensure(client, ns, fm, pdb).await?,
        );
    }
    note(
        "StatefulSet",
        d.statefulset.metadata.name.as_ref(),
        ensure(client, ns, fm, &d.statefulset).await?,
    );
    Ok(done)
}

/// Removes a PDB the spec no longer wants (only ours: it carries the cluster label).
async fn prune_pdb(
    client: &Client,
    metrics: &ControllerMetrics,
    ns: &str,
    cluster: &PostgresCluster,
    d: &Desired,
) -> Result<(), Error> {
    if d.pdb.is_some() {
        return Ok(());
    }
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let name = cluster.name_any();
    if let Some(pdb) = get(&api, &name).await?
        && pdb.labels().get(labels::CLUSTER) == Some(&name)
    {
        metrics.wrote("PodDisruptionBudget");
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(api_error("delete", "PodDisruptionBudget", &name))?;
    }
    Ok(())
}

fn selector(cluster: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER))
}

/// Writes the status when it differs from the stored one.
async fn write_status(
    ctx: &Context,
    api: &Api<PostgresCluster>,
    cluster: &PostgresCluster,
    status: pgpilot_api::PostgresClusterStatus,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    ctx.metrics.wrote("PostgresCluster/status");
    let name = cluster.name_any();
    let patch = serde_json::json!({"status": status});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .instrument(tracing::debug_span!("kube.patch_status", name = %name))
        .await
        .map_err(api_error("patch-status", "PostgresCluster", &name))?;
    Ok(true)
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The reconcile. Deletion needs no finalizer: children carry owner references and the
/// StatefulSet's PVC retention policy decides what happens to the data.
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().ok_or_else(|| Error::Invalid {
        field: "metadata.namespace",
        message: "missing".into(),
    })?;
    let name = cluster.name_any();
    let client = &ctx.client;
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);

    let pods = pods_api
        .list(&selector(&name))
        .await
        .map_err(api_error("list", "Pod", &name))?
        .items;

    if cluster.spec.paused {
        let sts = get(&sts_api, &name).await?;
        let observed = Observed {
            statefulset: sts.as_ref(),
            pods: &pods,
            invalid: None,
            image: None,
        };
        write_status(
            &ctx,
            &clusters,
            &cluster,
            status::compute(&cluster, &observed, now()),
        )
        .await?;
        return Ok(Action::await_change());
    }

    let validated =
        validate::validate(&cluster).and_then(|()| validate::image(&cluster, &ctx.default_images));
    let image = match validated {
        Ok(image) => image,
        Err(e) => {
            let sts = get(&sts_api, &name).await?;
            let observed = Observed {
                statefulset: sts.as_ref(),
                pods: &pods,
                invalid: Some(e.to_string()),
                image: None,
            };
            if write_status(
                &ctx,
                &clusters,
                &cluster,
                status::compute(&cluster, &observed, now()),
            )
            .await?
            {
                ctx.events
                    .warning(cluster.as_ref(), "InvalidSpec", "Validate", e.to_string())
                    .await;
            }
            return Err(e);
        }
    };

    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let existing_secrets: BTreeMap<String, Secret> = secrets_api
        .list(&selector(&name))
        .await
        .map_err(api_error("list", "Secret", &name))?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let inputs = Inputs {
        cluster: &cluster,
        image: image.clone(),
        existing_secrets: &existing_secrets,
    };
    let desired = desired::build(&inputs, &mut Csprng)?;

    let applied = apply_all(client, &ns, &ctx.field_manager, &desired).await?;
    prune_pdb(client, &ctx.metrics, &ns, &cluster, &desired).await?;
    let changed: Vec<&String> = applied
        .iter()
        .filter(|(_, o)| *o != Outcome::Unchanged)
        .map(|(n, _)| n)
        .collect();
    for child in &changed {
        ctx.metrics
            .wrote(child.split('/').next().unwrap_or_default());
    }
    if !changed.is_empty() {
        tracing::info!(children = ?changed, "applied");
        let note = format!(
            "applied {}",
            changed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ctx.events
            .normal(cluster.as_ref(), "ChildrenApplied", "Apply", note)
            .await;
    }

    let sts = get(&sts_api, &name).await?;
    let observed = Observed {
        statefulset: sts.as_ref(),
        pods: &pods,
        invalid: None,
        image: Some(image),
    };
    let status = status::compute(&cluster, &observed, now());
    let ready = status.phase == Some(pgpilot_api::cluster::ClusterPhase::Ready);
    write_status(&ctx, &clusters, &cluster, status).await?;
    // Pod and StatefulSet events trigger reconciles; the periodic one catches the rest.
    Ok(Action::requeue(if ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    }))
}

/// Kinds the reconcile writes; kept here so RBAC and tests agree.
pub type Children = (
    ServiceAccount,
    Role,
    RoleBinding,
    Secret,
    ConfigMap,
    Service,
    PodDisruptionBudget,
    StatefulSet,
);
