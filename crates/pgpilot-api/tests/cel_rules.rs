//! Every CEL case of `fixtures/validation-cases.yaml`, evaluated client-side with kube's
//! CEL interpreter. The same table runs against a real API server in the integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use pgpilot_api::fixtures::{Case, Layer, validation_cases};
use pgpilot_api::{
    BackupSchedule, PostgresBackup, PostgresCluster, PostgresUpgrade, SecretRotation,
};
use serde::de::DeserializeOwned;

fn check<K>(case: &Case, validate: fn(&K, Option<&K>) -> Result<(), String>) -> Result<(), String>
where
    K: DeserializeOwned,
{
    let parse = |v: &serde_json::Value| {
        serde_json::from_value::<K>(v.clone())
            .map_err(|e| format!("{}: does not deserialize: {e}", case.name))
    };
    let new = parse(&case.object)?;
    let old = case.old.as_ref().map(parse).transpose()?;
    let verdict = validate(&new, old.as_ref());
    case.judge(verdict).map_or(Ok(()), Err)
}

macro_rules! validator {
    ($kind:ty) => {
        |new: &$kind, old: Option<&$kind>| {
            match old {
                None => new.validate_cel(),
                Some(old) => new.validate_cel_update(old),
            }
            .map_err(|e| e.to_string())
        }
    };
}

#[test]
fn every_cel_case_gets_the_expected_verdict() {
    let cases: Vec<Case> = validation_cases()
        .into_iter()
        .filter(|c| c.layer == Layer::Cel)
        .collect();
    assert!(
        cases.len() > 60,
        "the table lost its cases: {}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            match case.kind.as_str() {
                "PostgresCluster" => check::<PostgresCluster>(case, validator!(PostgresCluster)),
                "PostgresBackup" => check::<PostgresBackup>(case, validator!(PostgresBackup)),
                "BackupSchedule" => check::<BackupSchedule>(case, validator!(BackupSchedule)),
                "PostgresUpgrade" => check::<PostgresUpgrade>(case, validator!(PostgresUpgrade)),
                "SecretRotation" => check::<SecretRotation>(case, validator!(SecretRotation)),
                other => Err(format!("{}: unknown kind {other}", case.name)),
            }
            .err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_in_the_crds_has_a_rejecting_case() {
    // A rule nobody tests could be wrong unnoticed: each message must appear in the table.
    let crds = serde_json::to_string(&pgpilot_api::crds::all()).unwrap_or_default();
    let table = validation_cases();
    let messages: Vec<String> = crds
        .split("\"message\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(
        messages.len() > 30,
        "found only {} rule messages",
        messages.len()
    );
    let untested: Vec<&String> = messages
        .iter()
        .filter(|m| {
            !table
                .iter()
                .any(|c| c.reject.as_deref().is_some_and(|r| m.contains(r)))
        })
        .collect();
    assert!(
        untested.is_empty(),
        "rules without a rejecting case: {untested:#?}"
    );
}

#[test]
fn the_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let result = match doc["kind"].as_str().unwrap_or_default() {
            "PostgresCluster" => serde_yaml::from_str::<PostgresCluster>(&text)
                .unwrap()
                .validate_cel(),
            "PostgresBackup" => serde_yaml::from_str::<PostgresBackup>(&text)
                .unwrap()
                .validate_cel(),
            "BackupSchedule" => serde_yaml::from_str::<BackupSchedule>(&text)
                .unwrap()
                .validate_cel(),
            "PostgresUpgrade" => serde_yaml::from_str::<PostgresUpgrade>(&text)
                .unwrap()
                .validate_cel(),
            "SecretRotation" => serde_yaml::from_str::<SecretRotation>(&text)
                .unwrap()
                .validate_cel(),
            other => panic!("{}: unknown kind {other}", path.display()),
        };
        assert!(result.is_ok(), "{}: {result:?}", path.display());
        kinds.insert(doc["kind"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(kinds.len(), 5, "an example of every kind: {kinds:?}");
}
