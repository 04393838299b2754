//! The Rust side of the browser driver (`driver.mjs` beside this file), shared by the
//! interop tests that include it with `#[path]`: a node process running headless Chromium
//! with Trystero 0.25, commanded and heard through JSON lines.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long any one wait may take before the test fails (never reached when things work).
const WAIT: Duration = Duration::from_secs(60);

/// The browser driver process: commands in, answers and room events out.
pub(crate) struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Browser {
    /// Starts the driver in `folder` (this file's folder).
    pub(crate) async fn start(folder: &Path) -> Self {
        assert!(
            folder.join("node_modules/trystero").exists(),
            "tests/browser/node_modules missing: run `npm ci` in tests/browser (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(folder.join("driver.mjs"))
            .current_dir(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node not found: .ci/run installs Node.js's packages");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if sender.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        let mut browser = Self {
            child,
            stdin,
            lines,
        };
        browser.expect(|v| v.get("ready").is_some()).await;
        browser
    }

    /// Sends a command and waits for its answer (room events before it are kept).
    pub(crate) async fn call(&mut self, command: Value) -> Value {
        let name = command["cmd"].as_str().unwrap().to_owned();
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self
            .expect(|v| {
                v.get("ok").and_then(Value::as_str) == Some(&name) || v.get("error").is_some()
            })
            .await;
        assert!(
            answer.get("error").is_none(),
            "browser refused {name}: {answer}"
        );
        answer
    }

    /// Waits for a line `wanted` accepts, skipping others.
    pub(crate) async fn expect(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.lines.recv().await.expect("the browser driver exited");
                if wanted(&line) {
                    return line;
                }
            }
        })
        .await
        .expect("timed out waiting for the browser")
    }

    pub(crate) async fn event(&mut self, kind: &str, page: u64) -> Value {
        self.expect(|v| v["ev"] == kind && v["page"] == page).await
    }

    /// A page that joined `room`; its Trystero peer id.
    pub(crate) async fn join(
        &mut self,
        relay: &str,
        room: &str,
        password: Option<&str>,
    ) -> (u64, String) {
        let page = self.call(json!({"cmd": "page"})).await["page"]
            .as_u64()
            .unwrap();
        let mut command = json!({"cmd": "join", "page": page, "relay": relay, "app": "genos-interop", "room": room});
        if let Some(password) = password {
            command["password"] = json!(password);
        }
        let peer = self.call(command).await["peer"]
            .as_str()
            .unwrap()
            .to_owned();
        (page, peer)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, r#"{{"cmd":"quit"}}"#);
        let _ = self.stdin.flush();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes the page makes for a binary send of `n` bytes.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The page's checksum of received bytes.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |sum, b| (sum * 31 + u64::from(*b)) % 1_000_000_007)
}
