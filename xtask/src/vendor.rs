//! `cargo xtask vendor [--check]`: rebuilds `vendor/` from the published crates and the
//! patches in `vendor/patches/`, or checks that `vendor/` is exactly that.
//!
//! For each vendored crate: the published `.crate` (from cargo's cache, fetched from
//! crates.io when absent), trimmed to what a build needs (`src/`, `Cargo.toml`, licences,
//! README, CHANGELOG; the manifest without its example, test and bench targets and
//! dev-dependencies), then every patch in name order (`patch -p1`, paths `rtc/...` and
//! `webrtc/...`, `nostr-relay-builder/...`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates `vendor/` holds, at the published versions the patches apply to.
const CRATES: [(&str, &str); 3] = [
    ("rtc", "0.21.1"),
    ("webrtc", "0.21.1"),
    ("nostr-relay-builder", "0.44.1"),
];
/// What is kept of a published crate.
const KEEP: [&str; 6] = [
    "src",
    "Cargo.toml",
    "LICENSE-APACHE",
    "LICENSE-MIT",
    "README.md",
    "CHANGELOG.md",
];

pub(crate) fn vendor(rest: &[String]) -> Result<(), String> {
    let check = match rest {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask vendor [--check]".into()),
    };
    let work = PathBuf::from("target/xtask-vendor");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| format!("cannot clear {work:?}: {e}"))?;
    }
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).map_err(|e| format!("cannot create {tree:?}: {e}"))?;
    for (name, version) in CRATES {
        let archive = published(name, version, &work)?;
        let unpacked = work.join("unpacked");
        std::fs::create_dir_all(&unpacked).map_err(|e| e.to_string())?;
        run_in(
            ".",
            "tar",
            &[
                "xzf",
                &archive.display().to_string(),
                "-C",
                &unpacked.display().to_string(),
            ],
        )?;
        trim(
            &unpacked.join(format!("{name}-{version}")),
            &tree.join(name),
        )?;
    }
    for patch in patches()? {
        let patch_arg = std::fs::canonicalize(&patch)
            .map_err(|e| format!("{}: {e}", patch.display()))?
            .display()
            .to_string();
        run_in(
            &tree,
            "patch",
            &["-p1", "--batch", "--forward", "--silent", "-i", &patch_arg],
        )
        .map_err(|e| format!("{} does not apply: {e}", patch.display()))?;
    }
    if check {
        let mut differences = Vec::new();
        for (name, _) in CRATES {
            compare(
                &tree.join(name),
                &Path::new("vendor").join(name),
                &mut differences,
            )?;
        }
        if differences.is_empty() {
            println!("vendor/ is the published crates plus vendor/patches/");
            return Ok(());
        }
        return Err(format!(
            "vendor/ differs from the published crates plus vendor/patches/ (run `cargo xtask \
             vendor` and turn the change into a patch):\n  {}",
            differences.join("\n  ")
        ));
    }
    for (name, _) in CRATES {
        let target = Path::new("vendor").join(name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| format!("{target:?}: {e}"))?;
        }
        copy_dir(&tree.join(name), &target)?;
    }
    println!("vendor/ rebuilt from the published crates and vendor/patches/");
    Ok(())
}

/// The published `.crate` file, fetched into cargo's cache if it is not there yet.
fn published(name: &str, version: &str, work: &Path) -> Result<PathBuf, String> {
    if let Some(found) = cached(name, version) {
        return Ok(found);
    }
    // A throwaway package depending on the exact version; `cargo fetch` downloads it.
    let fetch = work.join(format!("fetch-{name}"));
    std::fs::create_dir_all(fetch.join("src")).map_err(|e| e.to_string())?;
    let manifest = format!(
        "[package]\nname = \"fetch-{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\n{name} = \"={version}\"\n\n[workspace]\n"
    );
    std::fs::write(fetch.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(fetch.join("src/lib.rs"), "").map_err(|e| e.to_string())?;
    run_in(&fetch, "cargo", &["fetch", "--quiet"])?;
    cached(name, version).ok_or_else(|| format!("{name}-{version}.crate not in cargo's cache"))
}

fn cached(name: &str, version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let file = format!("{name}-{version}.crate");
    std::fs::read_dir(home.join("registry/cache"))
        .ok()?
        .filter_map(Result::ok)
        .map(|registry| registry.path().join(&file))
        .find(|path| path.is_file())
}

/// Copies what a build needs of an unpacked crate; the manifest loses its example, test
/// and bench targets and its dev-dependencies.
fn trim(unpacked: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for keep in KEEP {
        let from = unpacked.join(keep);
        if from.is_dir() {
            copy_dir(&from, &out.join(keep))?;
        } else if from.is_file() {
            std::fs::copy(&from, out.join(keep)).map_err(|e| format!("{from:?}: {e}"))?;
        }
    }
    let manifest = out.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{manifest:?}: {e}"))?;
    std::fs::write(&manifest, trim_manifest(&text)).map_err(|e| e.to_string())
}

fn trim_manifest(text: &str) -> String {
    let mut dropping = false;
    let mut kept = Vec::new();
    for line in text.split('\n') {
        if line.starts_with('[') {
            dropping = ["[[example]]", "[[test]]", "[[bench]]", "[dev-dependencies"]
                .iter()
                .any(|section| line.starts_with(section));
        }
        if !dropping {
            kept.push(line);
        }
    }
    kept.join("\n")
}

fn patches() -> Result<Vec<PathBuf>, String> {
    let dir = Path::new("vendor/patches");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {dir:?}: {e}"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "patch"))
        .collect();
    found.sort();
    Ok(found)
}

/// Lists every file that differs between `expected` and `actual`, or exists in only one.
fn compare(expected: &Path, actual: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let (want, have) = (files(expected)?, files(actual)?);
    for path in want.union(&have) {
        let a = std::fs::read(expected.join(path)).ok();
        let b = std::fs::read(actual.join(path)).ok();
        match (a, b) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => out.push(format!("{} differs", actual.join(path).display())),
            (Some(_), None) => out.push(format!("{} is missing", actual.join(path).display())),
            (None, _) => out.push(format!("{} is extra", actual.join(path).display())),
        }
    }
    Ok(())
}

fn files(root: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let mut out = BTreeSet::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir:?}: {e}"))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.insert(relative.to_path_buf());
            }
        }
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    for relative in files(from)? {
        let target = to.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(from.join(&relative), &target)
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

pub(crate) fn run_in(dir: impl AsRef<Path>, program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}
