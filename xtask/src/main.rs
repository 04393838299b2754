//! `cargo xtask`: repository automation.
//!
//! - `cargo xtask ci`: the checks CI runs (fmt, clippy, cargo-deny, doc tests, the test suite);
//! - `cargo xtask deny`: `cargo deny check bans licenses sources` (advisories need a network);
//! - `cargo xtask bench`: the benchmarks (criterion, in `benches/` of each crate);
//! - `cargo xtask sim [SCENARIO.toml...]`: the cellular-mesh simulator on the given
//!   scenarios (default: every file in crates/genos-cellmesh/scenarios), release build,
//!   SVGs into target/sim, failing when a goal is not met;
//! - `cargo xtask vendor [--check]`: rebuilds `vendor/` from the published webrtc and rtc
//!   crates plus `vendor/patches/`, or checks that it is exactly that.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod vendor;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = args.get(1..).unwrap_or_default();
    let result = match task {
        "ci" => ci(),
        "deny" => deny(),
        "bench" => bench(rest),
        "sim" => sim(rest),
        "soak" => soak(rest),
        "vendor" => vendor::vendor(rest),
        _ => {
            println!("usage: cargo xtask <ci|deny|bench|sim|soak|vendor>");
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

/// The soak (`--minutes N`, default 30; `--peers N`, default 10): churn, messages and
/// transfers on real parts, a report every minute. Long by design; not part of `ci`.
fn soak(rest: &[String]) -> Result<(), String> {
    let mut args = vec!["bench", "-p", "genos", "--bench", "soak", "--"];
    args.extend(rest.iter().map(String::as_str));
    run("cargo", &args)
}

/// Plays simulation scenarios with the release build of `genos sim`.
fn sim(rest: &[String]) -> Result<(), String> {
    let mut scenarios: Vec<String> = rest.to_vec();
    if scenarios.is_empty() {
        let dir = "crates/genos-cellmesh/scenarios";
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list {dir}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .map(|path| path.display().to_string())
            .collect();
        // Smallest rooms first: their numbers come back in seconds.
        found.sort_by_key(|path| (path.len(), path.clone()));
        scenarios = found;
    }
    for scenario in &scenarios {
        run(
            "cargo",
            &[
                "run",
                "--release",
                "-q",
                "-p",
                "genos-cli",
                "--",
                "sim",
                scenario,
                "--out",
                "target/sim",
                "--check",
            ],
        )?;
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    println!("$ {program} {}", args.join(" "));
    vendor::run_in(".", program, args)
}

/// Runs benchmarks and prints each result beside its same-run baseline as a markdown table.
fn bench(rest: &[String]) -> Result<(), String> {
    let which = rest.first().map(String::as_str).unwrap_or("all");
    if matches!(which, "crypto" | "all") {
        run(
            "cargo",
            &["bench", "-p", "genos-crypto", "--bench", "crypto"],
        )?;
        crypto_report()?;
    }
    if matches!(which, "signal" | "all") {
        run(
            "cargo",
            &["bench", "-p", "genos-signal", "--bench", "relay"],
        )?;
    }
    if matches!(which, "transport" | "all") {
        run(
            "cargo",
            &["bench", "-p", "genos-transport", "--bench", "webrtc"],
        )?;
        // The same benchmark against the webrtc crate as published (no vendor/ fixes), in
        // its own workspace so the [patch] does not apply: the same-run baseline.
        println!("\nbaseline: the same benchmark on crates.io webrtc 0.21.1 (unpatched)");
        run(
            "cargo",
            &[
                "run",
                "--release",
                "--manifest-path",
                concat!(env!("CARGO_MANIFEST_DIR"), "/baseline-webrtc/Cargo.toml"),
            ],
        )?;
    }
    if matches!(which, "media" | "all") {
        run(
            "cargo",
            &["bench", "-p", "genos-transport", "--bench", "media"],
        )?;
    }
    if matches!(which, "room" | "all") {
        run("cargo", &["bench", "-p", "genos", "--bench", "room"])?;
    }
    if matches!(which, "cellmesh" | "all") {
        run(
            "cargo",
            &[
                "bench",
                "-p",
                "genos-cellmesh",
                "--features",
                "sim",
                "--bench",
                "overlay",
            ],
        )?;
        let sim = mean_ns("receive-broadcast/sim-auth")?;
        let crypto = mean_ns("receive-broadcast/crypto-auth")?;
        let duplicate = mean_ns("receive-broadcast/crypto-auth-duplicate")?;
        println!("\n| receiving one broadcast frame (256 B) | time | ratio |");
        println!("|---|---|---|");
        println!(
            "| simulator stand-in (keyed hash) | {:.2} us | baseline |",
            sim / 1e3
        );
        println!(
            "| BIP-340 verify + room-key open | {:.2} us | {:.1}x |",
            crypto / 1e3,
            crypto / sim
        );
        println!(
            "| a duplicate (dropped before verifying) | {:.2} us | {:.2}x |",
            duplicate / 1e3,
            duplicate / sim
        );
    }
    if !matches!(
        which,
        "crypto" | "signal" | "transport" | "room" | "cellmesh" | "all"
    ) {
        return Err(format!(
            "unknown benchmark set {which}: try crypto, signal, transport, room or cellmesh"
        ));
    }
    Ok(())
}

fn criterion_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    target.join("criterion")
}

/// Mean time in nanoseconds of one criterion benchmark.
fn mean_ns(id: &str) -> Result<f64, String> {
    let path = criterion_dir().join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    json.get("mean")
        .and_then(|mean| mean.get("point_estimate"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| format!("{}: no mean estimate", path.display()))
}

fn crypto_report() -> Result<(), String> {
    println!(
        "\n| operation | size | RustCrypto XChaCha20-Poly1305 (portable) | envelope | envelope / portable | envelope GB/s |"
    );
    println!("|---|---|---|---|---|---|");
    for op in ["seal", "open"] {
        for size in [1024u64, 16 * 1024, 64 * 1024] {
            let raw = mean_ns(&format!("{op}/raw-aead/{size}"))?;
            let envelope = mean_ns(&format!("{op}/envelope/{size}"))?;
            println!(
                "| {op} | {} KiB | {:.2} us | {:.2} us | {:.3} | {:.2} |",
                size / 1024,
                raw / 1e3,
                envelope / 1e3,
                envelope / raw,
                size as f64 / envelope
            );
        }
    }
    let argon = mean_ns("derive/argon2id-default")?;
    let plain = mean_ns("derive/no-password")?;
    let sign = mean_ns("signature/sign")?;
    let verify = mean_ns("signature/verify")?;
    println!("\n| operation | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| room key, Argon2id 19 MiB t=2 | {:.1} ms | {:.0}x the no-password derivation |",
        argon / 1e6,
        argon / plain
    );
    println!(
        "| room key, no password (HKDF only) | {:.2} us | baseline |",
        plain / 1e3
    );
    println!(
        "| Schnorr sign (256 B) | {:.1} us | {:.2}x verify |",
        sign / 1e3,
        sign / verify
    );
    println!(
        "| Schnorr verify (256 B) | {:.1} us | baseline |",
        verify / 1e3
    );
    Ok(())
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
    vendor::vendor(&["--check".to_owned()])?;
    for krate in [
        "genos-crypto",
        "genos-signal",
        "genos-transport",
        "genos-cellmesh",
        "genos-room",
        "genos",
        "genos-cli",
    ] {
        run("cargo", &["check", "--quiet", "-p", krate, "--all-targets"])?;
    }
    for krate in ["genos-signal", "genos-transport", "genos"] {
        run(
            "cargo",
            &["check", "--quiet", "-p", krate, "--no-default-features"],
        )?;
    }
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
        &[
            "run",
            "--release",
            "--quiet",
            "-p",
            "genos-cellmesh",
            "--features",
            "sim",
            "--example",
            "simulate",
            "--",
            "crates/genos-cellmesh/scenarios/ci-300.toml",
            "--check",
        ],
    )?;
    run(
        "cargo",
        &["nextest", "run", "--workspace", "--all-features"],
    )
}
