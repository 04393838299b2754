//! Test support: `genos relay` as a child process, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `genos relay` process.
pub(crate) struct RelayProcess {
    child: Child,
    /// Its `ws://` URL.
    pub(crate) url: String,
}

impl RelayProcess {
    /// Starts `genos relay` on a free loopback port, with `extra` arguments, and waits until
    /// it prints the URL it listens on.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_genos"))
            .args(["relay", "--addr", &addr])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run genos relay");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let url = format!("ws://{addr}");
        assert!(first_line.contains(&url), "{first_line}");
        Self { child, url }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
