//! The results section of docs/reliability.md from the chaos tests' rows (`just chaos`: each
//! test appends one JSON line per injected fault). Pure, so it renders again from the file.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::model::Summary;

const BEGIN: &str = "<!-- chaos:begin -->";
const END: &str = "<!-- chaos:end -->";

/// One injected fault, as `tests/e2e/chaos.rs` records it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Row {
    pub fault: String,
    pub injected: String,
    pub recovered_secs: f64,
    pub acknowledged: usize,
    pub lost: usize,
    pub note: String,
}

pub fn load(path: &Path) -> Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), n + 1))
        })
        .collect()
}

/// A summary per fault (how often, recovery, writes acknowledged and lost), then every row;
/// `run` says how they were made (the command, the date).
pub fn render(rows: &[Row], run: &str) -> String {
    let mut by_fault: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_fault.entry(&r.fault).or_default().push(r);
    }
    let lost: usize = rows.iter().map(|r| r.lost).sum();
    let acknowledged: usize = rows.iter().map(|r| r.acknowledged).sum();
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Last run: {run}\n");
    let _ = writeln!(
        s,
        "{} faults injected, {acknowledged} writes acknowledged under them, **{lost} lost**{}.\n",
        rows.len(),
        if lost == 0 { "" } else { " — a defect" }
    );
    let _ = writeln!(
        s,
        "| fault | injected | recovered in (median, min–max) | acknowledged | lost |\n|---|---|---|---|---|"
    );
    for (fault, rs) in &by_fault {
        let recovered = Summary::of(rs.iter().map(|r| r.recovered_secs))
            .map_or("—".to_owned(), |m| {
                format!("{:.1} s ({:.1}–{:.1})", m.median, m.min, m.max)
            });
        let _ = writeln!(
            s,
            "| {fault} | {} × | {recovered} | {} | {} |",
            rs.len(),
            rs.iter().map(|r| r.acknowledged).sum::<usize>(),
            rs.iter().map(|r| r.lost).sum::<usize>()
        );
    }
    let _ = writeln!(
        s,
        "\nEvery fault:\n\n| fault | where | recovered | acknowledged | lost | what happened |\n|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {} | {} | {} |",
            r.fault, r.injected, r.recovered_secs, r.acknowledged, r.lost, r.note
        );
    }
    let _ = writeln!(s, "{END}");
    s
}

pub fn splice(page: &str, section: &str) -> String {
    crate::report::splice(page, section, BEGIN, END)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fault: &str, secs: f64, lost: usize) -> Row {
        Row {
            fault: fault.into(),
            injected: "somewhere".into(),
            recovered_secs: secs,
            acknowledged: 100,
            lost,
            note: "n".into(),
        }
    }

    #[test]
    fn faults_are_summed_up_and_a_lost_write_is_called_a_defect() {
        let rows = [
            row("manager SIGKILLed", 20.0, 0),
            row("manager SIGKILLed", 30.0, 0),
            row("partition", 25.0, 0),
        ];
        let s = render(&rows, "today");
        assert!(s.contains("3 faults injected, 300 writes acknowledged under them, **0 lost**."));
        assert!(s.contains("| manager SIGKILLed | 2 × | 25.0 s (20.0–30.0) | 200 | 0 |"));
        assert!(s.contains("| partition | somewhere | 25.0 s | 100 | 0 | n |"));
        let s = render(&[row("partition", 25.0, 2)], "today");
        assert!(s.contains("**2 lost** — a defect"));
    }

    #[test]
    fn the_section_replaces_the_last_one() {
        let page = format!("# Reliability\n\nprose\n\n{BEGIN}\nold\n{END}\n\nmore prose\n");
        let out = splice(&page, &render(&[row("partition", 1.0, 0)], "today"));
        assert!(!out.contains("old") && out.contains("prose") && out.contains("more prose"));
        assert_eq!(out.matches(BEGIN).count(), 1);
    }
}
