//! The rotation state machine, pure: from what is observed — the rotation record the Secret
//! carries, the consumers' rollout, the database's view of the logins — to the one next step.
//!
//! A rotation is recorded exactly once, in the same write as the new value (the *flip*): the
//! Secret's annotations say how many rotations it had, when the last one flipped, which
//! `rotate-now` request it answered and (AlternatingUsers) the login it left. Everything
//! after the flip is re-derived from observation, so a manager that dies at any point resumes
//! where it stopped and never flips twice. A rotation is complete once the status counts it
//! (`rotations`, the count of completed ones, reaches the Secret's); until then it is in
//! flight and no other one starts.

use pgpilot_api::rotation::RolloutState;

/// Condition types this controller owns on a SecretRotation.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";

/// What a Secret says of its rotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub count: i64,
    /// Unix seconds of the last flip.
    pub rotated_at: Option<i64>,
    /// The `rotate-now` request the last flip answered.
    pub request: Option<String>,
    /// AlternatingUsers: the login the last flip left.
    pub previous_user: Option<String>,
}

/// What is rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Keys of a Secret.
    Secret,
    /// A role's own password.
    InPlace,
    /// The replication user's own password, set on the role only once every Patroni loaded
    /// it: a running standby keeps streaming with the old one, and its next connection
    /// (from the passfile Patroni rewrote) needs the new one.
    Replication,
    /// Two login alternates of a role, in turn.
    Alternating,
}

/// A login as the database sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginSeen {
    /// It exists, may log in and has a password.
    pub can_login: bool,
    /// Its stored verifier is the Secret's password (and, for an alternate, it acts as the
    /// role).
    pub matches_secret: bool,
}

/// Everything the plan looks at.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: i64,
    pub kind: Kind,
    pub suspend: bool,
    /// Why no step can be taken (reason, message): a conflict, an invalid spec, a target that
    /// is not there yet.
    pub blocked: Option<(&'static str, String)>,
    pub record: Record,
    /// Completed rotations (status `rotations`).
    pub completed: i64,
    /// When the next rotation is due (`None`: never, e.g. a schedule with no next run).
    pub due: Option<i64>,
    /// The SecretRotation's `rotate-now` annotation.
    pub request: Option<String>,
    /// Secret targets: the Secret or one of the listed keys is missing.
    pub incomplete: bool,
    /// The consumers' rollout for the Secret as it is (`Pending`, `Rolling`, `Rolled` or
    /// `NotFound`).
    pub consumers: Vec<RolloutState>,
    /// Seconds.
    pub grace: i64,
    pub wait_for_rollout: bool,
    /// Role targets, observed while a rotation is in flight: the login the Secret names.
    pub active: Option<LoginSeen>,
    /// AlternatingUsers, while in flight: the login the last flip left.
    pub previous: Option<LoginSeen>,
    /// The superuser and replication roles: instances whose Patroni has not loaded the
    /// Secret as it is yet.
    pub patroni_pending: usize,
}

/// Why a rotation starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Its time came.
    Due,
    /// Someone asked with the `rotate-now` annotation.
    Requested,
    /// The Secret, or a key it must hold, does not exist.
    Missing,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Due => "due",
            Why::Requested => "requested",
            Why::Missing => "missing",
        }
    }
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing can be done until something changes.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// New values, written to the Secret in one write with the rotation record (role targets
    /// prepare the login first: the idle alternate gets the new password).
    Rotate(Why),
    /// Make the login the Secret names work with the Secret's password (a flip whose SQL did
    /// not run, or was undone).
    SyncLogin,
    /// Ask the consumers that have not rolled for the Secret as it is to roll.
    RollConsumers,
    /// Invalidate the login the flip left.
    Revoke,
    /// In flight; the next look is at `until` (seconds) or when something changes.
    Wait {
        until: Option<i64>,
        reason: &'static str,
        message: String,
    },
    /// Record the rotation as complete.
    Complete,
    /// Nothing in flight and nothing due.
    Idle { next_due: Option<i64> },
}

/// Whether a rotation is in flight: flipped, not yet complete. Counted, not timed: two flips
/// may fall in one second.
pub fn in_flight(record: &Record, completed: i64) -> bool {
    record.rotated_at.is_some() && record.count > completed
}

/// The one next step.
pub fn plan(f: &Facts) -> Step {
    if let Some((reason, message)) = &f.blocked {
        return Step::Blocked {
            reason,
            message: message.clone(),
        };
    }
    if in_flight(&f.record, f.completed) {
        return finish(f);
    }
    if f.suspend {
        return Step::Idle { next_due: None };
    }
    if f.incomplete {
        return Step::Rotate(Why::Missing);
    }
    if f.request.is_some() && f.request != f.record.request {
        return Step::Rotate(Why::Requested);
    }
    match f.due {
        Some(due) if due <= f.now => Step::Rotate(Why::Due),
        due => Step::Idle { next_due: due },
    }
}

/// The steps after a flip, in order: the login works, consumers roll, the previous login goes
/// once the grace period is over (and, if asked, every consumer rolled), then complete.
fn finish(f: &Facts) -> Step {
    let flipped = f.record.rotated_at.unwrap_or(f.now);
    if f.kind == Kind::Replication && f.patroni_pending > 0 {
        return waiting_for_patroni(f.patroni_pending);
    }
    if f.kind != Kind::Secret && !f.active.is_some_and(|a| a.can_login && a.matches_secret) {
        return Step::SyncLogin;
    }
    if f.consumers.contains(&RolloutState::Pending) {
        return Step::RollConsumers;
    }
    let rolling = f
        .consumers
        .iter()
        .filter(|c| !matches!(c, RolloutState::Rolled | RolloutState::NotFound))
        .count();
    let grace_over = grace_over(flipped, f.grace);
    let stalled = rolling > 0 && f.now >= grace_over;
    if f.kind == Kind::Alternating && f.previous.is_some_and(|p| p.can_login) {
        if f.now < grace_over {
            return Step::Wait {
                until: Some(grace_over),
                reason: "GracePeriod",
                message: format!(
                    "the previous login {} keeps working until the grace period ends",
                    f.record.previous_user.as_deref().unwrap_or("?")
                ),
            };
        }
        if rolling == 0 || !f.wait_for_rollout {
            return Step::Revoke;
        }
    }
    if f.patroni_pending > 0 {
        return waiting_for_patroni(f.patroni_pending);
    }
    if rolling > 0 {
        return Step::Wait {
            until: None,
            reason: if stalled {
                "Stalled"
            } else {
                "RollingConsumers"
            },
            message: format!(
                "{rolling} of {} consumer(s) still rolling{}",
                f.consumers.len(),
                if stalled {
                    " after the grace period"
                } else {
                    ""
                }
            ),
        };
    }
    Step::Complete
}

fn waiting_for_patroni(pending: usize) -> Step {
    Step::Wait {
        until: None,
        reason: "WaitingForPatroni",
        message: format!(
            "{pending} instance(s) have not loaded the new password yet (the cluster controller reloads Patroni once the kubelet has updated its credentials file)"
        ),
    }
}

/// When the grace period after a flip at `flipped` ends. The record holds whole seconds (the
/// flip happened within the one it names): the grace period counts from the next, so it is
/// never cut short.
fn grace_over(flipped: i64, grace: i64) -> i64 {
    flipped.saturating_add(grace).saturating_add(1)
}

/// A consumer's state for the status: a rollout that outlasts the grace period is `Stalled`.
pub fn shown(state: RolloutState, f: &Facts) -> RolloutState {
    let in_flight = in_flight(&f.record, f.completed);
    let over = f
        .record
        .rotated_at
        .is_some_and(|at| f.now >= grace_over(at, f.grace));
    match state {
        RolloutState::Rolling if in_flight && over => RolloutState::Stalled,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RolloutState::*;

    const T: i64 = 1_796_515_200;

    fn idle(kind: Kind) -> Facts {
        Facts {
            now: T,
            kind,
            suspend: false,
            blocked: None,
            record: Record {
                count: 1,
                rotated_at: Some(T - 3600),
                request: None,
                previous_user: None,
            },
            completed: 1,
            due: Some(T + 3600),
            request: None,
            incomplete: false,
            consumers: vec![Rolled],
            grace: 600,
            wait_for_rollout: true,
            active: None,
            previous: None,
            patroni_pending: 0,
        }
    }

    /// Just flipped from `app_a` to `app_b`, consumers not yet asked to roll.
    fn flipped(kind: Kind) -> Facts {
        let mut f = idle(kind);
        f.record = Record {
            count: 2,
            rotated_at: Some(T),
            request: None,
            previous_user: (kind == Kind::Alternating).then(|| "app_a".to_owned()),
        };
        f.consumers = vec![Pending, Pending];
        f.active = Some(LoginSeen {
            can_login: true,
            matches_secret: true,
        });
        f.previous = (kind == Kind::Alternating).then_some(LoginSeen {
            can_login: true,
            matches_secret: false,
        });
        f
    }

    #[test]
    fn nothing_happens_before_the_due_time_and_a_rotation_starts_at_it() {
        let mut f = idle(Kind::Secret);
        assert_eq!(
            plan(&f),
            Step::Idle {
                next_due: Some(T + 3600)
            }
        );
        f.now = T + 3600;
        assert_eq!(plan(&f), Step::Rotate(Why::Due));
        f.due = None;
        assert_eq!(plan(&f), Step::Idle { next_due: None });
    }

    #[test]
    fn a_new_request_rotates_now_once() {
        let mut f = idle(Kind::InPlace);
        f.request = Some("ticket-1".into());
        assert_eq!(plan(&f), Step::Rotate(Why::Requested));
        // The flip recorded the request it answered: the same annotation asks nothing more.
        f.record.request = Some("ticket-1".into());
        assert_eq!(
            plan(&f),
            Step::Idle {
                next_due: Some(T + 3600)
            }
        );
    }

    #[test]
    fn a_missing_secret_or_key_is_made_at_once_unless_suspended() {
        let mut f = idle(Kind::Secret);
        f.incomplete = true;
        assert_eq!(plan(&f), Step::Rotate(Why::Missing));
        f.suspend = true;
        assert_eq!(plan(&f), Step::Idle { next_due: None });
    }

    #[test]
    fn suspend_starts_nothing_but_finishes_what_is_in_flight() {
        let mut f = idle(Kind::Secret);
        f.suspend = true;
        f.now = T + 7200;
        f.request = Some("now".into());
        assert_eq!(plan(&f), Step::Idle { next_due: None });
        let mut f = flipped(Kind::Alternating);
        f.suspend = true;
        assert_eq!(plan(&f), Step::RollConsumers);
    }

    #[test]
    fn a_blocked_rotation_takes_no_step() {
        let mut f = flipped(Kind::Alternating);
        f.blocked = Some((
            "Conflict",
            "Secret s is rotated by SecretRotation other".into(),
        ));
        assert!(matches!(
            plan(&f),
            Step::Blocked {
                reason: "Conflict",
                ..
            }
        ));
    }

    #[test]
    fn alternating_users_roll_wait_for_grace_and_rollout_then_revoke_then_complete() {
        let mut f = flipped(Kind::Alternating);
        assert_eq!(plan(&f), Step::RollConsumers);
        f.consumers = vec![Rolling, Rolled];
        assert!(matches!(
            plan(&f),
            Step::Wait { until: Some(u), reason: "GracePeriod", .. } if u == T + 601
        ));
        f.now = T + 601;
        // Grace over, one consumer still runs old pods: never revoke under it.
        assert!(matches!(
            plan(&f),
            Step::Wait {
                until: None,
                reason: "Stalled",
                ..
            }
        ));
        f.consumers = vec![Rolled, NotFound];
        assert_eq!(plan(&f), Step::Revoke);
        f.previous = Some(LoginSeen {
            can_login: false,
            matches_secret: false,
        });
        assert_eq!(plan(&f), Step::Complete);
    }

    #[test]
    fn without_wait_for_rollout_the_previous_login_goes_when_the_grace_period_ends() {
        let mut f = flipped(Kind::Alternating);
        f.wait_for_rollout = false;
        f.consumers = vec![Rolling];
        f.now = T + 601;
        assert_eq!(plan(&f), Step::Revoke);
        f.previous = Some(LoginSeen {
            can_login: false,
            matches_secret: false,
        });
        assert!(matches!(
            plan(&f),
            Step::Wait {
                reason: "Stalled",
                ..
            }
        ));
    }

    #[test]
    fn a_flip_whose_sql_did_not_run_is_repaired_first() {
        // Crash point: Secret written, ALTER ROLE not (InPlace), or the alternate changed by
        // hand since.
        let mut f = flipped(Kind::InPlace);
        f.active = Some(LoginSeen {
            can_login: true,
            matches_secret: false,
        });
        assert_eq!(plan(&f), Step::SyncLogin);
        f.active = None;
        assert_eq!(plan(&f), Step::SyncLogin, "a login not there at all");
        // A Secret target has no login.
        let mut f = flipped(Kind::Secret);
        f.active = None;
        assert_eq!(plan(&f), Step::RollConsumers);
    }

    #[test]
    fn every_crash_point_after_the_flip_resumes_without_a_second_flip() {
        // Whatever was done after the flip, the record says a rotation is in flight, so the
        // plan never answers Rotate, however late, and whatever is asked.
        let gone = Some(LoginSeen {
            can_login: false,
            matches_secret: false,
        });
        let stages = [
            (
                vec![Pending, Pending],
                Some(LoginSeen {
                    can_login: true,
                    matches_secret: false,
                }),
            ),
            (vec![Rolling, Rolling], None),
            (vec![Rolled, Rolled], None),
            (vec![Rolled, Rolled], gone),
        ];
        for kind in [Kind::Secret, Kind::InPlace, Kind::Alternating] {
            for (consumers, previous) in &stages {
                let mut f = flipped(kind);
                f.consumers = consumers.clone();
                if previous.is_some() {
                    f.previous = *previous;
                }
                f.now = T + 86_400;
                f.due = Some(T);
                f.request = Some("again".into());
                assert!(
                    !matches!(plan(&f), Step::Rotate(_)),
                    "{kind:?}: {:?}",
                    plan(&f)
                );
            }
        }
        // And once complete, the next one is due again.
        let mut f = flipped(Kind::InPlace);
        f.completed = f.record.count;
        f.due = Some(T);
        assert_eq!(plan(&f), Step::Rotate(Why::Due));
    }

    #[test]
    fn a_flip_in_the_second_the_last_one_completed_is_still_in_flight() {
        let mut f = flipped(Kind::Secret);
        f.record.rotated_at = Some(T - 3600);
        assert_eq!(plan(&f), Step::RollConsumers);
    }

    #[test]
    fn in_place_and_secret_rotations_complete_when_consumers_rolled() {
        for kind in [Kind::InPlace, Kind::Secret] {
            let mut f = flipped(kind);
            f.consumers = vec![Rolled, Rolling];
            assert!(matches!(
                plan(&f),
                Step::Wait {
                    reason: "RollingConsumers",
                    ..
                }
            ));
            f.consumers = vec![Rolled, Rolled];
            assert_eq!(plan(&f), Step::Complete);
            f.consumers = vec![];
            assert_eq!(plan(&f), Step::Complete, "no consumers");
        }
    }

    #[test]
    fn a_superuser_rotation_completes_only_once_every_patroni_loaded_it() {
        let mut f = flipped(Kind::InPlace);
        f.consumers = vec![];
        f.patroni_pending = 2;
        assert!(matches!(
            plan(&f),
            Step::Wait {
                reason: "WaitingForPatroni",
                ..
            }
        ));
        f.patroni_pending = 0;
        assert_eq!(plan(&f), Step::Complete);
    }

    #[test]
    fn the_replication_password_is_set_on_the_role_only_once_every_patroni_loaded_it() {
        let mut f = flipped(Kind::Replication);
        f.consumers = vec![];
        f.active = Some(LoginSeen {
            can_login: true,
            matches_secret: false,
        });
        f.patroni_pending = 1;
        assert!(
            matches!(
                plan(&f),
                Step::Wait {
                    reason: "WaitingForPatroni",
                    ..
                }
            ),
            "a standby still on the old password keeps reconnecting with it"
        );
        f.patroni_pending = 0;
        assert_eq!(plan(&f), Step::SyncLogin);
        f.active = Some(LoginSeen {
            can_login: true,
            matches_secret: true,
        });
        assert_eq!(plan(&f), Step::Complete);
    }

    #[test]
    fn a_rollout_past_the_grace_period_shows_as_stalled() {
        let mut f = flipped(Kind::InPlace);
        assert_eq!(shown(Rolling, &f), Rolling);
        f.now = T + 601;
        assert_eq!(shown(Rolling, &f), Stalled);
        assert_eq!(shown(Rolled, &f), Rolled);
        f.completed = f.record.count;
        assert_eq!(shown(Rolling, &f), Rolling, "not in flight: no deadline");
    }
}
