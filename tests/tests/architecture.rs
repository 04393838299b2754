//! Dependencies point down: each genos crate may depend only on the layers below it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn genos_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut graph = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            // Normal dependencies only: tests may use anything.
            .filter(|dep| dep["kind"].is_null())
            .map(|dep| dep["name"].as_str().unwrap().to_owned())
            .filter(|dep| dep.starts_with("genos") && *dep != name)
            .collect();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn dependencies_point_down() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("genos-crypto", &[][..]),
        // The overlay signs and seals frames with genos-crypto, and knows nothing else.
        ("genos-cellmesh", &["genos-crypto"][..]),
        ("genos-signal", &["genos-crypto"][..]),
        ("genos-transport", &["genos-crypto"][..]),
        (
            "genos-room",
            &[
                "genos-crypto",
                "genos-signal",
                "genos-transport",
                "genos-cellmesh",
            ][..],
        ),
        // The Trystero profile sits beside genos-room: Trystero's own room logic on the same
        // relay connections and transport, sharing nothing with genos's native rooms.
        ("genos-trystero", &["genos-signal", "genos-transport"][..]),
        (
            "genos",
            &[
                "genos-crypto",
                "genos-signal",
                "genos-transport",
                "genos-cellmesh",
                "genos-room",
                "genos-trystero",
            ][..],
        ),
        ("genos-cli", &["genos"][..]),
    ]);
    let graph = genos_dependencies();
    for (crate_name, allowed_deps) in &allowed {
        let deps = graph
            .get(*crate_name)
            .unwrap_or_else(|| panic!("{crate_name} is missing from the workspace"));
        for dep in deps {
            assert!(
                allowed_deps.contains(&dep.as_str()),
                "{crate_name} depends on {dep}: dependencies must point down"
            );
        }
    }
}
