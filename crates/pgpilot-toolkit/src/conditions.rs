//! metav1.Condition bookkeeping: `lastTransitionTime` moves only when the status flips,
//! `observedGeneration` always says which spec the condition describes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// A condition to record: everything but the transition time, which [`set`] decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub type_: &'a str,
    pub status: Status,
    /// CamelCase, machine-readable.
    pub reason: &'a str,
    /// For people; never a secret.
    pub message: String,
    pub observed_generation: Option<i64>,
}

/// Records `update` in `conditions`. Returns whether anything changed, so a caller can skip
/// a status write when nothing did.
pub fn set(conditions: &mut Vec<Condition>, update: Update<'_>, now: Time) -> bool {
    let Update {
        type_,
        status,
        reason,
        message,
        observed_generation,
    } = update;
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let changed_status = existing.status != status.as_str();
            let changed = changed_status
                || existing.reason != reason
                || existing.message != message
                || existing.observed_generation != observed_generation;
            if changed_status {
                existing.status = status.as_str().to_owned();
                existing.last_transition_time = now;
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.as_str().to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// kstatus' "abnormal-true" condition, read by Flux, Argo CD's health checks and
/// `kubectl wait`: `True` while the object cannot go on without a change from its user
/// (kstatus: `Failed`); absent otherwise.
pub const STALLED: &str = "Stalled";

/// Sets [`STALLED`] to `True` with `stalled`'s reason and message, or removes it when `None`.
/// Returns whether anything changed.
pub fn set_stalled(
    conditions: &mut Vec<Condition>,
    stalled: Option<(&str, String)>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    match stalled {
        Some((reason, message)) => set(
            conditions,
            Update {
                type_: STALLED,
                status: Status::True,
                reason,
                message,
                observed_generation,
            },
            now,
        ),
        None => {
            let before = conditions.len();
            conditions.retain(|c| c.type_ != STALLED);
            conditions.len() != before
        }
    }
}

/// The condition of `type_`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == Status::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn ready(status: Status, reason: &str, generation: i64) -> Update<'_> {
        Update {
            type_: "Ready",
            status,
            reason,
            message: format!("{reason} message"),
            observed_generation: Some(generation),
        }
    }

    #[test]
    fn stalled_is_set_true_and_removed_when_the_object_moves_again() {
        let mut conds = vec![];
        assert!(set_stalled(
            &mut conds,
            Some(("InvalidSpec", "bad".into())),
            Some(2),
            at(100)
        ));
        assert!(is_true(&conds, STALLED));
        assert!(!set_stalled(
            &mut conds,
            Some(("InvalidSpec", "bad".into())),
            Some(2),
            at(200)
        ));
        assert!(set_stalled(&mut conds, None, Some(3), at(300)));
        assert!(conds.is_empty());
        assert!(!set_stalled(&mut conds, None, Some(3), at(300)));
    }

    #[test]
    fn a_new_condition_is_added_with_the_current_time() {
        let mut conds = vec![];
        assert!(set(
            &mut conds,
            ready(Status::False, "Creating", 1),
            at(100)
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[0].last_transition_time, at(100));
        assert_eq!(conds[0].observed_generation, Some(1));
    }

    #[test]
    fn the_same_condition_again_changes_nothing() {
        let mut conds = vec![];
        set(&mut conds, ready(Status::True, "AllReady", 1), at(100));
        let before = conds.clone();
        assert!(!set(
            &mut conds,
            ready(Status::True, "AllReady", 1),
            at(200)
        ));
        assert_eq!(conds, before);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = vec![];
        set(&mut conds, ready(Status::False, "Creating", 1), at(100));
        assert!(set(
            &mut conds,
            ready(Status::False, "WaitingForReplicas", 1),
            at(200)
        ));
        assert_eq!(
            conds[0].last_transition_time,
            at(100),
            "same status keeps the time"
        );
        assert_eq!(conds[0].reason, "WaitingForReplicas");
        assert!(set(&mut conds, ready(Status::True, "AllReady", 1), at(300)));
        assert_eq!(conds[0].last_transition_time, at(300));
    }

    #[test]
    fn a_new_generation_is_a_change_even_with_the_same_status() {
        let mut conds = vec![];
        set(&mut conds, ready(Status::True, "AllReady", 1), at(100));
        assert!(set(&mut conds, ready(Status::True, "AllReady", 2), at(200)));
        assert_eq!(conds[0].observed_generation, Some(2));
        assert_eq!(conds[0].last_transition_time, at(100));
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conds = vec![];
        set(&mut conds, ready(Status::True, "AllReady", 1), at(100));
        let degraded = Update {
            type_: "Degraded",
            status: Status::False,
            reason: "Healthy",
            message: String::new(),
            observed_generation: Some(1),
        };
        set(&mut conds, degraded, at(200));
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, "Ready"));
        assert!(!is_true(&conds, "Degraded"));
        assert!(!is_true(&conds, "Progressing"));
    }
}
