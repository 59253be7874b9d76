//! One reconcile of one PostgresCluster, top-down:
//!
//! 1. **observe** — the cluster's objects from the watch caches, its credential Secrets,
//!    and Patroni's view of every instance ([`observe`], `pgpilot_postgres::members`);
//! 2. **desired** — the children, rendered for the version and image that run ([`desired`]);
//! 3. **plan** — pure: the StatefulSet's size and the one disruptive step to take now
//!    ([`plan::next_step`]);
//! 4. **act** — the children applied as a set, housekeeping that disturbs no instance, then
//!    that one step ([`act`]);
//! 5. **status** — written with server-side apply under this controller's field manager,
//!    only when its part changed ([`status`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use pgpilot_api::cluster::{ClusterPhase, PostgresClusterStatus, RepositoryChange, condition};
use pgpilot_api::{PostgresCluster, labels};
use pgpilot_postgres::credentials::Csprng;
use pgpilot_postgres::members;
use pgpilot_postgres::names::Names;
use pgpilot_postgres::version::{self, Running};
use pgpilot_toolkit::ReconcileError;
use pgpilot_toolkit::conditions::{self, Status};

use crate::context::Context;
use crate::desired::{self, Inputs};
use crate::error::Error;
use crate::observe;
use crate::plan::{self, Facts};
use crate::status::{self, Observed};
use crate::{act, storage, validate};

/// The condition for declared roles and databases.
pub const ROLES_AND_DATABASES: &str = "RolesAndDatabasesReady";
/// The condition saying whether the instances run the version and image of the spec.
pub const VERSION_CURRENT: &str = "VersionCurrent";

/// Deletion needs no finalizer: children carry owner references and the retention policy
/// decides what happens to the data.
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().ok_or_else(|| Error::Invalid {
        field: "metadata.namespace",
        message: "missing".into(),
    })?;
    let seen = observe::seen(&ctx.caches, &ns, &cluster.name_any());
    let sts = seen.statefulset.as_deref();

    if cluster.spec.paused {
        let observed = Observed::of(sts, &seen.pods);
        status::write(ctx, &cluster, &observed).await?;
        return Ok(Action::await_change());
    }
    let image = match validate::validate(&cluster)
        .and_then(|()| validate::image(&cluster, &ctx.default_images))
    {
        Ok(image) => image,
        Err(e) => {
            let observed = Observed {
                invalid: Some(e.to_string()),
                ..Observed::of(sts, &seen.pods)
            };
            if status::write(ctx, &cluster, &observed).await? {
                ctx.events
                    .warning(cluster.as_ref(), "InvalidSpec", "Validate", e.to_string())
                    .await;
            }
            return Err(e);
        }
    };
    // A certificate of the user's that is missing or unfit stops the reconcile like a bad
    // spec, but is looked at again soon: cert-manager may not have written it yet.
    let now = std::time::SystemTime::now();
    let provided = match observe::certificate_secret(&ctx.caches, &ns, &cluster).await? {
        None => None,
        Some((name, secret)) => {
            match desired::provided_certificate(&cluster, &name, secret.as_ref(), now) {
                Ok(p) => {
                    if p.expiring {
                        tracing::warn!(secret = %name, "the provided certificate expires within a month");
                    }
                    Some(p)
                }
                Err(message) => {
                    let observed = Observed {
                        invalid: Some(format!("spec.tls.certificate: {message}")),
                        ..Observed::of(sts, &seen.pods)
                    };
                    if status::write(ctx, &cluster, &observed).await? {
                        ctx.events
                            .warning(cluster.as_ref(), "CertificateUnfit", "Validate", message)
                            .await;
                    }
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
            }
        }
    };

    // Desired children, for what runs: a new version or image in the spec waits for the
    // upgrade controller, and says so.
    let stale = seen
        .pods
        .iter()
        .filter(|p| version::pod_image(p).is_some_and(|i| i != image))
        .count();
    let mut pinned = pin(&cluster, sts.and_then(version::running), image, stale);
    // Parameters PostgreSQL or Patroni would not take stay out of what Patroni is given; WAL
    // goes to another repository than the one holding the backups only once that is accepted
    // (the backup controller's ContinuousArchiving says how).
    let parameters = validate::parameters(&pinned.cluster);
    let repository_change = RepositoryChange::of(&cluster);
    if !parameters.refused.is_empty() || repository_change.is_some() {
        let mut effective = pinned.cluster.as_ref().clone();
        effective
            .spec
            .postgresql
            .parameters
            .retain(|name, _| !parameters.refused.contains_key(name));
        if repository_change.is_some() {
            effective.spec.backup = None;
        }
        pinned.cluster = Arc::new(effective);
    }
    let secrets = observe::secrets(&ctx.caches, &ns, &cluster).await?;
    let mut desired = desired::build(
        &Inputs {
            cluster: &pinned.cluster,
            image: pinned.image.clone(),
            exporter_image: &ctx.exporter_image,
            existing_secrets: &secrets,
            now,
            operator: ctx.operator.as_ref(),
            provided_certificate: provided.as_ref(),
            volumes_exist: volumes_exist(
                &cluster,
                sts.is_some(),
                !seen.claims.is_empty(),
                &secrets,
            ),
        },
        &mut Csprng,
    )?;
    let instances = members::instances(&seen.pods, Timestamp::now());
    let api = ctx
        .patroni
        .api(desired.patroni_access(members::https(&instances)))?;
    let members = members::observe(&api, instances).await;

    // Plan: the size the StatefulSet may have now, and the one disruptive step.
    let current = sts
        .and_then(|s| s.spec.as_ref()?.replicas)
        .unwrap_or(cluster.spec.instances);
    let synchronous = cluster
        .spec
        .replication
        .as_ref()
        .is_some_and(|r| r.synchronous.is_some());
    let limit = instance_limit(&cluster);
    let scale = plan::scale_limited(
        cluster.spec.instances,
        limit,
        current,
        &members,
        synchronous,
    );
    keep_live_shape(&mut desired.statefulset, sts, scale.replicas);
    let decision = plan::next_step(&Facts {
        members: &members,
        replicas: current.min(scale.replicas),
        update_revision: update_revision(sts),
        synchronous,
        hold: hold(&cluster),
        scale_switchover: scale.switchover_to.as_deref(),
    });

    // A restore starts from the backup the backup controller chose for it: no instance
    // exists before that choice (which stays in status.restore).
    let awaiting_restore = sts.is_none() && status::restore_pending(&cluster);

    // Act: children, housekeeping, then the step.
    if let Err(e) = act::children(ctx, &cluster, &ns, &desired, !awaiting_restore).await {
        // A child the API server refuses stays refused until the spec changes: Ready says
        // which and why, as for a bad spec (the runner adds the Event).
        if let Error::Toolkit(refusal @ pgpilot_toolkit::Error::Api { .. }) = &e
            && !refusal.is_retryable()
        {
            let observed = Observed {
                refused: Some(refusal.to_string()),
                ..Observed::of(sts, &seen.pods)
            };
            status::write(ctx, &cluster, &observed).await?;
        }
        return Err(e);
    }
    if let Some(not_after) = desired.certificate_expiry {
        ctx.health
            .certificate_expires(&ns, &cluster.name_any(), not_after);
    }
    if let Some(why) = desired.certificate_issued {
        ctx.events
            .normal(
                cluster.as_ref(),
                "CertificateIssued",
                "Tls",
                format!(
                    "server certificate {} issued ({}); every member reloads it",
                    Names::new(&cluster.name_any()).tls_secret(),
                    why.as_str()
                ),
            )
            .await;
    }
    act::adopt_patroni_state(ctx, &cluster, &ns, &seen).await?;
    act::configure_patroni(
        ctx,
        &api,
        &cluster,
        &members,
        &desired.patroni_dcs,
        &parameters,
    )
    .await;
    let stale_credentials = act::reload_credentials(ctx, &api, &members, &desired.auth_token).await;
    tracing::Span::current().record("step", decision.step.describe());
    act::step(ctx, &api, &cluster, &ns, &members, &decision.step).await?;
    let parameters_condition = parameters.condition(pinned.cluster.spec.postgresql.version);
    let mut conditions = vec![pinned.condition, parameters_condition.clone()];
    // Instances stopped by the limit come back: their volumes stay.
    let keep = match limit {
        Some(_) => cluster.spec.instances.max(current),
        None => scale.replicas.max(current),
    };
    let (s, reason, message) = act::volumes(ctx, &cluster, &ns, &seen, keep).await?;
    let resizing = reason == "Resizing";
    conditions.push((storage::CONDITION, s, reason, message));
    let sql = act::roles_and_databases(ctx, &cluster, &members, &desired).await;
    let sql_pending = sql.as_ref().is_some_and(|c| c.0 != Status::True);
    conditions.extend(sql.map(|(s, r, m)| (ROLES_AND_DATABASES, s, r, m)));

    // Status, from what was observed.
    let observed = Observed {
        image: Some(pinned.image),
        version: Some(pinned.cluster.spec.postgresql.version),
        members: Some(&members),
        progress: if awaiting_restore {
            Some(plan::Progress {
                moving: true,
                reason: "WaitingForRestoreSource",
                message: format!(
                    "the instances are created once the backup controller has found a backup to restore (condition {})",
                    condition::RESTORE_SOURCE_READY
                ),
            })
        } else {
            decision.progress.clone().or_else(|| {
                let by = cluster.annotations().get(labels::UPGRADE);
                plan::limited_progress(cluster.spec.instances, limit, by.map(String::as_str))
            })
        },
        conditions,
        crash_logs: ctx
            .crash_logs
            .read(&ctx.client, &seen.pods, Some(&members))
            .await,
        ..Observed::of(sts, &seen.pods)
    };
    let status = status::compute(&cluster, &observed, Time(Timestamp::now()));
    troubles_to_events(ctx, &cluster, &observed, &status).await;
    refusals_to_events(ctx, &cluster, &parameters_condition).await;
    let ready = status.phase == Some(ClusterPhase::Ready);
    let streaming_soon = conditions::find(&status.conditions, status::READY)
        .is_some_and(|c| c.reason == "ReplicasNotStreaming");
    status::write_computed(ctx, &cluster, &status).await?;

    // Pods, Patroni's decisions in its ConfigMaps and the children trigger reconciles; the
    // periodic one refreshes what Patroni reports without a Kubernetes event (lag, state).
    // Waiting for a restore's backup to be chosen is busy too: the backup controller's
    // choice lands in the status, which wakes nobody (the watch ignores status changes).
    let busy = awaiting_restore
        || scale.replicas
            != limit.map_or(cluster.spec.instances, |l| l.min(cluster.spec.instances))
        || decision.step != plan::Step::Nothing
        || decision.progress.as_ref().is_some_and(|p| p.moving)
        || resizing
        || streaming_soon
        || stale_credentials > 0;
    Ok(Action::requeue(Duration::from_secs(
        match (busy, sql_pending, ready) {
            (true, _, _) => 2,
            // Failed SQL is retried, without an Event every few seconds.
            (false, true, _) => 30,
            (false, false, true) => 60,
            (false, false, false) => 10,
        },
    )))
}

/// What holds disruptive steps: `spec.maintenance`, or the upgrade controller (a paused
/// upgrade) through its annotation.
fn hold(cluster: &PostgresCluster) -> Option<String> {
    if cluster.spec.maintenance {
        return Some("spec.maintenance".to_owned());
    }
    cluster
        .annotations()
        .get(labels::ROLL_HOLD)
        .map(|why| format!("{} ({why})", labels::ROLL_HOLD))
}

/// How many instances the upgrade controller lets run (a major upgrade stops them).
fn instance_limit(cluster: &PostgresCluster) -> Option<i32> {
    cluster
        .annotations()
        .get(labels::INSTANCE_LIMIT)
        .and_then(|l| l.parse().ok())
}

/// The cluster as the children are rendered for it, the image, and `VersionCurrent`.
struct Pinned {
    cluster: Arc<PostgresCluster>,
    image: String,
    condition: (&'static str, Status, &'static str, String),
}

/// Instances keep the major version and image they run until an upgrade moves them: the
/// StatefulSet is rendered for what runs, and a differing spec waits in a condition — unless
/// the upgrade controller's [`labels::UPGRADE_TARGET`] names exactly what the spec asks for.
/// `stale` counts the pods not yet on the image the StatefulSet asks for.
fn pin(
    cluster: &Arc<PostgresCluster>,
    running: Option<Running>,
    image: String,
    stale: usize,
) -> Pinned {
    let wanted = cluster.spec.postgresql.version;
    let annotations = cluster.annotations();
    let upgrade = annotations.get(labels::UPGRADE);
    let allowed =
        annotations.get(labels::UPGRADE_TARGET) == Some(&labels::upgrade_target(wanted, &image));
    match running {
        Some(run) if (run.version != wanted || run.image != image) && !allowed => {
            let (reason, by) = match upgrade {
                Some(name) => ("Upgrading", format!("PostgresUpgrade {name} moves them")),
                None => (
                    "UpgradePending",
                    "the upgrade controller moves them; none has taken this up (is it enabled: --controllers=upgrade? see docs/upgrade.md)".to_owned(),
                ),
            };
            let message = format!(
                "the spec asks for PostgreSQL {wanted} ({image}); the instances run {} ({}) until {by}",
                run.version, run.image
            );
            let mut effective = cluster.as_ref().clone();
            effective.spec.postgresql.version = run.version;
            effective.spec.postgresql.image = Some(run.image.clone());
            Pinned {
                cluster: Arc::new(effective),
                image: run.image,
                condition: (VERSION_CURRENT, Status::False, reason, message),
            }
        }
        _ if stale > 0 => Pinned {
            condition: (
                VERSION_CURRENT,
                Status::False,
                "Upgrading",
                format!(
                    "{stale} instance(s) not yet on PostgreSQL {wanted} ({image}){}",
                    upgrade
                        .map(|u| format!(": PostgresUpgrade {u} moves them"))
                        .unwrap_or_default()
                ),
            ),
            cluster: cluster.clone(),
            image,
        },
        _ => Pinned {
            cluster: cluster.clone(),
            image,
            condition: (
                VERSION_CURRENT,
                Status::True,
                "AsSpecified",
                format!("PostgreSQL {wanted}"),
            ),
        },
    }
}

/// The size the plan allows, and the live claim templates when the size changed: they are
/// immutable, and volumes grow through their claims.
fn keep_live_shape(desired: &mut StatefulSet, live: Option<&StatefulSet>, replicas: i32) {
    let Some(spec) = desired.spec.as_mut() else {
        return;
    };
    spec.replicas = Some(replicas);
    if let Some(live) = live.and_then(|s| s.spec.as_ref())
        && claim_size(&live.volume_claim_templates) != claim_size(&spec.volume_claim_templates)
    {
        spec.volume_claim_templates = live.volume_claim_templates.clone();
    }
}

fn claim_size(templates: &Option<Vec<PersistentVolumeClaim>>) -> Option<String> {
    let claim = templates.as_ref()?.first()?;
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.clone())
}

/// The revision new pods get, once the StatefulSet controller has seen the latest template
/// (before that, which pods are stale is not known).
fn update_revision(sts: Option<&StatefulSet>) -> Option<&str> {
    let sts = sts?;
    let status = sts.status.as_ref()?;
    (status.observed_generation == sts.metadata.generation)
        .then_some(status.update_revision.as_deref())
        .flatten()
}

/// A Warning Event for each instance trouble the Ready condition did not show before (so
/// once per new trouble, not once per reconcile).
async fn troubles_to_events(
    ctx: &Context,
    cluster: &PostgresCluster,
    observed: &Observed<'_>,
    status: &PostgresClusterStatus,
) {
    let before = cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, status::READY))
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    let now = conditions::find(&status.conditions, status::READY)
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    let troubles = observed.pods.iter().filter_map(|p| observed.trouble(p));
    for trouble in troubles.filter(|t| !t.cause_pending) {
        let note = trouble.to_string();
        if now.contains(&note) && !before.contains(&note) {
            ctx.events
                .about_pod(
                    cluster,
                    &trouble.pod,
                    true,
                    &trouble.reason,
                    "Observe",
                    note,
                )
                .await;
        }
    }
}

/// Whether the cluster's credentials outlive it (with `whenDeleted: Retain`): some volume
/// exists or is about to (the StatefulSet makes its claims at once), or the superuser's Secret
/// already outlived an earlier cluster of this name — once handed over, never taken back, so a
/// cache that has not listed the claims yet cannot make a deletion take the passwords.
fn volumes_exist(
    cluster: &PostgresCluster,
    statefulset: bool,
    claims: bool,
    secrets: &std::collections::BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
) -> bool {
    let superuser = Names::new(&cluster.name_any()).superuser_secret();
    let handed_over = secrets.get(&superuser).is_some_and(|s| {
        s.metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
    });
    statefulset || claims || handed_over
}

/// A Warning Event when the parameters refused change (not once per reconcile).
async fn refusals_to_events(
    ctx: &Context,
    cluster: &PostgresCluster,
    (kind, status, reason, message): &(&'static str, Status, &'static str, String),
) {
    if *status != Status::False {
        return;
    }
    let before = cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, kind));
    if before.is_some_and(|c| &c.message == message) {
        return;
    }
    ctx.events
        .warning(cluster, reason, "Validate", message.clone())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};

    const OLD: &str = "pg:17.5";
    const NEW: &str = "pg:17.6";

    fn with_annotations(pairs: &[(&str, &str)]) -> Arc<PostgresCluster> {
        let mut c = cluster(THREE);
        c.spec.postgresql.image = Some(NEW.into());
        c.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Arc::new(c)
    }

    fn running(image: &str) -> Option<Running> {
        Some(Running {
            version: 17,
            image: image.into(),
        })
    }

    #[test]
    fn a_new_image_waits_for_the_upgrade_controller_and_says_who_is_missing() {
        let p = pin(&with_annotations(&[]), running(OLD), NEW.into(), 3);
        assert_eq!(p.image, OLD);
        assert_eq!(p.cluster.spec.postgresql.image.as_deref(), Some(OLD));
        let (_, status, reason, message) = &p.condition;
        assert_eq!((*status, *reason), (Status::False, "UpgradePending"));
        assert!(message.contains("--controllers=upgrade"), "{message}");
    }

    #[test]
    fn an_upgrade_that_has_not_moved_the_target_keeps_the_pin_and_is_named() {
        let c = with_annotations(&[(labels::UPGRADE, "db-upgrade-1")]);
        let p = pin(&c, running(OLD), NEW.into(), 3);
        assert_eq!(p.image, OLD);
        assert_eq!(p.condition.2, "Upgrading");
        assert!(p.condition.3.contains("PostgresUpgrade db-upgrade-1"));
        // A target that is not what the spec asks for moves nothing either.
        let other = with_annotations(&[(labels::UPGRADE_TARGET, "17@pg:17.7")]);
        assert_eq!(pin(&other, running(OLD), NEW.into(), 3).image, OLD);
    }

    #[test]
    fn the_target_the_spec_asks_for_moves_the_instances_until_every_pod_runs_it() {
        let target = labels::upgrade_target(17, NEW);
        let c = with_annotations(&[
            (labels::UPGRADE, "db-upgrade-1"),
            (labels::UPGRADE_TARGET, &target),
        ]);
        let moving = pin(&c, running(OLD), NEW.into(), 3);
        assert_eq!(moving.image, NEW);
        assert_eq!(moving.cluster.spec.postgresql.image.as_deref(), Some(NEW));
        assert_eq!(
            (moving.condition.1, moving.condition.2),
            (Status::False, "Upgrading")
        );
        // The StatefulSet asks for the new image; one pod still runs the old one.
        let rolling = pin(&c, running(NEW), NEW.into(), 1);
        assert!(rolling.condition.3.starts_with("1 instance(s) not yet"));
        let done = pin(&c, running(NEW), NEW.into(), 0);
        assert_eq!(
            (done.condition.1, done.condition.2),
            (Status::True, "AsSpecified")
        );
    }

    #[test]
    fn maintenance_or_an_upgrade_hold_stops_disruptive_steps() {
        assert_eq!(hold(&with_annotations(&[])), None);
        let held =
            with_annotations(&[(labels::ROLL_HOLD, "PostgresUpgrade db-upgrade-1 is paused")]);
        assert!(hold(&held).unwrap().contains("db-upgrade-1 is paused"));
        let mut c = cluster(THREE);
        c.spec.maintenance = true;
        assert_eq!(hold(&c).as_deref(), Some("spec.maintenance"));
    }
}
