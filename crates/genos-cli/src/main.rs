//! The `genos` command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos::transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_cli::demo::{self, DemoEvent, Meeting};

#[derive(Parser)]
#[command(
    name = "genos",
    version,
    about = "Peer-to-peer rooms: find peers, connect directly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Peers meet over a Nostr relay (an embedded one unless --relay is given), connect,
    /// chat and leave, all in this process, with no setup.
    Demo {
        /// How many peers take part.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
        peers: u16,
        /// Meet over this relay instead of an embedded one (ws:// or wss://).
        #[arg(long)]
        relay: Option<String>,
    },
    /// Runs a Nostr relay for signaling ("run your own relay") until interrupted.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7447")]
        addr: std::net::SocketAddr,
        /// Require this proof-of-work difficulty (NIP-13) of every event.
        #[arg(long)]
        min_pow: Option<u8>,
        /// Require NIP-42 authentication to publish and subscribe.
        #[arg(long)]
        auth: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Demo { peers, relay } => runtime.block_on(run_demo(usize::from(peers), relay)),
        Command::Relay {
            addr,
            min_pow,
            auth,
        } => {
            let mut config = EmbeddedRelayConfig::default().with_addr(addr);
            if let Some(difficulty) = min_pow {
                config = config.with_min_pow(difficulty);
            }
            if auth {
                config = config.with_auth();
            }
            runtime.block_on(run_relay(config))
        }
    }
}

async fn run_relay(config: EmbeddedRelayConfig) -> ExitCode {
    let relay = match EmbeddedRelay::start(config).await {
        Ok(relay) => relay,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("genos relay listening on {}", relay.url());
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    println!("stopping");
    relay.shutdown();
    ExitCode::SUCCESS
}

async fn run_demo(peers: usize, relay: Option<String>) -> ExitCode {
    let embedded = match relay {
        Some(_) => None,
        None => match EmbeddedRelay::start(EmbeddedRelayConfig::default()).await {
            Ok(relay) => Some(relay),
            Err(error) => {
                eprintln!("error: cannot start the embedded relay: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let relay_url = match (&embedded, relay) {
        (Some(embedded), _) => embedded.url().to_owned(),
        (None, Some(url)) => url,
        (None, None) => return ExitCode::FAILURE,
    };
    println!("genos demo: {peers} peers meet over the Nostr relay at {relay_url}");
    println!("(signaling is sealed with the room key; peers connect over WebRTC on 127.0.0.1)");
    let room = "demo-".to_owned() + &genos::crypto::PeerId::from_bytes(rand::random()).short();
    let key = match genos::crypto::RoomKey::derive_async(
        "genos-demo",
        &room,
        Some(b"demo password"),
        &Default::default(),
    )
    .await
    {
        Ok(key) => key,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut backends = Vec::new();
    for _ in 0..peers {
        let identity = genos::crypto::Identity::generate();
        let id = identity.peer_id();
        match NostrSignaling::new(identity, NostrConfig::with_relays([relay_url.clone()])) {
            Ok(backend) => backends.push((backend, id)),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let transport = match WebRtcTransport::new(WebRtcConfig::loopback()) {
        Ok(transport) => transport,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = demo::run(
        backends,
        transport,
        Meeting::of_room(&key),
        |event| match event {
            DemoEvent::Joined { peer } => println!("  {} joined", peer.short()),
            DemoEvent::Saw { peer, other } => println!("  {} saw {}", peer.short(), other.short()),
            DemoEvent::Connected { peer, other } => {
                println!("  {} connected to {}", peer.short(), other.short());
            }
            DemoEvent::Chat { peer, from, text } => {
                println!("  {} <- {}: {text}", peer.short(), from.short());
            }
            DemoEvent::Left { peer } => println!("  {} left", peer.short()),
            _ => {}
        },
    )
    .await;
    match result {
        Ok(report) => {
            println!(
                "summary: {} peers, {} connections, {} chat lines; all connected after {:?}, done after {:?}",
                report.peers,
                report.connections,
                report.chat_lines,
                report.all_connected,
                report.total
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
