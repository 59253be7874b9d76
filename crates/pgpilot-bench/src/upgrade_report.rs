//! The upgrade section of docs/benchmarks.md from [`UpgradeResults`]: pure, so it can be
//! rendered again from the JSON.

use std::fmt::Write;

use crate::model::Summary;
use crate::upgrade::{MinorRun, UpgradeResults};

/// A minor upgrade's write gap: under this many seconds (a switchover's target).
pub const MINOR_GAP_TARGET_S: f64 = 3.0;
/// A major upgrade's write downtime: at most this multiple of the raw pg_upgrade, plus one
/// restart.
pub const MAJOR_FACTOR: f64 = 1.5;

pub const BEGIN: &str = "<!-- upgrade:begin -->";
pub const END: &str = "<!-- upgrade:end -->";

fn secs(s: Option<Summary>) -> String {
    s.map_or("—".into(), |s| {
        format!("{:.1} s ({:.1}–{:.1}, n={})", s.median, s.min, s.max, s.n)
    })
}

/// A run's replication method; runs before it was recorded used the example's.
fn method(m: &str) -> &str {
    if m.is_empty() { "Quorum" } else { m }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

pub fn render(r: &UpgradeResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{BEGIN}");
    let _ = writeln!(o, "## Upgrades (`just bench-upgrade`)\n");
    let _ = writeln!(
        o,
        "Measured {} on the node cluster (load {} at the start, {} at the end). A writer inserts \
         through `-rw` every 50 ms (1 s timeouts, reconnecting after any error); a gap is the \
         longest time between two acknowledged inserts from the change of the spec on.\n",
        r.date, r.load_start, r.load_end
    );
    let _ = writeln!(o, "### Minor: 15.18 → 15.20, three instances\n");
    // One column per synchronous replication method measured (older runs recorded none: the
    // example's, Quorum).
    let mut methods: Vec<&str> = vec![];
    for m in r.minor.iter().map(|m| method(&m.method)) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let of = |m: &str, f: fn(&MinorRun) -> f64| {
        Summary::of(r.minor.iter().filter(|x| method(&x.method) == m).map(f))
    };
    let _ = writeln!(
        o,
        "| measure | {} |\n|---|{}",
        methods
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(methods.len().max(1))
    );
    let row = |o: &mut String, label: &str, cell: &dyn Fn(&str) -> String| {
        let cells: Vec<String> = methods.iter().map(|m| cell(m)).collect();
        let _ = writeln!(o, "| {label} | {} |", cells.join(" | "));
    };
    row(&mut o, "spec changed → PostgresUpgrade Succeeded", &|m| {
        secs(of(m, |x| x.total_seconds))
    });
    row(&mut o, "write gap during the upgrade", &|m| {
        secs(of(m, |x| x.write_gap_seconds))
    });
    row(
        &mut o,
        "baseline: write gap of a switchover (to a named synchronous standby, as pgpilot does) of the same cluster, same run",
        &|m| secs(of(m, |x| x.switchover_gap_seconds)),
    );
    row(
        &mut o,
        &format!("target: gap < {MINOR_GAP_TARGET_S} s (worst sample)"),
        &|m| verdict(of(m, |x| x.write_gap_seconds).map(|s| s.max < MINOR_GAP_TARGET_S)).to_owned(),
    );
    let _ = writeln!(
        o,
        "\nThe switchover names its successor (a race among equal replicas can give two of them \
         the leader lock: patroni#3718). Patroni then makes every other member wait 2 s before it \
         follows the new primary (`time.sleep(2)` for the others, and for the old primary after \
         it released the lock). Under `Quorum`, the new primary keeps \
         `synchronous_standby_names` through the promotion, so its first commits wait those 2 s \
         for a standby; under `Priority` (with `mode: Preferred`) they commit at once and a \
         standby is named when one follows."
    );
    if let Some(last) = r.minor.last() {
        timeline(&mut o, "the minor upgrade", &last.timeline);
    }
    let _ = writeln!(o);

    let _ = writeln!(
        o,
        "### Major: 15.20 → 17 (`pg_upgrade --link`), {} instance(s), pgbench scale {} ({:.0} MB)\n",
        r.instances,
        r.scale,
        r.database_bytes as f64 / 1e6
    );
    let downtime = Summary::of(r.major.iter().map(|m| m.write_downtime_seconds));
    let allowance = Summary::of(r.raw.iter().map(|raw| raw.allowance()));
    let _ = writeln!(o, "| measure | value |\n|---|---|");
    let _ = writeln!(
        o,
        "| spec changed → PostgresUpgrade Succeeded (replicas cloned again, statistics rebuilt) | {} |",
        secs(Summary::of(r.major.iter().map(|m| m.total_seconds)))
    );
    let _ = writeln!(o, "| write downtime | {} |", secs(downtime));
    let mut names: Vec<&String> = r.major.iter().flat_map(|m| m.steps.keys()).collect();
    names.sort();
    names.dedup();
    for step in [
        "prepare",
        "stop",
        "pg-upgrade",
        "start-primary",
        "reclone-replicas",
        "finish",
    ] {
        if names.iter().any(|n| n.as_str() == step) {
            let _ = writeln!(
                o,
                "| step `{step}` (whole seconds) | {} |",
                secs(Summary::of(
                    r.major.iter().filter_map(|m| m.steps.get(step).copied())
                ))
            );
        }
    }
    let _ = writeln!(
        o,
        "| baseline: `initdb` by hand, same data, same images | {} |",
        secs(Summary::of(r.raw.iter().map(|x| x.initdb_seconds)))
    );
    let _ = writeln!(
        o,
        "| baseline: `pg_upgrade --link` by hand | {} |",
        secs(Summary::of(r.raw.iter().map(|x| x.pg_upgrade_seconds)))
    );
    let _ = writeln!(
        o,
        "| baseline: restart of a one-instance cluster (pod deleted → writes again) | {} |",
        secs(Summary::of(r.raw.iter().map(|x| x.restart_seconds)))
    );
    let _ = writeln!(
        o,
        "| target: downtime ≤ {MAJOR_FACTOR} × (initdb + pg_upgrade) + one restart = {} | {} |",
        secs(allowance),
        verdict(match (downtime, allowance) {
            (Some(d), Some(a)) => Some(d.median <= a.median),
            _ => None,
        })
    );
    if let Some(last) = r.major.last() {
        timeline(&mut o, "the major upgrade", &last.timeline);
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

/// Where the time of `what` went: its last sample's events in order.
fn timeline(o: &mut String, what: &str, events: &std::collections::BTreeMap<String, f64>) {
    if events.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nWhere the time of {what} goes (the last sample; seconds after the spec changed; \
         steps and the Job's containers in whole seconds):\n"
    );
    let _ = writeln!(o, "| +s | event |\n|---|---|");
    let mut sorted: Vec<_> = events.iter().collect();
    sorted.sort_by(|a, b| a.1.total_cmp(b.1));
    for (event, t) in sorted {
        let _ = writeln!(o, "| {t:.1} | {event} |");
    }
}

pub fn splice(page: &str, section: &str) -> String {
    crate::report::splice(page, section, BEGIN, END)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::{MajorRun, RawRun};

    #[test]
    fn the_section_gives_the_verdicts_against_the_baselines_of_the_same_run() {
        let r = UpgradeResults {
            minor: vec![
                MinorRun {
                    method: String::new(),
                    total_seconds: 60.0,
                    write_gap_seconds: 3.3,
                    switchover_gap_seconds: 3.3,
                    timeline: Default::default(),
                    load1: 1.0,
                },
                MinorRun {
                    method: "Priority".into(),
                    total_seconds: 60.0,
                    write_gap_seconds: 1.5,
                    switchover_gap_seconds: 1.4,
                    timeline: Default::default(),
                    load1: 1.0,
                },
                MinorRun {
                    method: "Quorum".into(),
                    total_seconds: 60.0,
                    write_gap_seconds: 3.2,
                    switchover_gap_seconds: 3.2,
                    timeline: Default::default(),
                    load1: 1.0,
                },
            ],
            major: vec![MajorRun {
                total_seconds: 120.0,
                write_downtime_seconds: 30.0,
                steps: [("pg-upgrade".to_owned(), 12.0)].into(),
                timeline: [("step stop start".to_owned(), 1.0)].into(),
                load1: 1.0,
            }],
            raw: vec![RawRun {
                initdb_seconds: 2.0,
                pg_upgrade_seconds: 8.0,
                restart_seconds: 10.0,
                load1: 1.0,
            }],
            ..Default::default()
        };
        let page = render(&r);
        assert!(page.starts_with(BEGIN) && page.trim_end().ends_with(END));
        // 30 s against 1.5 × 10 s + 10 s = 25 s.
        assert!(
            page.contains("= 25.0 s") && page.contains("**missed**"),
            "{page}"
        );
        // One column per method; a run without one was the example's, Quorum.
        assert!(
            page.contains("| measure | `Quorum` | `Priority` |\n|---|---|---|\n"),
            "{page}"
        );
        assert!(page.contains("| 3.2 s (3.2–3.3, n=2) | 1.5 s"), "{page}");
        assert!(
            page.contains("gap < 3 s (worst sample) | **missed** | **met** |"),
            "{page}"
        );
        let spliced = splice(
            "# Benchmarks\n\nbefore\n<!-- upgrade:begin -->stale section<!-- upgrade:end -->\nafter\n",
            &page,
        );
        assert!(
            spliced.contains("before")
                && spliced.contains("after")
                && !spliced.contains("stale section")
        );
    }
}
