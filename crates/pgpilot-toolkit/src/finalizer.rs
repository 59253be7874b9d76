//! Finalizers, for objects whose deletion needs cleanup outside Kubernetes (a backup in
//! object storage, a role in PostgreSQL). Kubernetes-only children use owner references.

use std::fmt::Debug;

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, TestOperation,
};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;

/// The JSON patch that adds `finalizer`, or `None` when it is there already. It tests the
/// resourceVersion so a concurrent change makes it fail (409) instead of clobbering.
pub fn add_patch<K: Resource>(obj: &K, finalizer: &str) -> Option<JsonPatch> {
    let finalizers = obj.finalizers();
    if finalizers.iter().any(|f| f == finalizer) {
        return None;
    }
    let mut ops = version_test(obj);
    if finalizers.is_empty() {
        ops.push(PatchOperation::Add(AddOperation {
            path: "/metadata/finalizers".parse().ok()?,
            value: Value::from(vec![finalizer]),
        }));
    } else {
        ops.push(PatchOperation::Add(AddOperation {
            path: "/metadata/finalizers/-".parse().ok()?,
            value: Value::from(finalizer),
        }));
    }
    Some(JsonPatch(ops))
}

/// The JSON patch that removes `finalizer`, or `None` when it is absent.
pub fn remove_patch<K: Resource>(obj: &K, finalizer: &str) -> Option<JsonPatch> {
    let index = obj.finalizers().iter().position(|f| f == finalizer)?;
    let mut ops = version_test(obj);
    ops.push(PatchOperation::Test(TestOperation {
        path: format!("/metadata/finalizers/{index}").parse().ok()?,
        value: Value::from(finalizer),
    }));
    ops.push(PatchOperation::Remove(RemoveOperation {
        path: format!("/metadata/finalizers/{index}").parse().ok()?,
    }));
    Some(JsonPatch(ops))
}

fn version_test<K: Resource>(obj: &K) -> Vec<PatchOperation> {
    obj.meta()
        .resource_version
        .as_ref()
        .and_then(|rv| {
            Some(PatchOperation::Test(TestOperation {
                path: "/metadata/resourceVersion".parse().ok()?,
                value: Value::from(rv.as_str()),
            }))
        })
        .into_iter()
        .collect()
}

/// Adds `finalizer` to `obj` unless present.
pub async fn ensure<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    match add_patch(obj, finalizer) {
        Some(p) => send(api, obj, p).await,
        None => Ok(()),
    }
}

/// Removes `finalizer` from `obj` once its cleanup is done.
pub async fn release<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    match remove_patch(obj, finalizer) {
        Some(p) => send(api, obj, p).await,
        None => Ok(()),
    }
}

async fn send<K>(api: &Api<K>, obj: &K, patch: JsonPatch) -> Result<(), Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.name_any();
    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Api {
            verb: "patch-finalizers",
            kind: K::kind(&K::DynamicType::default()).into_owned(),
            name,
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use serde_json::json;

    fn cm(finalizers: &[&str]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                resource_version: Some("7".into()),
                finalizers: (!finalizers.is_empty())
                    .then(|| finalizers.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn applied(obj: &ConfigMap, patch: &JsonPatch) -> Vec<String> {
        let mut v = serde_json::to_value(obj).unwrap_or_default();
        json_patch::patch(&mut v, patch)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(v["metadata"]["finalizers"].clone()).unwrap_or_default()
    }

    #[test]
    fn adds_to_an_empty_list_and_appends_to_others() {
        let p = add_patch(&cm(&[]), "a/b").unwrap_or_else(|| panic!("patch expected"));
        assert_eq!(applied(&cm(&[]), &p), vec!["a/b"]);
        let other = cm(&["other/x"]);
        let p = add_patch(&other, "a/b").unwrap_or_else(|| panic!("patch expected"));
        assert_eq!(applied(&other, &p), vec!["other/x", "a/b"]);
    }

    #[test]
    fn adding_twice_is_a_no_op() {
        assert!(add_patch(&cm(&["a/b"]), "a/b").is_none());
    }

    #[test]
    fn removes_only_its_own() {
        let obj = cm(&["other/x", "a/b"]);
        let p = remove_patch(&obj, "a/b").unwrap_or_else(|| panic!("patch expected"));
        assert_eq!(applied(&obj, &p), vec!["other/x"]);
        assert!(remove_patch(&cm(&["other/x"]), "a/b").is_none());
    }

    #[test]
    fn patches_fail_on_a_concurrent_change() {
        let p = add_patch(&cm(&[]), "a/b").unwrap_or_else(|| panic!("patch expected"));
        let mut newer = serde_json::to_value(cm(&[])).unwrap_or_default();
        newer["metadata"]["resourceVersion"] = json!("8");
        assert!(json_patch::patch(&mut newer, &p).is_err());
    }
}
