//! `cargo xtask`: repository automation.
//!
//! - `cargo xtask ci`: the checks CI runs (fmt, clippy, cargo-deny, doc tests, the test suite);
//! - `cargo xtask deny`: `cargo deny check bans licenses sources` (advisories need a network);
//! - `cargo xtask bench`: the benchmarks (criterion, in `benches/` of each crate);
//! - `cargo xtask sim`: the cellular-mesh simulator (not built yet).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = args.get(1..).unwrap_or_default();
    let result = match task {
        "ci" => ci(),
        "deny" => deny(),
        "bench" => run("cargo", &with(&["bench", "--workspace"], rest)),
        "sim" => {
            Err("the simulator is not built yet: it comes with the cellular-mesh issue".into())
        }
        _ => {
            println!("usage: cargo xtask <ci|deny|bench|sim>");
            return if task == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask {task}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn with<'a>(base: &[&'a str], rest: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(rest.iter().map(String::as_str))
        .collect()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    println!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed with {status}", args.join(" ")))
    }
}

fn deny() -> Result<(), String> {
    run(
        "cargo",
        &[
            "deny",
            "--all-features",
            "check",
            "bans",
            "licenses",
            "sources",
        ],
    )
}

/// The same steps as `.ci/run`, minus installing tools.
fn ci() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    deny()?;
    run("cargo", &["test", "--workspace", "--doc"])?;
    run(
        "cargo",
        &["nextest", "run", "--workspace", "--all-features"],
    )
}
