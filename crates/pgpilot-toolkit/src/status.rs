//! Status written with server-side apply, one field manager per controller. Each controller
//! declares the status fields and condition types it owns and sends only those, so two
//! controllers writing one object's status never remove each other's fields; a field or
//! condition it stops sending is removed by the API server (it owned it).

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::error::Error;

/// The part of a kind's status one controller owns.
#[derive(Clone, Copy, Debug)]
pub struct StatusPart<'a> {
    /// Top-level status fields, as the API spells them (`currentPrimary`).
    pub fields: &'a [&'a str],
    /// Condition types (entries of `status.conditions`, a list keyed by `type`).
    pub conditions: &'a [&'a str],
}

impl StatusPart<'_> {
    /// This controller's part of `status` (a status object), conditions ordered by type.
    pub fn project(&self, status: &Value) -> Value {
        let mut out = Map::new();
        for field in self.fields {
            if let Some(v) = status.get(*field) {
                out.insert((*field).to_owned(), v.clone());
            }
        }
        let mut conditions: Vec<Value> = status
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| self.conditions.contains(&t))
            })
            .cloned()
            .collect();
        conditions.sort_by_key(|c| c.get("type").and_then(Value::as_str).map(str::to_owned));
        if !conditions.is_empty() {
            out.insert("conditions".to_owned(), Value::Array(conditions));
        }
        Value::Object(out)
    }

    /// What to apply to make `live` carry `desired` (both whole status objects), or `None`
    /// when this controller's part already is as desired.
    pub fn patch(&self, desired: &Value, live: Option<&Value>) -> Option<Value> {
        let desired = self.project(desired);
        // No status yet is the same as an empty part: nothing to remove.
        let live = live
            .map(|l| self.project(l))
            .unwrap_or_else(|| Value::Object(Map::new()));
        (desired != live).then_some(desired)
    }
}

/// Applies this controller's part of `desired` as the status of `object`, unless the live
/// status (from the object as read) already carries it. Returns whether it wrote.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    field_manager: &str,
    part: &StatusPart<'_>,
    object: &K,
    desired: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    S: Serialize,
{
    let kind = K::kind(&()).into_owned();
    let name = object.name_any();
    let serialize = |source| Error::Serialize {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let desired = serde_json::to_value(desired).map_err(serialize)?;
    let live = serde_json::to_value(object).map_err(serialize)?;
    let Some(status) = part.patch(&desired, live.get("status")) else {
        return Ok(false);
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        let before = live
            .get("status")
            .map(|l| part.project(l))
            .unwrap_or_default();
        let changed = changes(&before, &status);
        tracing::debug!(kind = %kind, name = %name, ?changed, "status part differs");
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&body),
    )
    .instrument(
        tracing::debug_span!("kube.apply_status", kind = %kind, name = %name, field_manager),
    )
    .await
    .map_err(|source| Error::Api {
        verb: "apply-status",
        kind,
        name,
        source: Box::new(source),
    })?;
    Ok(true)
}

/// What a status write changes in this controller's part (fields, and conditions with what
/// they say now), for the debug log: why an object that looks converged still costs writes.
fn changes(before: &Value, now: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in now.as_object().into_iter().flatten() {
        if before.get(k.as_str()) == Some(v) {
            continue;
        }
        match (k.as_str(), v.as_array()) {
            ("conditions", Some(conditions)) => {
                let old = before["conditions"].as_array();
                out.extend(
                    conditions
                        .iter()
                        .filter(|c| !old.is_some_and(|o| o.contains(c)))
                        .map(|c| {
                            format!(
                                "{}={}/{}: {}",
                                c["type"], c["status"], c["reason"], c["message"]
                            )
                        }),
                );
            }
            _ => out.push(format!("{k}={v}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLUSTER: StatusPart<'static> = StatusPart {
        fields: &["phase", "currentPrimary"],
        conditions: &["Ready", "Progressing"],
    };

    #[test]
    fn the_debug_log_names_what_a_write_changes() {
        let before = json!({"phase": "Ready", "conditions": [cond("Ready", "True"), cond("Progressing", "False")]});
        let now = json!({"phase": "Degraded", "conditions": [cond("Ready", "False"), cond("Progressing", "False")]});
        assert_eq!(
            changes(&before, &now),
            [r#""Ready"="False"/"R": """#, r#"phase="Degraded""#]
        );
        assert!(changes(&now, &now).is_empty());
    }

    fn cond(t: &str, s: &str) -> Value {
        json!({"type": t, "status": s, "reason": "R", "message": "", "lastTransitionTime": "2026-12-05T00:00:00Z"})
    }

    #[test]
    fn the_part_holds_only_the_controllers_fields_and_conditions() {
        let status = json!({"phase": "Ready", "lastBackup": {"id": "x"},
            "conditions": [cond("Ready", "True"), cond("ContinuousArchiving", "True")]});
        assert_eq!(
            CLUSTER.project(&status),
            json!({"phase": "Ready", "conditions": [cond("Ready", "True")]})
        );
    }

    #[test]
    fn what_another_controller_wrote_does_not_make_a_write() {
        let mine = json!({"phase": "Ready", "conditions": [cond("Ready", "True")]});
        let live = json!({"phase": "Ready", "lastBackup": {"id": "x"},
            "conditions": [cond("ContinuousArchiving", "False"), cond("Ready", "True")]});
        assert_eq!(CLUSTER.patch(&mine, Some(&live)), None);
    }

    #[test]
    fn a_changed_or_dropped_field_or_condition_is_written() {
        let live = json!({"phase": "Ready", "currentPrimary": "db-0",
            "conditions": [cond("Ready", "True"), cond("Progressing", "False")]});
        let moved = json!({"phase": "Ready", "currentPrimary": "db-1",
            "conditions": [cond("Ready", "True"), cond("Progressing", "False")]});
        assert_eq!(
            CLUSTER.patch(&moved, Some(&live)),
            Some(CLUSTER.project(&moved))
        );
        // No primary now: the field must go, so the part is sent without it.
        let gone = json!({"phase": "Ready",
            "conditions": [cond("Ready", "True"), cond("Progressing", "False")]});
        assert_eq!(
            CLUSTER.patch(&gone, Some(&live)),
            Some(CLUSTER.project(&gone))
        );
        let flipped = json!({"phase": "Ready", "currentPrimary": "db-0",
            "conditions": [cond("Progressing", "True"), cond("Ready", "True")]});
        assert!(CLUSTER.patch(&flipped, Some(&live)).is_some());
    }

    #[test]
    fn a_new_object_gets_its_first_status() {
        let mine = json!({"phase": "Creating"});
        assert_eq!(CLUSTER.patch(&mine, None), Some(mine.clone()));
    }
}
