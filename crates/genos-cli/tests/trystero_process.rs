//! `genos chat --trystero` chatting with a browser running Trystero 0.25 (headless Chromium,
//! `tests/browser/`), over a `genos relay` process: lines typed go to the browser, the
//! browser's messages are printed, and Ctrl-D leaves (the browser sees it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::RelayProcess;

#[path = "../../../tests/browser/harness.rs"]
mod browser;
use browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genos_chat_trystero_talks_with_a_browser() {
    let relay = RelayProcess::start(&[]);
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    let mut browser = Browser::start(&folder).await;
    let (page, browser_id) = browser.join(&relay.url, "cli-room", None).await;

    let mut chat = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["chat", "--trystero", "--local", "--app", "genos-interop"])
        .args(["--room", "cli-room", "--relay", &relay.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run genos chat");
    let mut stdin = chat.stdin.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = chat.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    printed(&mut lines, format!("{browser_id} joined")).await;
    let joined = browser.event("join", page).await;
    let cli_id = joined["peer"].as_str().unwrap().to_owned();

    writeln!(stdin, "hello from the terminal").unwrap();
    stdin.flush().unwrap();
    let got = browser.event("message", page).await;
    assert_eq!(got["data"], "hello from the terminal");
    assert_eq!(got["action"], "chat");

    browser
        .call(json!({"cmd": "send", "page": page, "action": "chat", "data": "hello from the page"}))
        .await;
    printed(&mut lines, format!("{browser_id}: hello from the page")).await;

    drop(stdin);
    let left = browser.event("leave", page).await;
    assert_eq!(left["peer"], cli_id);
    let (ok, _, _) = support::finish(chat, "genos chat");
    assert!(ok, "genos chat failed");
}

/// Waits until genos chat prints a line containing `wanted`.
async fn printed(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, wanted: String) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines.recv().await.expect("genos chat exited");
            if line.contains(&wanted) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("genos chat never printed {wanted:?}"));
}
