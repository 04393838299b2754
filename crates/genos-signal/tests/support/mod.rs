//! Helpers shared by the Nostr tests: clients, and nostr-rs-relay processes.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos_crypto::Identity;
use genos_signal::PeerId;
use genos_signal::nostr::{NostrConfig, NostrEvents, NostrSession, NostrSignaling};
use genos_signal::{SignalEvent, SignalSession};

/// A test client of the given relays: fresh identity, small inbox, quick reconnects.
pub fn client_of(relays: &[&str]) -> (NostrSignaling, PeerId) {
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let config = NostrConfig::with_relays(relays.iter().copied())
        .with_inbox_capacity(64)
        .with_reconnect(Duration::from_millis(100), Duration::from_millis(500));
    (NostrSignaling::new(identity, config).unwrap(), peer)
}

pub fn client(relay: &str) -> (NostrSignaling, PeerId) {
    client_of(&[relay])
}

/// A free TCP port on loopback (the usual bind-then-release race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where nostr-rs-relay is: `NOSTR_RS_RELAY`, the PATH, or cargo's bin folder.
pub fn nostr_rs_relay_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NOSTR_RS_RELAY") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([home.join(".cargo/bin")]);
    for dir in candidates {
        let path = dir.join("nostr-rs-relay");
        if path.is_file() {
            return path;
        }
    }
    panic!("nostr-rs-relay not found: .ci/run installs it (cargo install nostr-rs-relay)");
}

/// A nostr-rs-relay process on a free loopback port, with its own data folder. Killed on
/// drop.
pub struct NostrRsRelay {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NostrRsRelay {
    pub async fn start() -> Self {
        Self::start_on(free_port(), tempfile::tempdir().unwrap()).await
    }

    pub async fn start_on(port: u16, dir: tempfile::TempDir) -> Self {
        let config = format!(
            r#"[info]
relay_url = "ws://127.0.0.1:{port}/"
name = "genos test relay"

[database]
data_directory = "{data}"
in_memory = false

[network]
address = "127.0.0.1"
port = {port}

[limits]
messages_per_sec = 1000
max_event_bytes = 131072
max_ws_message_bytes = 262144
max_ws_frame_bytes = 262144
"#,
            data = dir.path().display()
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(nostr_rs_relay_binary())
            .arg("--config")
            .arg(&config_path)
            .arg("--db")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nostr-rs-relay");
        let relay = Self {
            child: Some(child),
            port,
            dir,
        };
        relay.wait_listening().await;
        relay
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nostr-rs-relay did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Kills the process (no goodbye to its clients), keeping its folder for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the relay again on the same port.
    pub async fn restart(mut self) -> Self {
        self.kill();
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(port, dir).await
    }
}

impl Drop for NostrRsRelay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `payload` to `to` every 250 ms until the receiver's stream yields it (a relay may
/// be reconnecting); fails after `Duration::from_secs(30)`.
pub async fn deliver(
    from: &NostrSession,
    to: PeerId,
    events: &mut NostrEvents,
    payload: &'static [u8],
) {
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => from.send_to(to, Bytes::from_static(payload)).await.unwrap(),
                event = events.next() => match event {
                    Some(SignalEvent::Message { from: sender, payload: got }) if got == payload => {
                        assert_eq!(sender, from.local_peer());
                        return;
                    }
                    Some(_) => {}
                    None => panic!("event stream ended"),
                },
            }
        }
    })
    .await;
    assert!(delivered.is_ok(), "message never arrived");
}
