//! Plays a simulation scenario and prints the report: `cargo run --release -p genos-cellmesh
//! --features sim --example simulate -- scenarios/100.toml [OUT_DIR] [--check]` (with
//! OUT_DIR, the SVG histograms, and for small rooms the picture of cells and bridges, are
//! written there; with `--check` the exit status is 1 when a goal is missed).
//! `GENOS_SIM_PROGRESS=1` prints the wall clock every 5 simulated seconds of the warm-up;
//! `GENOS_SIM_DEBUG=1` prints the room's health at each check and what it lacks.
//!
//! On Linux the simulator restarts itself once with glibc's malloc asked for transparent
//! huge pages (`glibc.malloc.hugetlb=1`): a 10,000-peer run reads a 5 GB heap at random,
//! and with 4 KiB pages most reads also walk the page tables (the timing scenario ran in
//! 0.81x the wall clock, docs/benchmarks.md). It also asks malloc to keep what it freed
//! (`mmap_threshold` 32 MiB, the most glibc takes, and a `trim_threshold` of 64 GiB): the
//! maps and queues grow and shrink all run, and memory handed back to the kernel had to be
//! zeroed again when taken anew (half the run's system time, measured). A tunable already
//! in `GLIBC_TUNABLES` is left as given. `GENOS_SIM_SMALL_PAGES=1` keeps every default;
//! other C libraries ignore the settings.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use genos_cellmesh::sim::{Scenario, run};

/// The glibc malloc tunables the simulator asks for (see the module's documentation).
#[cfg(target_os = "linux")]
const TUNABLES: [(&str, &str); 3] = [
    ("glibc.malloc.hugetlb", "1"),
    ("glibc.malloc.mmap_threshold", "33554432"),
    ("glibc.malloc.trim_threshold", "68719476736"),
];

/// Restarts this process with [`TUNABLES`] given to malloc, unless they were already (or
/// small pages are wanted). Returns only if it does not restart.
#[cfg(target_os = "linux")]
fn restart_with_huge_pages() {
    use std::os::unix::process::CommandExt;
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("GENOS_SIM_SMALL_PAGES").is_some() || tunables.contains(TUNABLES[0].0) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut asked: Vec<String> = tunables
        .split(':')
        .filter(|tunable| !tunable.is_empty())
        .map(str::to_owned)
        .collect();
    for (name, value) in TUNABLES {
        if !tunables.contains(name) {
            asked.push(format!("{name}={value}"));
        }
    }
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", asked.join(":"))
        .exec();
    eprintln!("simulate: not restarted with huge pages ({error}); going on without");
}

fn main() {
    #[cfg(target_os = "linux")]
    restart_with_huge_pages();
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
