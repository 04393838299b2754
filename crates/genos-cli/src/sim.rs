//! `genos sim`: plays a cellular-mesh scenario and reports.

use std::path::Path;

use genos::cellmesh::sim::{Scenario, run as run_scenario};

/// Reads (or makes) a scenario, plays it, prints the report, writes SVGs into `out`.
/// With `check`, a goal not met is an error.
pub fn run(
    scenario: Option<&Path>,
    peers: Option<usize>,
    seed: Option<u64>,
    out: Option<&Path>,
    check: bool,
) -> Result<(), String> {
    let mut scenario = match scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            let mut quick = Scenario::default();
            quick.name = "quick".into();
            quick
        }
    };
    if let Some(peers) = peers {
        scenario.peers = peers;
    }
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    scenario.validate().map_err(|e| e.to_string())?;
    let report = run_scenario(&scenario);
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report.to_text());
    }
    if let Some(dir) = out {
        #[allow(clippy::print_stdout)]
        for path in report.write_svgs(dir)? {
            println!("wrote {}", path.display());
        }
    }
    let missed = report.missed_goals();
    if check && !missed.is_empty() {
        return Err(format!("goals not met: {}", missed.join("; ")));
    }
    Ok(())
}
