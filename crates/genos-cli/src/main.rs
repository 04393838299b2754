//! The `genos` command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genos::signal::memory::{MemoryConfig, MemorySignaling};
use genos::transport::memory::{MemoryTransport, MemoryTransportConfig};
use genos_cli::demo::{self, DemoEvent};

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
    /// Peers meet, connect, chat and leave, all in this process, with no setup.
    Demo {
        /// How many peers take part.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
        peers: u16,
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
        Command::Demo { peers } => runtime.block_on(run_demo(usize::from(peers))),
    }
}

async fn run_demo(peers: usize) -> ExitCode {
    println!(
        "genos demo: {peers} peers on the in-memory backends (signaling hub + connection pairs)"
    );
    println!(
        "(the embedded Nostr relay and WebRTC are not built yet; this exercises the same seams)"
    );
    let signaling = MemorySignaling::new(MemoryConfig::default());
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let result = demo::run(signaling, transport, peers, |event| match event {
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
    })
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
