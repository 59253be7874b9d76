//! The table of good and bad objects in `fixtures/validation-cases.yaml`, shared by the
//! client-side CEL unit tests and the API-server integration tests.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

const CASES_YAML: &str = include_str!("../fixtures/validation-cases.yaml");

/// Which check is expected to catch a bad object.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// A CEL rule (`x-kubernetes-validations`): testable client-side and on the server.
    #[default]
    Cel,
    /// The structural schema (types, enums, lengths, list keys): only the server checks it.
    Schema,
}

/// One object (and, for transition rules, the object it replaces) and the expected verdict.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub kind: String,
    pub layer: Layer,
    /// The object as sent.
    pub object: Value,
    /// The stored object an update replaces; `None` for a create.
    pub old: Option<Value>,
    /// A fragment of the expected rejection message; `None` when the object is valid.
    pub reject: Option<String>,
}

impl Case {
    /// Compares a verdict (Ok, or the rejection message) with what the case expects; the
    /// mismatch, if any, explained.
    pub fn judge(&self, verdict: Result<(), String>) -> Option<String> {
        match (&self.reject, verdict) {
            (None, Ok(())) => None,
            (None, Err(e)) => Some(format!(
                "{}: expected to be accepted, was rejected: {e}",
                self.name
            )),
            (Some(want), Ok(())) => Some(format!(
                "{}: expected rejection containing {want:?}, was accepted",
                self.name
            )),
            (Some(want), Err(e)) if e.contains(want.as_str()) => None,
            (Some(want), Err(e)) => Some(format!(
                "{}: expected rejection containing {want:?}, got: {e}",
                self.name
            )),
        }
    }
}

#[derive(Deserialize)]
struct File {
    bases: BTreeMap<String, Value>,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
struct RawCase {
    name: String,
    kind: String,
    #[serde(default)]
    layer: Layer,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    old: Option<Value>,
    #[serde(default)]
    reject: Option<String>,
}

/// Every case of the table. Panics on a malformed table: it is test data compiled in.
#[allow(clippy::expect_used)]
pub fn validation_cases() -> Vec<Case> {
    let file: File = serde_yaml::from_str(CASES_YAML).expect("validation-cases.yaml parses");
    file.cases
        .into_iter()
        .map(|raw| {
            let base = file
                .bases
                .get(&raw.kind)
                .unwrap_or_else(|| panic!("case {}: no base for kind {}", raw.name, raw.kind));
            // Named after the case (each its own object on a server), unless the case is
            // about the name.
            let named = raw
                .patch
                .as_ref()
                .and_then(|p| p.pointer("/metadata/name"))
                .is_some();
            let patched = |patch: &Option<Value>| {
                let mut v = base.clone();
                if !named {
                    v["metadata"]["name"] = Value::from(raw.name.as_str());
                }
                if let Some(p) = patch {
                    json_patch::merge(&mut v, p);
                }
                v
            };
            Case {
                object: patched(&raw.patch),
                old: raw.old.as_ref().map(|o| patched(&Some(o.clone()))),
                name: raw.name,
                kind: raw.kind,
                layer: raw.layer,
                reject: raw.reject,
            }
        })
        .collect()
}
