//! Test support: `genos relay` (or `genos serve`) as a child process, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `genos relay` process.
pub(crate) struct RelayProcess {
    child: Child,
    /// Its `ws://` URL.
    pub(crate) url: String,
    /// The lines it printed after the first, as they come.
    #[allow(dead_code)] // only the fallback tests read them
    pub(crate) lines: std::sync::mpsc::Receiver<String>,
}

impl RelayProcess {
    /// Starts `genos relay` on a free loopback port, with `extra` arguments, and waits until
    /// it prints the URL it listens on.
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::run("relay", extra)
    }

    /// Starts `genos serve` (a fallback server: relay and hub) the same way.
    #[allow(dead_code)] // only the fallback tests run a server
    pub(crate) fn serve(extra: &[&str]) -> Self {
        Self::run("serve", extra)
    }

    fn run(command: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_genos"))
            .args([command, "--addr", &addr])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run genos");
        let mut first_line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first_line).unwrap();
        let url = format!("ws://{addr}");
        assert!(first_line.contains(&url), "{first_line}");
        // Drained on a thread, so a chatty process never blocks on a full pipe.
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self { child, url, lines }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` (stdout and stderr piped) with a generous bound so a broken build fails
/// instead of hanging; returns whether it succeeded and what it printed.
#[allow(dead_code)] // not every test binary that includes this module waits for a child
pub(crate) fn finish(mut child: Child, what: &str) -> (bool, String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out).unwrap();
            }
            if let Some(mut stderr) = child.stderr.take() {
                stderr.read_to_string(&mut err).unwrap();
            }
            return (status.success(), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
