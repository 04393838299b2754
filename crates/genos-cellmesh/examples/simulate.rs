//! Plays a simulation scenario and prints the report: `cargo run --release -p genos-cellmesh
//! --features sim --example simulate -- scenarios/100.toml [OUT_DIR] [--check]` (with
//! OUT_DIR, the SVG histograms, and for small rooms the picture of cells and bridges, are
//! written there; with `--check` the exit status is 1 when a goal is missed).
//! `GENOS_SIM_PROGRESS=1` prints the wall clock every 5 simulated seconds of the warm-up;
//! `GENOS_SIM_DEBUG=1` prints the room's health at each check and what it lacks.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use genos_cellmesh::sim::{Scenario, run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|arg| arg == "--check");
    let mut paths = args.iter().filter(|arg| *arg != "--check");
    let Some(path) = paths.next() else {
        eprintln!("usage: simulate SCENARIO.toml [OUT_DIR] [--check]");
        std::process::exit(2);
    };
    let scenario = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| Scenario::from_toml(&text).map_err(|e| e.to_string()))
    {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("{path}: {error}");
            std::process::exit(2);
        }
    };
    let report = run(&scenario);
    println!("{}", report.to_text());
    if let Some(dir) = paths.next().map(std::path::PathBuf::from) {
        match report.write_svgs(&dir) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
            }
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(1);
            }
        }
    }
    let missed = report.missed_goals();
    if check && !missed.is_empty() {
        eprintln!("goals not met: {}", missed.join("; "));
        std::process::exit(1);
    }
}
