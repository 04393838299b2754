//! `genos sim` as a process: a quick scenario, a scenario file, pictures, and bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

fn genos(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(args)
        .output()
        .expect("run genos sim");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_quick_simulation_meets_the_goals_and_draws_its_pictures() {
    let out = std::env::temp_dir().join(format!("genos-sim-test-{}", std::process::id()));
    let (ok, stdout, stderr) = genos(&[
        "sim",
        "--peers",
        "60",
        "--out",
        out.to_str().unwrap(),
        "--check",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("connections per peer, mean"), "{stdout}");
    assert!(stdout.contains("GenosRTC"), "{stdout}");
    assert!(!stdout.contains("NOT MET"), "{stdout}");
    for file in ["quick-histograms.svg", "quick-cells.svg"] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{file}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_scenario_file_is_read_and_bad_ones_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("genos-sim-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "name = 'file'\npeers = 40\nwarmup_s = 12\nsteady_s = 5\nrepair_s = 10\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = genos(&["sim", good.to_str().unwrap()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("scenario \"file\": 40 peers"), "{stdout}");

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "peers = 40\nspeed = 'fast'\n").unwrap();
    let (ok, _, stderr) = genos(&["sim", unknown.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("speed"), "{stderr}");

    let (ok, _, stderr) = genos(&["sim", "--peers", "0"]);
    assert!(!ok);
    assert!(stderr.contains("peers must be"), "{stderr}");

    let (ok, _, stderr) = genos(&["sim", dir.join("missing.toml").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("cannot read"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
