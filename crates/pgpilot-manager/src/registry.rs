//! The controllers built into this manager. A controller crate joins with one line here.

use pgpilot_toolkit::runtime::ControllerRef;

/// Every controller this build can run, in start order.
pub fn available() -> Vec<ControllerRef> {
    vec![]
}

/// The controllers to run for the names given on the command line (all available when
/// none are given). A known controller that this build lacks is an error, not a silent skip.
pub fn select(names: &[String]) -> Result<Vec<ControllerRef>, String> {
    let available = available();
    if names.is_empty() {
        return Ok(available);
    }
    names
        .iter()
        .map(|name| {
            available.iter().find(|c| c.name() == name).cloned().ok_or_else(|| {
                let have: Vec<&str> = available.iter().map(|c| c.name()).collect();
                format!(
                    "controller '{name}' is not built into this pgpilot-manager (available: {})",
                    if have.is_empty() { "none yet".to_owned() } else { have.join(", ") }
                )
            })
        })
        .collect()
}
