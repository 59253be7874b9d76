//! Growing the instances' volumes. A StatefulSet's claim templates are immutable, so the
//! PersistentVolumeClaims are patched directly — only when their StorageClass allows
//! expansion; otherwise the cluster says so in its `StorageResized` condition and nothing
//! is touched. Shrinking is refused by the API.
//!
//! The claims' retention (`spec.persistentVolumeClaimRetentionPolicy`) is carried out here
//! too, not by the StatefulSet controller: see [`retention`].

use pgpilot_api::cluster::PvcPolicy;
use pgpilot_toolkit::conditions::Status;

pub const CONDITION: &str = "StorageResized";

/// Bytes in a Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1073741824`); `None` when it
/// cannot be read. Fractions round down, which is safe for a "smaller than" comparison.
pub fn bytes(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() {
        return None;
    }
    let factor: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        s if s.starts_with(['e', 'E']) => 10u128.checked_pow(s[1..].parse().ok()?)?,
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_value = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().ok()?;
        digits * factor / 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?
    };
    Some(whole * factor + frac_value)
}

/// One claim as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub requested: String,
    /// What the bound volume has (`status.capacity`); `None` while unbound.
    pub capacity: Option<String>,
    pub storage_class: Option<String>,
}

/// A claim as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    pub name: String,
    /// Instance ordinal (`data-<cluster>-<n>`).
    pub ordinal: i32,
    pub bound: bool,
    /// Carries the cluster as an owner (so garbage collection deletes it with the cluster).
    pub owned: bool,
}

/// What retention asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Give the claim the cluster as owner.
    pub own: Vec<String>,
    /// Take the cluster off the claim's owners.
    pub disown: Vec<String>,
    /// Delete the claim: its instance was scaled away.
    pub delete: Vec<String>,
}

/// `whenDeleted: Delete` makes the cluster an owner of each claim once it is bound (earlier,
/// the write would race the scheduler's binding); `Retain` removes that owner again.
/// `whenScaled: Delete` deletes the claims of ordinals at or above `keep` whose pod is gone.
pub fn retention(
    when_deleted: PvcPolicy,
    when_scaled: PvcPolicy,
    keep: i32,
    claims: &[Retained],
    pod_exists: impl Fn(i32) -> bool,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    for c in claims {
        if when_scaled == PvcPolicy::Delete && c.ordinal >= keep && !pod_exists(c.ordinal) {
            plan.delete.push(c.name.clone());
            continue;
        }
        match when_deleted {
            PvcPolicy::Delete if c.bound && !c.owned => plan.own.push(c.name.clone()),
            PvcPolicy::Retain if c.owned => plan.disown.push(c.name.clone()),
            _ => {}
        }
    }
    plan
}

/// What to do about the volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Claims to patch to the desired size.
    pub grow: Vec<String>,
    /// The `StorageResized` condition.
    pub condition: (Status, &'static str, String),
}

/// `expandable` answers, for a StorageClass name, whether it allows volume expansion
/// (`None`: the class does not exist or has no name).
pub fn plan(desired: &str, claims: &[Claim], expandable: impl Fn(&str) -> Option<bool>) -> Plan {
    let Some(want) = bytes(desired) else {
        return Plan {
            grow: vec![],
            condition: (
                Status::False,
                "InvalidSize",
                format!("spec.storage.size {desired:?} is not a quantity"),
            ),
        };
    };
    let small: Vec<&Claim> = claims
        .iter()
        .filter(|c| bytes(&c.requested).is_some_and(|have| have < want))
        .collect();
    let growing = claims
        .iter()
        .filter(|c| {
            c.capacity
                .as_deref()
                .and_then(bytes)
                .is_some_and(|have| have < want)
        })
        .count();
    if small.is_empty() && growing > 0 {
        return Plan {
            grow: vec![],
            condition: (
                Status::False,
                "Resizing",
                format!("waiting for {growing} volume(s) to reach {desired}"),
            ),
        };
    }
    if small.is_empty() {
        return Plan {
            grow: vec![],
            condition: (
                Status::True,
                "AtRequestedSize",
                format!("every volume requests {desired}"),
            ),
        };
    }
    let refused: Vec<String> = small
        .iter()
        .filter_map(|c| {
            let class = c.storage_class.as_deref().unwrap_or_default();
            (expandable(class) != Some(true)).then(|| class.to_owned())
        })
        .collect();
    if let Some(class) = refused.first() {
        return Plan {
            grow: vec![],
            condition: (
                Status::False,
                "ExpansionNotSupported",
                format!(
                    "StorageClass {class:?} does not allow volume expansion: the volumes stay at {}; \
                     to grow them, move the cluster to a class with allowVolumeExpansion (restore from a backup)",
                    small[0].requested
                ),
            ),
        };
    }
    Plan {
        grow: small.iter().map(|c| c.name.clone()).collect(),
        condition: (
            Status::False,
            "Resizing",
            format!("growing {} volume(s) to {desired}", small.len()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, size: &str, class: &str) -> Claim {
        Claim {
            name: name.into(),
            requested: size.into(),
            capacity: Some(size.into()),
            storage_class: Some(class.into()),
        }
    }

    fn retained(ordinal: i32, bound: bool, owned: bool) -> Retained {
        Retained {
            name: format!("data-db-{ordinal}"),
            ordinal,
            bound,
            owned,
        }
    }

    #[test]
    fn claims_of_instances_scaled_away_go_once_their_pod_is_gone() {
        let claims = [
            retained(0, true, false),
            retained(1, true, false),
            retained(2, true, false),
        ];
        let p = retention(PvcPolicy::Retain, PvcPolicy::Delete, 1, &claims, |o| o == 1);
        assert_eq!(
            p.delete,
            vec!["data-db-2".to_owned()],
            "db-1 still terminating"
        );
        let p = retention(PvcPolicy::Retain, PvcPolicy::Retain, 1, &claims, |_| false);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn claims_are_owned_by_the_cluster_only_when_deletion_should_take_them() {
        let claims = [
            retained(0, true, false),
            retained(1, false, false),
            retained(2, true, true),
        ];
        let p = retention(PvcPolicy::Delete, PvcPolicy::Retain, 3, &claims, |_| true);
        assert_eq!(
            p.own,
            vec!["data-db-0".to_owned()],
            "unbound data-db-1 waits"
        );
        let p = retention(PvcPolicy::Retain, PvcPolicy::Retain, 3, &claims, |_| true);
        assert_eq!(p.disown, vec!["data-db-2".to_owned()]);
        assert!(p.own.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("500M"), Some(500_000_000));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("1073741824"), Some(1 << 30));
        assert_eq!(bytes("10Xi"), None);
        assert_eq!(bytes(""), None);
    }

    #[test]
    fn volumes_at_the_size_need_nothing() {
        let p = plan("1Gi", &[claim("data-db-0", "1024Mi", "fast")], |_| None);
        assert!(p.grow.is_empty());
        assert_eq!(p.condition.0, Status::True);
    }

    #[test]
    fn a_class_without_expansion_is_refused_with_its_name() {
        let p = plan("2Gi", &[claim("data-db-0", "1Gi", "local-path")], |c| {
            Some(c != "local-path")
        });
        assert!(p.grow.is_empty());
        assert_eq!(p.condition.1, "ExpansionNotSupported");
        assert!(
            p.condition.2.contains("\"local-path\""),
            "{}",
            p.condition.2
        );
    }

    #[test]
    fn an_expandable_class_grows_only_the_small_claims() {
        let claims = [
            claim("data-db-0", "2Gi", "ssd"),
            claim("data-db-1", "1Gi", "ssd"),
        ];
        let p = plan("2Gi", &claims, |_| Some(true));
        assert_eq!(p.grow, vec!["data-db-1".to_owned()]);
        assert_eq!(p.condition.1, "Resizing");
        // Patched, but the volume has not grown yet.
        let mut patched = claims[1].clone();
        patched.requested = "2Gi".into();
        let p = plan("2Gi", &[claims[0].clone(), patched], |_| Some(true));
        assert!(p.grow.is_empty());
        assert_eq!(p.condition.1, "Resizing");
        assert!(
            p.condition.2.contains("waiting for 1 volume"),
            "{}",
            p.condition.2
        );
    }
}
