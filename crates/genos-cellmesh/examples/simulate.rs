//! Plays a simulation scenario and prints the report: `cargo run --release -p genos-cellmesh
//! --features sim --example simulate -- scenarios/100.toml [OUT_DIR]` (with OUT_DIR, the SVG
//! histograms, and for small rooms the picture of cells and bridges, are written there).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use genos_cellmesh::sim::{Scenario, run};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: simulate SCENARIO.toml");
        std::process::exit(2);
    };
    let scenario = match std::fs::read_to_string(&path)
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
    if let Some(dir) = std::env::args().nth(2).map(std::path::PathBuf::from) {
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
}
