//! The `genos` command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use genos::room::{Room, RoomConfig, RoomEvent};
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos::transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos::{Genos, GenosBuilder};
use genos_cli::demo::{self, DemoEvent};
use genos_cli::transfer;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    name = "genos",
    version,
    about = "Peer-to-peer rooms: find peers over Nostr, connect directly over WebRTC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Three peers (by default) in this process join a password room over a Nostr relay (an
    /// embedded one unless --relay is given), meet, chat, send a file and leave. No setup.
    Demo {
        /// How many peers take part.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
        peers: u16,
        /// Size of the file the first peer sends to the others, in MiB.
        #[arg(long, default_value_t = 8)]
        file_mib: u16,
        /// Meet over this relay instead of an embedded one (ws:// or wss://).
        #[arg(long)]
        relay: Option<String>,
    },
    /// Chat in a room: lines typed go to everyone, theirs are printed. Ctrl-D leaves.
    Chat {
        #[command(flatten)]
        room: RoomArgs,
        /// Join as a Trystero 0.25 peer: chat with browsers running Trystero (same --app,
        /// --room, --password and a --relay in common). Lines go out as text on --action.
        #[arg(long)]
        trystero: bool,
        /// The Trystero action carrying the chat (with --trystero).
        #[arg(long, default_value = "chat", requires = "trystero")]
        action: String,
    },
    /// Send a file to the peers of a room (waits for --peers of them) and wait for their
    /// SHA-256 verdict.
    Send {
        /// The file to send.
        file: PathBuf,
        #[command(flatten)]
        room: RoomArgs,
        /// How many peers to wait for before sending.
        #[arg(long, default_value_t = 1)]
        peers: usize,
    },
    /// Receive one file from a room into a directory (written to a temporary file, checked
    /// with SHA-256, then renamed into place).
    Recv {
        #[command(flatten)]
        room: RoomArgs,
        /// Directory to store the file in.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Media tracks: send IVF (VP8) and Ogg (Opus) files into a room, or record the tracks
    /// of a room into files.
    Media {
        #[command(subcommand)]
        action: MediaCommand,
    },
    /// Plays a cellular-mesh simulation (thousands of simulated peers on one core) and prints
    /// the overlay's figures beside a full mesh and the GenosRTC layout.
    Sim {
        /// A scenario file (TOML; see crates/genos-cellmesh/scenarios). Without one, a quick
        /// scenario of --peers peers.
        scenario: Option<PathBuf>,
        /// Peers of the quick scenario (or overriding the file's).
        #[arg(long)]
        peers: Option<usize>,
        /// Seed (overriding the file's).
        #[arg(long)]
        seed: Option<u64>,
        /// Write SVG pictures (histograms; cells and bridges for small rooms) into this
        /// directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit with failure when a goal of the cellular-mesh issue is not met.
        #[arg(long)]
        check: bool,
    },
    /// N real peers in this process join one room at once over a relay (an embedded one
    /// unless --relay is given), WebRTC on 127.0.0.1; then broadcasts and directed sends at
    /// a rate. Prints how the room formed and how it delivered (one JSON object with --json).
    /// With --backend memory the same room code runs on the in-memory backends, with
    /// latency and loss.
    Swarm {
        /// Peers in the room (at most 1,000 on WebRTC, 5,000 in memory).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(2..=5000))]
        peers: u16,
        /// What the peers meet and link over.
        #[arg(long, value_enum, default_value_t = Backend::Webrtc)]
        backend: Backend,
        /// (memory) One-way delay of every link message and signaling event, in ms.
        #[arg(long, default_value_t = 20.0)]
        latency_ms: f64,
        /// (memory) Uniform random extra delay per message, up to this many ms.
        #[arg(long, default_value_t = 10.0)]
        jitter_ms: f64,
        /// (memory) Probability that a signaling event is lost.
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// Seed of the memory backends' jitter and loss.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The room's topology.
        #[arg(long, value_enum, default_value_t = Topology::Mesh)]
        topology: Topology,
        /// Broadcasts, each from a random peer to all.
        #[arg(long, default_value_t = 50)]
        broadcasts: usize,
        /// Directed sends, each from a random peer to another.
        #[arg(long, default_value_t = 50)]
        directed: usize,
        /// Sends per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Payload bytes per send (at least 17).
        #[arg(long, default_value_t = 256)]
        payload: usize,
        /// Seconds over which the peers arrive, evenly spaced (0: all at once).
        #[arg(long, default_value_t = 0.0)]
        arrival: f64,
        /// Seconds the room may take to form after the last arrival.
        #[arg(long, default_value_t = 120)]
        form_timeout: u64,
        /// Meet over this relay instead of an embedded one (ws:// or wss://).
        #[arg(long)]
        relay: Option<String>,
        /// Fraction of the peers that crash at once halfway through the traffic (no
        /// goodbye: each runs on a runtime of its own, stopped whole).
        #[arg(long, default_value_t = 0.0)]
        crash: f64,
        /// (Cells) The crash takes every cell mate of one peer and every peer it is linked
        /// to (it is cut off until linked again), the rest at random.
        #[arg(long)]
        crash_cell: bool,
        /// Seconds to watch the survivors re-form after the crash.
        #[arg(long, default_value_t = 60)]
        repair_timeout: u64,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Runs a fallback server until interrupted: a Nostr relay (signaling when public relays
    /// are down or refuse) and, on the same port at /link, a hub that carries the links of
    /// peers that cannot connect directly (it forwards sealed frames, never plaintext).
    /// Peers use it with --fallback ws://HOST:PORT.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7448")]
        addr: std::net::SocketAddr,
        /// Admit to the hub only clients presenting this token (--fallback-token).
        #[arg(long)]
        token: Option<String>,
        /// Require NIP-42 authentication to publish and subscribe on the relay.
        #[arg(long)]
        auth: bool,
        /// Seconds between the hub's counter lines.
        #[arg(long, default_value_t = 10)]
        report_every: u64,
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

#[derive(Subcommand)]
enum MediaCommand {
    /// Send each file as a track (paced at its timestamps) to the peers of a room; waits for
    /// --peers of them first. Prints a line per track every second.
    Send {
        /// IVF (VP8) or Ogg (Opus) files, one track each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        room: RoomArgs,
        /// How many peers to wait for before sending.
        #[arg(long, default_value_t = 1)]
        peers: usize,
        /// Start each file over at its end (until interrupted).
        #[arg(long = "loop")]
        looping: bool,
    },
    /// Record every track sent in a room into DIR (one .ivf or .ogg file per track, named
    /// by peer and track id). Prints a line per track every second.
    Recv {
        #[command(flatten)]
        room: RoomArgs,
        /// Directory to write the files into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Stop once this many tracks have ended (default: run until interrupted).
        #[arg(long)]
        tracks: Option<usize>,
    },
}

/// What a swarm's peers run on.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Backend {
    /// The Nostr relay (embedded unless --relay) and WebRTC on 127.0.0.1.
    Webrtc,
    /// The in-memory signaling hub and transport, with --latency-ms, --jitter-ms and --loss.
    Memory,
}

/// How a swarm's room links its peers.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Topology {
    /// Every peer links to every other (rooms up to 128 peers).
    Mesh,
    /// The cellular mesh: cells of about sqrt(N) peers joined by bridges.
    Cells,
    /// A full mesh up to 64 peers, cells above about 86 (and back below about 48), live.
    Auto,
}

impl Topology {
    /// The room topology this flag names, with default settings.
    fn room_topology(self) -> genos::room::Topology {
        match self {
            Self::Mesh => genos::room::Topology::FullMesh,
            Self::Cells => genos::room::Topology::Cells(Default::default()),
            Self::Auto => genos::room::Topology::Auto(Default::default()),
        }
    }
}

/// Which room to join, and how.
#[derive(Args)]
struct RoomArgs {
    /// Room id.
    #[arg(long)]
    room: String,
    /// Password: makes the room end-to-end encrypted.
    #[arg(long)]
    password: Option<String>,
    /// Relay to use (repeatable); the built-in public relays when none is given.
    #[arg(long = "relay")]
    relays: Vec<String>,
    /// Application id (peers must agree on it).
    #[arg(long, default_value = "genos-cli")]
    app: String,
    /// Connect on this machine only (127.0.0.1, no STUN server).
    #[arg(long)]
    local: bool,
    /// A TURN server (`turn:host:port`, UDP) to relay through when a direct path fails.
    #[arg(long, requires_all = ["turn_user", "turn_pass"])]
    turn: Option<String>,
    /// The TURN username.
    #[arg(long)]
    turn_user: Option<String>,
    /// The TURN password.
    #[arg(long)]
    turn_pass: Option<String>,
    /// Connect through the TURN server only: peers never learn each other's addresses.
    #[arg(long, requires = "turn")]
    relay_only: bool,
    /// Do not keep or refresh the extended relay list (~/.cache/genos/relays.json, from a
    /// relay directory at most daily); it is used only with the built-in relays anyway.
    #[arg(long)]
    no_relay_discovery: bool,
    /// How the room's peers link up (every peer of a room must use the same).
    #[arg(long, value_enum, default_value_t = Topology::Mesh)]
    topology: Topology,
    /// A fallback server (`genos serve`, ws://HOST:PORT): signaling through its relay when no
    /// relay answers, and links through it when a direct link cannot be made.
    #[arg(long)]
    fallback: Option<String>,
    /// The token the fallback server requires.
    #[arg(long, requires = "fallback")]
    fallback_token: Option<String>,
    /// Never link directly: every link goes through the fallback server (networks that block
    /// UDP).
    #[arg(long, requires = "fallback")]
    no_direct: bool,
    /// Pace media tracks to a congestion control estimate (GCC). Files are not re-encoded to
    /// follow it: what exceeds the estimate queues (docs/benchmarks.md measures it).
    #[arg(long)]
    congestion_control: bool,
}

impl RoomArgs {
    fn builder(&self) -> GenosBuilder {
        let mut builder = Genos::builder(&self.app, &self.room).relays(self.relays.clone());
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        if self.local {
            builder = builder.same_host_only();
        }
        if let (Some(url), Some(user), Some(pass)) = (&self.turn, &self.turn_user, &self.turn_pass)
        {
            builder = builder.turn(url, user, pass);
        }
        if self.relay_only {
            builder = builder.relay_only();
        }
        if self.no_relay_discovery {
            builder = builder.relay_discovery(genos::signal::nostr::RelayDiscovery::Off);
        }
        if self.congestion_control {
            builder = builder.congestion_control();
        }
        if let Some(url) = &self.fallback {
            builder = builder.fallback(url);
            if let Some(token) = &self.fallback_token {
                builder = builder.fallback_token(token);
            }
            if self.no_direct {
                builder = builder.no_direct();
            }
        }
        builder.topology(self.topology.room_topology())
    }

    async fn join(&self) -> Result<Room, String> {
        self.builder().join().await.map_err(|e| e.to_string())
    }
}

/// What reaches the terminal: warnings from genos, errors from dependencies; `RUST_LOG`
/// replaces it. Two dependencies log expected conditions as errors and are kept quiet: the
/// embedded relay (`nostr_relay_builder`: "Broken pipe" whenever a peer leaves) and webrtc's
/// STUN gatherer (no STUN server reachable, e.g. offline; peers on the same network still
/// connect through host candidates).
const DEFAULT_LOG_FILTER: &str = "error,genos=warn,genos_cli=warn,genos_room=warn,\
genos_signal=warn,genos_transport=warn,genos_cellmesh=warn,genos_crypto=warn,\
nostr_relay_builder=off,webrtc::peer_connection::transport::stun_gatherer=off";

fn log_filter() -> tracing_subscriber::EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => tracing_subscriber::EnvFilter::new(filter),
        _ => tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sim {
        scenario,
        peers,
        seed,
        out,
        check,
    } = &cli.command
    {
        // Pure computation on one thread: no runtime, no logging set-up needed.
        return match genos_cli::sim::run(scenario.as_deref(), *peers, *seed, out.as_deref(), *check)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .init();
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo {
                peers,
                file_mib,
                relay,
            } => run_demo(usize::from(peers), usize::from(file_mib) << 20, relay).await,
            Command::Chat {
                room,
                trystero: false,
                ..
            } => run_chat(room).await,
            Command::Chat {
                room,
                trystero: true,
                action,
            } => run_trystero_chat(room, action).await,
            Command::Swarm {
                peers,
                backend,
                latency_ms,
                jitter_ms,
                loss,
                seed,
                topology,
                broadcasts,
                directed,
                rate,
                payload,
                arrival,
                form_timeout,
                relay,
                crash,
                crash_cell,
                repair_timeout,
                json,
            } => {
                let mut plan = genos_cli::swarm::SwarmPlan::default();
                plan.form_timeout = std::time::Duration::from_secs(form_timeout);
                plan.arrival = std::time::Duration::try_from_secs_f64(arrival)
                    .map_err(|_| "--arrival must be a number of seconds, 0 or more".to_owned())?;
                plan.broadcasts = broadcasts;
                plan.directed = directed;
                plan.rate = rate;
                plan.payload_bytes = payload;
                plan.crash = crash;
                plan.crash_cell = crash_cell;
                plan.repair_timeout = Duration::from_secs(repair_timeout);
                let backend = match backend {
                    Backend::Webrtc => SwarmBackend::WebRtc { relay },
                    Backend::Memory => SwarmBackend::Memory {
                        latency: ms(latency_ms, "--latency-ms")?,
                        jitter: ms(jitter_ms, "--jitter-ms")?,
                        loss,
                        seed,
                    },
                };
                run_swarm(usize::from(peers), topology, plan, backend, json).await
            }
            Command::Send { file, room, peers } => run_send(file, room, peers).await,
            Command::Recv { room, out } => run_recv(room, out).await,
            Command::Media { action } => run_media(action).await,
            // Handled before the runtime starts.
            Command::Sim { .. } => Ok(()),
            Command::Serve {
                addr,
                token,
                auth,
                report_every,
            } => {
                let mut config = genos::serve::FallbackServerConfig::default().with_addr(addr);
                if let Some(token) = token {
                    config = config.with_token(token);
                }
                if auth {
                    config.relay = config.relay.with_auth();
                }
                run_serve(config, std::time::Duration::from_secs(report_every.max(1))).await
            }
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
                run_relay(config).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The relay to meet on: `relay`, or an embedded one started here (kept alive by the
/// returned handle).
async fn relay_or_embedded(
    relay: Option<String>,
) -> Result<(Option<EmbeddedRelay>, String), String> {
    match relay {
        Some(url) => Ok((None, url)),
        None => {
            let embedded = EmbeddedRelay::start(EmbeddedRelayConfig::default())
                .await
                .map_err(|e| format!("cannot start the embedded relay: {e}"))?;
            let url = embedded.url().to_owned();
            Ok((Some(embedded), url))
        }
    }
}

/// `count` Nostr backends on `relay_url`, each with a fresh identity.
fn nostr_peers(
    count: usize,
    relay_url: &str,
) -> Result<Vec<(NostrSignaling, genos::crypto::Identity)>, String> {
    (0..count)
        .map(|_| {
            let identity = genos::crypto::Identity::generate();
            NostrSignaling::new(identity.clone(), NostrConfig::with_relays([relay_url]))
                .map(|signaling| (signaling, identity))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Milliseconds given on the command line as a duration.
fn ms(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value / 1e3)
        .map_err(|_| format!("{flag} must be a number of milliseconds, 0 or more"))
}

/// The backends of a swarm.
enum SwarmBackend {
    WebRtc {
        relay: Option<String>,
    },
    Memory {
        latency: Duration,
        jitter: Duration,
        loss: f64,
        seed: u64,
    },
}

async fn run_swarm(
    peers: usize,
    topology: Topology,
    plan: genos_cli::swarm::SwarmPlan,
    backend: SwarmBackend,
    json: bool,
) -> Result<(), String> {
    let room = "swarm-".to_owned() + &genos::crypto::PeerId::from_bytes(rand::random()).short();
    if matches!(topology, Topology::Mesh) && peers > 128 {
        return Err(
            "a full-mesh room holds at most 128 peers; try --topology cells or auto".into(),
        );
    }
    let config = RoomConfig::new("genos-swarm", room)
        .with_password("swarm password")
        .with_topology(topology.room_topology());
    match backend {
        SwarmBackend::WebRtc { .. } if peers > 1000 => {
            return Err(
                "--peers: at most 1,000 WebRTC peers in one process; try --backend memory".into(),
            );
        }
        SwarmBackend::Memory { loss, .. } if !(0.0..=1.0).contains(&loss) => {
            return Err("--loss must be a probability within [0, 1]".into());
        }
        _ => {}
    }
    let derive = std::time::Instant::now();
    let key = config.derive_key().await.map_err(|e| e.to_string())?;
    let derived = derive.elapsed();
    let on_formed = |formed: Duration| {
        if !json {
            println!(
                "  the room formed after {formed:.1?}; sending {} broadcasts and {} directed sends at {}/s",
                plan.broadcasts, plan.directed, plan.rate
            );
        }
    };
    let report = match backend {
        SwarmBackend::WebRtc { relay } => {
            let (_embedded, relay_url) = relay_or_embedded(relay).await?;
            if !json {
                println!("genos swarm: {peers} peers join one password room at once over {relay_url}");
                println!("(WebRTC on 127.0.0.1; the room key is derived once and shared by the peers)");
            }
            let backends = nostr_peers(peers, &relay_url)?;
            let transport =
                WebRtcTransport::new(WebRtcConfig::loopback()).map_err(|e| e.to_string())?;
            genos_cli::swarm::run(backends, transport, &key, &config, &plan, on_formed).await
        }
        SwarmBackend::Memory {
            latency,
            jitter,
            loss,
            seed,
        } => {
            use genos::signal::memory::{MemorySignaling, MemorySignalingConfig};
            use genos::transport::memory::{MemoryTransport, MemoryTransportConfig};
            if !json {
                println!(
                    "genos swarm: {peers} peers join one password room at once on the in-memory backends ({latency:?} + up to {jitter:?} per message, signaling loss {loss})"
                );
            }
            let hub = MemorySignaling::try_new(
                MemorySignalingConfig::default()
                    .with_latency(latency, jitter)
                    .with_loss(loss, seed),
            )
            .map_err(|e| e.to_string())?;
            let transport = MemoryTransport::try_new(
                MemoryTransportConfig::default()
                    .with_max_pending_offers(64 * peers)
                    .with_latency(latency, jitter)
                    .with_unreliable_loss(loss, seed),
            )
            .map_err(|e| e.to_string())?;
            let backends = (0..peers)
                .map(|_| (hub.clone(), genos::crypto::Identity::generate()))
                .collect();
            genos_cli::swarm::run(backends, transport, &key, &config, &plan, on_formed).await
        }
    }
    .map_err(|e| e.to_string())?;
    if json {
        println!("{}", report.to_json());
    } else {
        println!(
            "summary: {} peers ({}), {:.1} connections per peer (max {}), formed in {:.0} ms (key derived once in {derived:.0?}); broadcasts delivered {:.4}, directed {:.4}, misdelivered {}; delivery p50 {:.2} ms, p99 {:.2} ms; signaling {:.1} events per peer to join, {:.2} per peer per minute after; RSS {:.0} MiB",
            report.peers,
            report.topology,
            report.connections_mean,
            report.connections_max,
            report.join_all_ms,
            report.delivered_ratio,
            report.directed_delivered_ratio,
            report.misdelivered,
            report.delivery_p50_ms,
            report.delivery_p99_ms,
            report.relay_events_per_peer_join,
            report.relay_events_per_peer_min,
            report.rss_mib,
        );
        if report.crashed > 0 {
            let repaired = report.repaired_ms.map_or_else(
                || "did not re-form within --repair-timeout".to_owned(),
                |ms| format!("re-formed after {ms:.0} ms"),
            );
            println!(
                "crash: {} peers crashed halfway; broadcasts after it delivered {:.4} to the survivors; the survivors {repaired}",
                report.crashed, report.delivered_ratio_after_crash,
            );
            if let Some(peer) = report.cut_off {
                println!(
                    "crash: peer {peer} was cut off (its cell mates and every peer it was linked to crashed)"
                );
            }
        }
    }
    Ok(())
}

async fn run_serve(
    config: genos::serve::FallbackServerConfig,
    report_every: std::time::Duration,
) -> Result<(), String> {
    let server = genos::serve::FallbackServer::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "genos fallback server listening on {} (relay; hub at {})",
        server.url(),
        server.link_url()
    );
    let mut report = tokio::time::interval(report_every);
    report.tick().await;
    loop {
        tokio::select! {
            stop = tokio::signal::ctrl_c() => {
                stop.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
                break;
            }
            _ = report.tick() => {
                let stats = server.hub_stats();
                println!(
                    "hub: {} circuits live, {} paired, {} refused, {} MiB forwarded",
                    stats.circuits_live,
                    stats.circuits_paired,
                    stats.refused,
                    stats.bytes_forwarded >> 20
                );
            }
        }
    }
    println!("stopping");
    server.shutdown();
    Ok(())
}

async fn run_relay(config: EmbeddedRelayConfig) -> Result<(), String> {
    let relay = EmbeddedRelay::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!("genos relay listening on {}", relay.url());
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    println!("stopping");
    relay.shutdown();
    Ok(())
}

fn byte_bar(total: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

async fn run_chat(args: RoomArgs) -> Result<(), String> {
    let room = args.join().await?;
    println!(
        "joined {} as {}; type lines, /health for relays and counters, Ctrl-D to leave",
        args.room,
        room.local_peer().short()
    );
    let chat = room.channel("chat").map_err(|e| e.to_string())?;
    let mut events = room.events();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.map_err(|e| e.to_string())? {
                Some(line) if line.trim() == "/health" => print_health(&room),
                Some(line) => {
                    chat.send(line).await.map_err(|e| e.to_string())?;
                }
                None => break,
            },
            Some(message) = chat.recv() => {
                println!("{}: {}", message.from.short(), String::from_utf8_lossy(&message.payload));
            }
            Some(event) = events.next() => match event {
                RoomEvent::PeerJoined { peer } => println!("* {} joined", peer.short()),
                RoomEvent::PeerLeft { peer, reason } => println!("* {} left ({reason:?})", peer.short()),
                _ => {}
            },
        }
    }
    room.leave().await.map_err(|e| e.to_string())
}

/// `genos chat --trystero`: the same chat as a Trystero peer, for rooms of browsers.
async fn run_trystero_chat(args: RoomArgs, action: String) -> Result<(), String> {
    use genos::trystero::TrysteroEvent;
    use genos::trystero::wire::Payload;
    let (room, mut events) = args
        .builder()
        .trystero()
        .join()
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "joined Trystero room {} as {}; type lines, Ctrl-D to leave",
        args.room,
        room.peer_id()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.map_err(|e| e.to_string())? {
                Some(line) => {
                    let report = room
                        .send(&action, Payload::Text(line), None, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    for peer in report.failed {
                        println!("* could not reach {peer}");
                    }
                }
                None => break,
            },
            event = events.recv() => match event {
                Some(TrysteroEvent::PeerJoined { peer }) => println!("* {peer} joined"),
                Some(TrysteroEvent::PeerLeft { peer }) => println!("* {peer} left"),
                Some(TrysteroEvent::JoinFailed { peer, reason }) => {
                    println!("* {peer} could not join: {reason}");
                }
                Some(TrysteroEvent::Message { peer, message }) if message.action == action => {
                    match message.payload {
                        Payload::Text(text) => println!("{peer}: {text}"),
                        Payload::Json(value) => println!("{peer}: {value}"),
                        Payload::Binary(bytes) => println!("{peer}: ({} bytes)", bytes.len()),
                        _ => {}
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    room.leave().await;
    Ok(())
}

/// Prints the room's signaling health and counters (`/health` in `genos chat`).
fn print_health(room: &Room) {
    let health = room.signal_health();
    println!(
        "* signaling: {} of {} relay(s) connected; published {}, delivered {}, dropped {}",
        health.connected(),
        health.media.len(),
        health.published,
        health.delivered,
        health.dropped
    );
    for medium in &health.media {
        println!(
            "*   {} {}: sent {}, received {}, dropped {}",
            medium.name, medium.state, medium.events_sent, medium.events_received, medium.dropped
        );
    }
    let stats = room.stats();
    println!(
        "* room: {} peer(s); messages sent {}, received {}; dials {} started, {} failed, {} busy",
        room.peers().len(),
        stats.messages_sent,
        stats.messages_received,
        stats.dials_started,
        stats.dials_failed,
        stats.dials_busy
    );
}

async fn run_send(file: PathBuf, args: RoomArgs, wanted: usize) -> Result<(), String> {
    let size = tokio::fs::metadata(&file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len();
    let room = args.join().await?;
    println!(
        "joined {} as {}; waiting for {wanted} peer(s)",
        args.room,
        room.local_peer().short()
    );
    let mut events = room.events();
    let mut peers = room.peers();
    while peers.len() < wanted.max(1) {
        match events.next().await {
            Some(RoomEvent::PeerJoined { peer }) => {
                if !peers.contains(&peer) {
                    peers.push(peer);
                }
            }
            Some(_) => {}
            None => return Err("the room ended".into()),
        }
    }
    let bar = byte_bar(size, "send");
    let sent =
        transfer::send_file(&room, &file, peers.clone(), |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    let outcome = sent.map_err(|e| e.to_string())?;
    for peer in &outcome.stored {
        println!("{}: stored, SHA-256 verified", peer.short());
    }
    for (peer, reason) in &outcome.failed {
        println!("{}: FAILED: {reason}", peer.short());
    }
    println!(
        "sent {} ({size} bytes): stored by {} of {} peer(s)",
        file.display(),
        outcome.stored.len(),
        peers.len()
    );
    room.leave().await.map_err(|e| e.to_string())?;
    if outcome.failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} peer(s) did not get the file",
            outcome.failed.len()
        ))
    }
}

async fn run_recv(args: RoomArgs, out: PathBuf) -> Result<(), String> {
    if !out.is_dir() {
        return Err(format!("{} is not a directory", out.display()));
    }
    let room = args.join().await?;
    println!(
        "joined {} as {}; waiting for a file",
        args.room,
        room.local_peer().short()
    );
    let bar = std::sync::OnceLock::new();
    let received = transfer::receive_file(
        &room,
        &out,
        |header, resumed_from| {
            if resumed_from > 0 {
                println!(
                    "resuming {} at byte {resumed_from} of {} (kept from an interrupted transfer)",
                    header.name, header.size
                );
            }
            let progress = byte_bar(header.size, "recv");
            progress.set_position(resumed_from);
            let _ = bar.set(progress);
        },
        |done| {
            if let Some(bar) = bar.get() {
                bar.set_position(done);
            }
        },
    )
    .await;
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    let received = received.map_err(|e| e.to_string())?;
    println!(
        "received {} ({} bytes) from {}; SHA-256 ok",
        received.path.display(),
        received.size,
        received.from.short()
    );
    // Let the verdict reach the sender before the goodbye.
    tokio::time::sleep(Duration::from_millis(100)).await;
    room.leave().await.map_err(|e| e.to_string())
}

async fn run_media(action: MediaCommand) -> Result<(), String> {
    let print_lines = |reports: &[genos_cli::media::TrackReport], elapsed: Duration| {
        for report in reports {
            println!("  {}", report.line(elapsed));
        }
    };
    match action {
        MediaCommand::Send {
            files,
            room: args,
            peers: wanted,
            looping,
        } => {
            let room = args.join().await?;
            println!(
                "joined {} as {}; waiting for {wanted} peer(s)",
                args.room,
                room.local_peer().short()
            );
            let mut events = room.events();
            while room.peers().len() < wanted.max(1) {
                if events.next().await.is_none() {
                    return Err("the room ended".into());
                }
            }
            let start = std::time::Instant::now();
            let sending = genos_cli::media::send_files(&room, &files, looping, print_lines);
            let sent = tokio::select! {
                sent = sending => sent.map_err(|e| e.to_string())?,
                _ = tokio::signal::ctrl_c() => Vec::new(),
            };
            for report in &sent {
                println!("sent {}", report.line(start.elapsed()));
            }
            room.leave().await.map_err(|e| e.to_string())
        }
        MediaCommand::Recv {
            room: args,
            out,
            tracks,
        } => {
            if !out.is_dir() {
                return Err(format!("{} is not a directory", out.display()));
            }
            let room = args.join().await?;
            println!(
                "joined {} as {}; recording tracks into {}",
                args.room,
                room.local_peer().short(),
                out.display()
            );
            let start = std::time::Instant::now();
            let receiving = genos_cli::media::receive_tracks(&room, &out, tracks, print_lines);
            let written = tokio::select! {
                written = receiving => written.map_err(|e| e.to_string())?,
                _ = tokio::signal::ctrl_c() => Vec::new(),
            };
            for (path, report) in &written {
                println!(
                    "wrote {} ({})",
                    path.display(),
                    report.line(start.elapsed())
                );
            }
            room.leave().await.map_err(|e| e.to_string())
        }
    }
}

async fn run_demo(peers: usize, file_bytes: usize, relay: Option<String>) -> Result<(), String> {
    let (_embedded, relay_url) = relay_or_embedded(relay).await?;
    println!("genos demo: {peers} peers meet over the Nostr relay at {relay_url}");
    println!("(password room: signaling and data sealed end to end; WebRTC on 127.0.0.1)");
    let room = "demo-".to_owned() + &genos::crypto::PeerId::from_bytes(rand::random()).short();
    let config = RoomConfig::new("genos-demo", room).with_password("demo password");
    let backends = nostr_peers(peers, &relay_url)?
        .into_iter()
        .map(|(signaling, identity)| (signaling, identity.peer_id()))
        .collect();
    let transport = WebRtcTransport::new(WebRtcConfig::loopback()).map_err(|e| e.to_string())?;
    let report = demo::run(
        backends,
        transport,
        config,
        file_bytes,
        |event| match event {
            DemoEvent::Joined { peer } => println!("  {} joined the room", peer.short()),
            DemoEvent::Met { peer, other } => {
                println!("  {} connected to {}", peer.short(), other.short())
            }
            DemoEvent::Chat { peer, from, text } => {
                println!("  {} <- {}: {text}", peer.short(), from.short());
            }
            DemoEvent::FileProgress { peer, percent } => {
                println!("  {} receiving demo.bin: {percent}%", peer.short());
            }
            DemoEvent::FileReceived { peer, bytes } => {
                println!(
                    "  {} received demo.bin ({bytes} bytes), SHA-256 ok",
                    peer.short()
                );
            }
            DemoEvent::Left { peer } => println!("  {} left", peer.short()),
            _ => {}
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let mib = report.file_bytes as f64 / f64::from(1 << 20);
    let rate = mib / report.file_transfer.as_secs_f64().max(1e-9);
    println!(
        "summary: {} peers, {} connections, {} chat lines, {} files of {mib:.1} MiB; joined after {:.0?}, all connected after {:.0?}, file to {} peers in {:.0?} ({rate:.0} MiB/s each), done after {:.0?}",
        report.peers,
        report.connections,
        report.chat_lines,
        report.files_received,
        report.joined,
        report.all_connected,
        report.files_received,
        report.file_transfer,
        report.total
    );
    Ok(())
}
