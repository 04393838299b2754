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
        let stem: String = scenario
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut files = vec![(format!("{stem}-histograms.svg"), report.histograms_svg())];
        if let Some(picture) = &report.picture {
            files.push((format!("{stem}-cells.svg"), picture.clone()));
        }
        for (name, svg) in files {
            let path = dir.join(name);
            if let Err(error) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, svg))
            {
                eprintln!("{}: {error}", path.display());
                std::process::exit(1);
            }
            println!("wrote {}", path.display());
        }
    }
}
