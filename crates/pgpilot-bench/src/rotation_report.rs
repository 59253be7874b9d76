//! The secret-rotation section of docs/benchmarks.md from [`RotationResults`]: pure, so it can
//! be rendered again from the JSON.

use std::fmt::Write;

use crate::model::Summary;
use crate::rotation::{RotationResults, RotationRun, Window};

pub const BEGIN: &str = "<!-- rotation:begin -->";
pub const END: &str = "<!-- rotation:end -->";

fn secs(s: Option<Summary>) -> String {
    s.map_or("—".into(), |s| {
        format!("{:.2} s ({:.2}–{:.2}, n={})", s.median, s.min, s.max, s.n)
    })
}

fn figure(s: Option<Summary>) -> String {
    s.map_or("—".into(), |s| {
        format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
    })
}

/// One figure of the windows: the baselines', the rotations' and what a rotation adds to the
/// baseline just before it (each a median, min–max).
fn load_row(o: &mut String, what: &str, runs: &[RotationRun], f: impl Fn(&Window) -> Option<f64>) {
    let base = Summary::of(runs.iter().filter_map(|x| f(x.baseline.as_ref()?)));
    let during = Summary::of(runs.iter().filter_map(|x| f(&x.window)));
    let added = Summary::of(
        runs.iter()
            .filter_map(|x| Some(f(&x.window)? - f(x.baseline.as_ref()?)?)),
    );
    let _ = writeln!(
        o,
        "| {what} | {} | {} | {} |",
        figure(base),
        figure(during),
        added.map_or("—".into(), |s| format!(
            "{:+.2} ({:+.2}–{:+.2})",
            s.median, s.min, s.max
        ))
    );
}

pub fn render(r: &RotationResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{BEGIN}");
    let _ = writeln!(o, "## Secret rotation (`just bench-rotation`)\n");
    let _ = writeln!(
        o,
        "Measured {} on the node cluster (load {} at the start, {} at the end). PostgreSQL {}, \
         one instance (the spec above with `instances: 1`, role `app`, database `shop`); a \
         Deployment of {} pgclient pods that each open a new connection for every insert, \
         every 200 ms, with the credentials of Secret `rot-app-credentials` (env); a \
         SecretRotation `AlternatingUsers` with a grace period of {} s and the Deployment as \
         its consumer, asked to rotate with `pgpilot.io/rotate-now` (the request's write is \
         \"due\"). Milestones are looked at every 100 ms.\n",
        r.date,
        r.load_start,
        r.load_end,
        if r.postgres.is_empty() {
            "?"
        } else {
            &r.postgres
        },
        r.clients,
        r.grace_seconds
    );
    let runs = &r.runs;
    let _ = writeln!(o, "| measure | value |\n|---|---|");
    let _ = writeln!(
        o,
        "| due → Secret updated (`pgpilot.io/rotation-count` +1) | {} |",
        secs(Summary::of(runs.iter().map(|x| x.secret_updated_seconds)))
    );
    let _ = writeln!(
        o,
        "| due → consumers rolled (the Deployment's template has the new hash, every pod new and available) | {} |",
        secs(Summary::of(runs.iter().map(|x| x.consumers_rolled_seconds)))
    );
    let _ = writeln!(
        o,
        "| … the SecretRotation's status says `Rolled` | {} |",
        secs(Summary::of(
            runs.iter().filter_map(|x| x.status_rolled_seconds)
        ))
    );
    let _ = writeln!(
        o,
        "| baseline: `kubectl rollout restart deployment/client` → rolled, same Deployment, just before each rotation | {} |",
        secs(Summary::of(runs.iter().filter_map(|x| x.restart_seconds)))
    );
    let _ = writeln!(
        o,
        "| due → previous login revoked (its password gone from `pg_authid`; the grace period is {} s) | {} |",
        r.grace_seconds,
        secs(Summary::of(runs.iter().map(|x| x.login_revoked_seconds)))
    );
    let revoked_after_secret = Summary::of(
        runs.iter()
            .map(|x| x.login_revoked_seconds - x.secret_updated_seconds),
    );
    let _ = writeln!(
        o,
        "| … Secret updated → previous login revoked | {}{} |",
        secs(revoked_after_secret),
        if revoked_after_secret.is_some_and(|s| s.min < r.grace_seconds as f64) {
            " (under the grace period: the controller counts it from `pgpilot.io/rotated-at`, \
             which is written in whole seconds)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "| due → complete (`status.rotations` +1, `Progressing` reason `Idle`) | {} |",
        secs(Summary::of(runs.iter().map(|x| x.complete_seconds)))
    );
    let _ = writeln!(
        o,
        "| logins PostgreSQL refused (`FATAL` lines in the instance's log) during the whole run: baseline, restarts, {} rotation(s) (target 0) | {}: {} |",
        runs.len(),
        r.refused_logins,
        if runs.is_empty() {
            "not measured"
        } else if r.refused_logins == 0 {
            "**met**"
        } else {
            "**missed**"
        }
    );
    let _ = writeln!(
        o,
        "| client inserts that failed (`FAILED` lines in the logs of {} client pods, read before each roll and after it) | {} |",
        r.client_pods_read, r.client_failed
    );

    let _ = writeln!(o, "\n### Each rotation\n");
    let _ = writeln!(
        o,
        "| # | login | Secret | rolled | status `Rolled` | revoked | complete | restart baseline | refused | load (1 min) |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let opt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
    for (k, x) in runs.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {k} | {} → {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {} | {:.2} |",
            x.from_user,
            x.to_user,
            x.secret_updated_seconds,
            x.consumers_rolled_seconds,
            opt(x.status_rolled_seconds),
            x.login_revoked_seconds,
            x.complete_seconds,
            opt(x.restart_seconds),
            x.refused_logins,
            x.load1
        );
    }

    let length = Summary::of(
        runs.iter()
            .filter_map(|x| Some(x.baseline.as_ref()?.seconds)),
    );
    let _ = writeln!(o, "\n### Load on PostgreSQL\n");
    let _ = writeln!(
        o,
        "Before each rotation (once the restart above has settled), a baseline window of {:.0} s \
         with the same clients and the same look-ups every 100 ms, and no rotation; then the \
         rotation's window, from its request until it completed and at least as long. Counters \
         from `pg_stat_database` (all databases; the look-ups' own transactions in both alike), \
         inserts from the table, CPU from the postgres container's cgroup (PostgreSQL and \
         Patroni). The clients' rate follows the machine's load, so what the rotation itself adds \
         shows best beyond the clients' inserts (one session and one transaction each).\n",
        length.map_or(0.0, |s| s.median)
    );
    let _ = writeln!(
        o,
        "| measure | baseline (no rotation) | rotation windows | added by a rotation |\n|---|---|---|---|"
    );
    load_row(&mut o, "window length, s", runs, |w| Some(w.seconds));
    load_row(&mut o, "new sessions per second (`sessions`)", runs, |w| {
        Some(w.per_second(w.sessions as f64))
    });
    load_row(
        &mut o,
        "transactions committed per second (`xact_commit`)",
        runs,
        |w| Some(w.per_second(w.commits as f64)),
    );
    load_row(&mut o, "client inserts per second", runs, |w| {
        Some(w.per_second(w.inserts as f64))
    });
    load_row(
        &mut o,
        "sessions beyond the clients' inserts, per window",
        runs,
        |w| Some((w.sessions - w.inserts) as f64),
    );
    load_row(
        &mut o,
        "transactions beyond the clients' inserts, per second",
        runs,
        |w| Some(w.per_second((w.commits - w.inserts) as f64)),
    );
    load_row(
        &mut o,
        "CPU of the postgres container, s per s",
        runs,
        |w| w.cpu_seconds.map(|c| w.per_second(c)),
    );
    load_row(&mut o, "client backends at most", runs, |w| {
        Some(w.max_backends as f64)
    });
    load_row(&mut o, "longest time without an insert, s", runs, |w| {
        Some(w.longest_insert_gap_seconds)
    });
    // CPU seconds over the rotation's window beyond the baseline's rate just before it.
    let cpu_added = Summary::of(runs.iter().filter_map(|x| {
        let b = x.baseline.as_ref()?;
        Some(x.window.cpu_seconds? - b.per_second(b.cpu_seconds?) * x.window.seconds)
    }));
    if let Some(c) = cpu_added {
        let _ = writeln!(
            o,
            "\nCPU a rotation adds to the postgres container over its window: {:+.2} s \
             ({:+.2}–{:+.2}).",
            c.median, c.min, c.max
        );
    }
    if !r.canary_seen {
        let _ = writeln!(
            o,
            "\nA login refused on purpose before the rotations was **not** found in the \
             instance's log: the count of refused logins above may be blind."
        );
    }
    if !r.refused_lines.is_empty() || !r.client_failed_lines.is_empty() {
        let _ = writeln!(
            o,
            "\nRefused and failed, as logged (at most 10 each):\n\n```"
        );
        for l in r.refused_lines.iter().chain(&r.client_failed_lines) {
            let _ = writeln!(o, "{}", l.trim());
        }
        let _ = writeln!(o, "```");
    }
    if !r.errors.is_empty() {
        let _ = writeln!(o, "\nErrors in this run:\n");
        for e in &r.errors {
            let _ = writeln!(o, "- {}", e.replace('\n', " "));
        }
    }
    let _ = writeln!(o, "{END}");
    o
}

pub fn splice(page: &str, section: &str) -> String {
    crate::report::splice(page, section, BEGIN, END)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::RotationRun;

    fn window(seconds: f64, sessions: i64, cpu: f64) -> Window {
        Window {
            seconds,
            sessions,
            commits: sessions,
            inserts: sessions,
            cpu_seconds: Some(cpu),
            max_backends: 3,
            longest_insert_gap_seconds: 0.3,
        }
    }

    #[test]
    fn the_section_sets_the_rotation_beside_its_baselines_and_replaces_only_itself() {
        let r = RotationResults {
            clients: 2,
            grace_seconds: 30,
            runs: vec![RotationRun {
                from_user: "app".into(),
                to_user: "app_a".into(),
                secret_updated_seconds: 0.4,
                consumers_rolled_seconds: 7.0,
                status_rolled_seconds: Some(7.3),
                login_revoked_seconds: 30.2,
                complete_seconds: 31.2,
                refused_logins: 0,
                restart_seconds: Some(6.5),
                window: window(60.0, 660, 9.0),
                baseline: Some(window(60.0, 600, 6.0)),
                load1: 1.0,
            }],
            canary_seen: true,
            ..Default::default()
        };
        let page = render(&r);
        assert!(page.starts_with(BEGIN) && page.trim_end().ends_with(END));
        assert!(page.contains("## Secret rotation (`just bench-rotation`)"));
        assert!(
            page.contains("1 rotation(s) (target 0) | 0: **met**"),
            "{page}"
        );
        assert!(
            page.contains(
                "| new sessions per second (`sessions`) | 10.00 (10.00–10.00) | 11.00 (11.00–11.00) | +1.00 (+1.00–+1.00) |"
            ),
            "{page}"
        );
        // 9 s during 60 s beside 0.1 s/s: 3 s more.
        assert!(page.contains("over its window: +3.00 s"), "{page}");
        // Revoked 29.8 s after the Secret changed, with a grace period of 30 s.
        assert!(page.contains("under the grace period"), "{page}");
        assert!(!page.contains("not** found"));
        let spliced = splice(
            "# Benchmarks\n\nbefore\n<!-- rotation:begin -->old<!-- rotation:end -->\nafter\n",
            &page,
        );
        assert!(
            spliced.contains("before") && spliced.contains("after") && !spliced.contains("old")
        );
    }
}
