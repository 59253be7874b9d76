//! Server-side apply with one field manager per controller, that sends nothing when the
//! live object already is as desired.
//!
//! "As desired" is two checks: the live object carries the hash of the last applied
//! configuration (so a field we stopped setting still triggers an apply that removes it),
//! and every field we set still has our value (so drift by someone else is repaired).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Annotation holding the hash of the configuration pgpilot last applied to an object.
pub const APPLIED_HASH: &str = "pgpilot.io/applied-hash";

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The live object already matched; no request was sent.
    Unchanged,
    /// The object did not exist and was created.
    Created,
    /// The object was patched.
    Updated,
}

/// Hash of a desired object, stable across processes and releases.
pub fn config_hash(desired: &Value) -> String {
    // serde_json's map is ordered by key, so the same object always hashes the same.
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    let digest = Sha256::digest(bytes);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether every field set in `desired` has the same value in `live`. Lists must have the
/// same length, element by element. `null` in `desired` means "absent".
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Null, Value::Null) => true,
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => dv.is_null(),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// Stamps `desired` with its own hash and decides whether `live` needs an apply.
/// Returns the object to send, or `None` when nothing would change.
pub fn prepare(mut desired: Value, live: Option<&Value>) -> Option<Value> {
    let hash = config_hash(&desired);
    if let Some(live) = live {
        let live_hash = live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(APPLIED_HASH));
        if live_hash.and_then(Value::as_str) == Some(hash.as_str()) && is_subset(&desired, live) {
            return None;
        }
    }
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH.to_owned(), Value::String(hash));
        }
    }
    Some(desired)
}

/// Applies `desired` with `field_manager` unless `live` (from a cache or a read) already
/// matches it. Conflicts with other managers are forced: the controller owns these fields.
pub async fn apply<K>(
    api: &Api<K>,
    field_manager: &str,
    desired: &K,
    live: Option<&K>,
) -> Result<Outcome, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let name = desired.name_any();
    let to_value = |o: &K| {
        serde_json::to_value(o).map_err(|source| Error::Serialize {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })
    };
    let live_value = live.map(to_value).transpose()?;
    let Some(body) = prepare(to_value(desired)?, live_value.as_ref()) else {
        return Ok(Outcome::Unchanged);
    };
    let span = tracing::debug_span!("kube.apply", kind = %kind, name = %name, field_manager);
    let _enter = span.enter();
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Api {
        verb: "apply",
        kind,
        name,
        source: Box::new(source),
    })?;
    Ok(if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// Creates `obj` unless it exists already (a cache still behind an earlier reconcile's
/// create: the object is there, nothing to do). Returns whether this call created it.
pub async fn create_once<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    use tracing::Instrument;
    let (kind, name) = (K::kind(&()).to_string(), obj.name_any());
    match api
        .create(&kube::api::PostParams::default(), obj)
        .instrument(tracing::debug_span!("kube.create", kind = %kind, name = %name))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::api("create", &kind, &name)(e)),
    }
}

/// Deletes object `name` (dependents in the background) unless it is gone already. Returns
/// whether this call deleted it.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    use tracing::Instrument;
    let kind = K::kind(&()).to_string();
    let params = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    match api
        .delete(name, &params)
        .instrument(tracing::debug_span!("kube.delete", kind = %kind, name = %name))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(Error::api("delete", &kind, name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(port: i64) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db-rw", "labels": {"a": "b"}},
               "spec": {"ports": [{"name": "postgres", "port": port}]}})
    }

    /// What the API server returns: our fields plus defaults and bookkeeping.
    fn live(of: &Value) -> Value {
        let mut live = prepare(of.clone(), None).unwrap_or_default();
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["uid"] = json!("u-1");
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["clusterIP"] = json!("10.0.0.7");
        live
    }

    #[test]
    fn a_missing_object_is_applied_with_its_hash() {
        let body = prepare(svc(5432), None).unwrap_or_default();
        assert_eq!(
            body["metadata"]["annotations"][APPLIED_HASH],
            json!(config_hash(&svc(5432)))
        );
        assert_eq!(body["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn a_converged_object_costs_no_write() {
        assert_eq!(prepare(svc(5432), Some(&live(&svc(5432)))), None);
    }

    #[test]
    fn drift_by_someone_else_is_repaired() {
        let mut drifted = live(&svc(5432));
        drifted["spec"]["ports"][0]["port"] = json!(5433);
        assert!(prepare(svc(5432), Some(&drifted)).is_some());
    }

    #[test]
    fn a_field_we_stopped_setting_triggers_an_apply() {
        let mut old = svc(5432);
        old["metadata"]["labels"]["extra"] = json!("x");
        // The live object still has the label (a subset check alone would pass), but the
        // hash of what we applied last differs, so the apply that removes it is sent.
        assert!(prepare(svc(5432), Some(&live(&old))).is_some());
    }

    #[test]
    fn subset_rules() {
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1.0, "b": 2})));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(is_subset(&json!({"a": null}), &json!({})));
        assert!(!is_subset(&json!({"a": "x"}), &json!({})));
        assert!(is_subset(
            &json!([{"n": 1}]),
            &json!([{"n": 1, "default": true}])
        ));
    }

    #[test]
    fn the_hash_is_stable_and_sensitive() {
        assert_eq!(config_hash(&svc(1)), config_hash(&svc(1)));
        assert_ne!(config_hash(&svc(1)), config_hash(&svc(2)));
        assert_eq!(config_hash(&svc(1)).len(), 32);
    }
}
