//! The children of one object as a set: desired objects applied in waves (each wave at
//! once, the next when it is done), live objects read from the watch caches, and — for the
//! kinds the set prunes — every other object of that kind carrying the owner's labels
//! deleted. A converged set costs no request at all.

use std::fmt;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions};
use tracing::Instrument;

use crate::apply::{Outcome, apply};
use crate::error::Error;
use crate::runner::{Cache, Watched};

/// What the set did to one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: String,
    pub name: String,
    /// `None`: deleted as a leftover.
    pub applied: Option<Outcome>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.applied {
            Some(Outcome::Created) => write!(f, "created {}/{}", self.kind, self.name),
            Some(_) => write!(f, "updated {}/{}", self.kind, self.name),
            None => write!(f, "deleted {}/{}", self.kind, self.name),
        }
    }
}

type Step<'a> = BoxFuture<'a, Result<Vec<Change>, Error>>;

/// The children of one owner in one namespace.
pub struct ChildSet<'a> {
    field_manager: &'a str,
    namespace: &'a str,
    owner_uid: &'a str,
    owner_labels: &'a [(&'a str, &'a str)],
    waves: Vec<Vec<Step<'a>>>,
    prunes: Vec<Step<'a>>,
}

impl<'a> ChildSet<'a> {
    /// `owner_labels`: what every child of this owner carries. Pruning looks for objects with
    /// these labels whose controller reference is the owner (`owner_uid`): nothing someone
    /// else made, even from a copy of a child.
    pub fn new(
        field_manager: &'a str,
        namespace: &'a str,
        owner_uid: &'a str,
        owner_labels: &'a [(&'a str, &'a str)],
    ) -> Self {
        Self {
            field_manager,
            namespace,
            owner_uid,
            owner_labels,
            waves: Vec::new(),
            prunes: Vec::new(),
        }
    }

    /// Applies `desired` objects of one kind in `wave` (0 first).
    pub fn apply<K: Watched>(
        &mut self,
        wave: usize,
        cache: &'a Cache<K>,
        desired: impl IntoIterator<Item = &'a K>,
    ) -> &mut Self {
        if self.waves.len() <= wave {
            self.waves.resize_with(wave + 1, Vec::new);
        }
        let (fm, ns) = (self.field_manager, self.namespace);
        for object in desired {
            self.waves[wave].push(
                async move {
                    let name = object.name_any();
                    let live = cache.get(ns, &name);
                    let outcome = apply(&cache.api(ns), fm, object, live.as_deref()).await?;
                    Ok(match outcome {
                        Outcome::Unchanged => vec![],
                        applied => vec![Change {
                            kind: K::kind(&()).into_owned(),
                            name,
                            applied: Some(applied),
                        }],
                    })
                }
                .boxed(),
            );
        }
        self
    }

    /// [`ChildSet::apply`], and once every wave is applied, deletes the other objects of the
    /// kind that carry the owner's labels (e.g. a PDB the spec no longer asks for).
    pub fn apply_and_prune<K: Watched>(
        &mut self,
        wave: usize,
        cache: &'a Cache<K>,
        desired: impl IntoIterator<Item = &'a K>,
    ) -> &mut Self {
        let desired: Vec<&'a K> = desired.into_iter().collect();
        let keep: Vec<String> = desired.iter().map(|o| o.name_any()).collect();
        self.apply(wave, cache, desired);
        let (ns, labels, owner) = (self.namespace, self.owner_labels, self.owner_uid);
        self.prunes.push(
            async move {
                let mut deleted = Vec::new();
                for leftover in prune_set(&cache.list(ns, labels), owner, &keep) {
                    delete(cache, ns, leftover).await?;
                    deleted.push(Change {
                        kind: K::kind(&()).into_owned(),
                        name: leftover.name_any(),
                        applied: None,
                    });
                }
                Ok(deleted)
            }
            .boxed(),
        );
        self
    }

    /// Applies the waves in order, then prunes. Returns what changed.
    pub async fn run(self) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        for wave in self.waves {
            changes.extend(
                futures::future::try_join_all(wave)
                    .await?
                    .into_iter()
                    .flatten(),
            );
        }
        for prune in self.prunes {
            changes.extend(prune.await?);
        }
        Ok(changes)
    }
}

/// The labelled objects the owner controls and does not keep.
fn prune_set<'o, K: Watched>(
    labelled: &'o [std::sync::Arc<K>],
    owner_uid: &str,
    keep: &[String],
) -> Vec<&'o K> {
    labelled
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none() && !keep.contains(&o.name_any()))
        .filter(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == owner_uid)
        })
        .map(|o| o.as_ref())
        .collect()
}

/// Deletes `object` if it is still the one we saw (same uid).
async fn delete<K: Watched>(cache: &Cache<K>, ns: &str, object: &K) -> Result<(), Error> {
    let kind = K::kind(&()).into_owned();
    let name = object.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match cache
        .api(ns)
        .delete(&name, &params)
        .instrument(tracing::debug_span!("kube.delete", kind = %kind, name = %name))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a new object of the same name: nothing to prune.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Api {
            verb: "delete",
            kind,
            name,
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    use super::*;

    fn pdb(name: &str, deleting: bool, controller: Option<&str>) -> Arc<PodDisruptionBudget> {
        Arc::new(PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        controller: Some(true),
                        uid: uid.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(v: Vec<&PodDisruptionBudget>) -> Vec<String> {
        v.iter().map(|o| o.name_any()).collect()
    }

    #[test]
    fn leftovers_are_what_the_owner_controls_and_does_not_keep() {
        let live = [
            pdb("db", false, Some("u-1")),
            pdb("db-old", false, Some("u-1")),
        ];
        assert_eq!(names(prune_set(&live, "u-1", &["db".into()])), ["db-old"]);
        assert_eq!(names(prune_set(&live, "u-1", &[])), ["db", "db-old"]);
    }

    #[test]
    fn what_someone_else_made_with_the_same_labels_stays() {
        let live = [pdb("copy", false, None), pdb("other", false, Some("u-2"))];
        assert!(prune_set(&live, "u-1", &[]).is_empty());
    }

    #[test]
    fn an_object_already_going_is_not_deleted_again() {
        let live = [pdb("db", true, Some("u-1"))];
        assert!(prune_set(&live, "u-1", &[]).is_empty());
    }

    #[test]
    fn changes_read_as_what_happened() {
        let c = |applied| Change {
            kind: "Service".into(),
            name: "db-rw".into(),
            applied,
        };
        assert_eq!(
            c(Some(Outcome::Created)).to_string(),
            "created Service/db-rw"
        );
        assert_eq!(
            c(Some(Outcome::Updated)).to_string(),
            "updated Service/db-rw"
        );
        assert_eq!(c(None).to_string(), "deleted Service/db-rw");
    }
}
