//! Soak: a room of peers with churn (leave and join, crash and join), continuous messages and
//! transfers, for minutes on end, on 127.0.0.1 (embedded Nostr relay + WebRTC). Every minute
//! it prints this process's resident memory, threads, open files, the relay events published
//! and what was delivered; at the end one JSON line with the whole series.
//!
//! Run: `cargo xtask soak --minutes 30` (or `cargo bench -p genos --bench soak -- --minutes
//! 30 [--peers 10]`). Not in CI: it is long by design.
//!
//! Most peers live in this process; two are child processes of this binary (`--child`),
//! which crash for real (SIGKILL) and are replaced, so the others see a peer vanish without
//! a goodbye and find it by their watchdog.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{Genos, Room};
use rand::Rng as _;
use sha2::{Digest, Sha256};

/// How often each peer says something on the chat channel.
const CHAT_EVERY: Duration = Duration::from_millis(500);
/// How often one peer sends one other a transfer, and its size.
const TRANSFER_EVERY: Duration = Duration::from_secs(15);
const TRANSFER_SIZE: usize = 4 << 20;
/// How often the room changes: a peer leaves and another joins, or a child crashes and
/// another starts.
const CHURN_EVERY: Duration = Duration::from_secs(20);
const CHILDREN: usize = 2;

#[derive(Default)]
struct Tally {
    chat: AtomicU64,
    transfers_ok: AtomicU64,
    transfers_bad: AtomicU64,
    /// Relay events published by peers that have left (live peers are read at each report).
    published_by_departed: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(relay) = value("--child") {
        let room = value("--room").unwrap();
        runtime.block_on(child(&relay, &room));
        return;
    }
    let minutes: u64 = value("--minutes").map_or(30, |m| m.parse().unwrap());
    let peers: usize = value("--peers").map_or(10, |p| p.parse().unwrap());
    runtime.block_on(soak(minutes, peers.max(CHILDREN + 2)));
}

async fn join(relay: &str, room: &str) -> Room {
    Genos::builder("genos-soak", room)
        .password("soak")
        .relay(relay)
        .same_host_only()
        .join()
        .await
        .unwrap()
}

/// A peer's own traffic: reads both channels (checking each transfer's digest) and chats.
fn serve(room: &Room, tally: &Arc<Tally>) -> Vec<tokio::task::JoinHandle<()>> {
    let chat = room.channel("chat").unwrap();
    let bulk = room.channel("bulk").unwrap();
    let reader = {
        let (tally, chat) = (tally.clone(), chat.clone());
        tokio::spawn(async move {
            while let Some(_message) = chat.recv().await {
                tally.chat.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let bulk_reader = {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(message) = bulk.recv().await {
                let (digest, body) = message.payload.split_at(32);
                let counter = if Sha256::digest(body)[..] == *digest {
                    &tally.transfers_ok
                } else {
                    &tally.transfers_bad
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let talker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHAT_EVERY);
        loop {
            tick.tick().await;
            if chat.send(vec![7u8; 64]).await.is_err() {
                return;
            }
        }
    });
    vec![reader, bulk_reader, talker]
}

async fn child(relay: &str, room: &str) {
    let room = join(relay, room).await;
    let _tasks = serve(&room, &Arc::new(Tally::default()));
    std::future::pending::<()>().await;
}

struct Peer {
    room: Room,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn spawn_child(relay: &str, room: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--child", relay, "--room", room])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

async fn leave(peer: Peer, tally: &Tally) {
    tally
        .published_by_departed
        .fetch_add(peer.room.signal_health().published, Ordering::Relaxed);
    let _ = peer.room.leave().await;
    for task in peer.tasks {
        task.abort();
    }
}

async fn soak(minutes: u64, count: usize) {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_owned();
    let room_id = format!("soak-{}", rand::random::<u32>());
    let tally = Arc::new(Tally::default());
    let mut peers = Vec::new();
    for _ in 0..count - CHILDREN {
        let room = join(&url, &room_id).await;
        let tasks = serve(&room, &tally);
        peers.push(Peer { room, tasks });
    }
    let mut children: Vec<Child> = (0..CHILDREN).map(|_| spawn_child(&url, &room_id)).collect();
    println!(
        "soak: {count} peers ({CHILDREN} child processes), {minutes} min; \
         chat every {CHAT_EVERY:?}, {} MiB transfer every {TRANSFER_EVERY:?}, churn every {CHURN_EVERY:?}",
        TRANSFER_SIZE >> 20
    );
    println!(
        "min  peers  links  rss_mib  threads  fds  events/min  chat/min  transfers_ok  bad  leaves  crashes"
    );

    let mut report = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut transfer = tokio::time::interval(TRANSFER_EVERY);
    let mut churn =
        tokio::time::interval_at(tokio::time::Instant::now() + CHURN_EVERY, CHURN_EVERY);
    let (mut leaves, mut crashes, mut churns) = (0u64, 0u64, 0u64);
    let (mut last_published, mut last_chat) = (0u64, 0u64);
    let mut series = Vec::new();
    let mut minute = 0;
    while minute < minutes {
        tokio::select! {
            _ = transfer.tick() => {
                let from = rand::rng().random_range(0..peers.len());
                let others = peers[from].room.peers();
                if let Some(&to) = others.get(rand::rng().random_range(0..others.len().max(1))) {
                    let mut body = vec![0u8; TRANSFER_SIZE];
                    rand::rng().fill(&mut body[..]);
                    let mut payload = Sha256::digest(&body).to_vec();
                    payload.extend_from_slice(&body);
                    let bulk = peers[from].room.channel("bulk").unwrap();
                    tokio::spawn(async move {
                        let _ = bulk.send_to(to, payload).await;
                    });
                }
            }
            _ = churn.tick() => {
                churns += 1;
                if churns % 2 == 0 {
                    // A child crashes (no goodbye) and another starts.
                    let i = rand::rng().random_range(0..children.len());
                    let _ = children[i].kill();
                    let _ = children[i].wait();
                    children[i] = spawn_child(&url, &room_id);
                    crashes += 1;
                } else {
                    // A peer leaves and a new one joins.
                    let i = rand::rng().random_range(0..peers.len());
                    let gone = peers.swap_remove(i);
                    leave(gone, &tally).await;
                    let room = join(&url, &room_id).await;
                    let tasks = serve(&room, &tally);
                    peers.push(Peer { room, tasks });
                    leaves += 1;
                }
            }
            _ = report.tick() => {
                minute += 1;
                let published = tally.published_by_departed.load(Ordering::Relaxed)
                    + peers.iter().map(|p| p.room.signal_health().published).sum::<u64>();
                let chat = tally.chat.load(Ordering::Relaxed);
                let links: usize = peers.iter().map(|p| p.room.peers().len()).sum();
                let rss = support::proc_status("VmRSS:") as f64 / 1024.0;
                let threads = support::proc_status("Threads:");
                let fds = open_files();
                let room_size = peers.len() + children.len();
                let links_mean = links as f64 / peers.len() as f64;
                let events = published - last_published;
                let chat_per_min = chat - last_chat;
                let ok = tally.transfers_ok.load(Ordering::Relaxed);
                let bad = tally.transfers_bad.load(Ordering::Relaxed);
                println!(
                    "{minute:>3}  {room_size:>5}  {links_mean:>5.1}  {rss:>7.1}  {threads:>7}  {fds:>3}  {events:>10}  {chat_per_min:>8}  {ok:>12}  {bad:>3}  {leaves:>6}  {crashes:>7}",
                );
                let line = serde_json::json!({
                    "minute": minute,
                    "peers": room_size,
                    "links_mean": links_mean,
                    "rss_mib": (rss * 10.0).round() / 10.0,
                    "threads": threads,
                    "open_files": fds,
                    "relay_events_per_min": events,
                    "chat_per_min": chat_per_min,
                    "transfers_ok": ok,
                    "transfers_bad": bad,
                    "leaves": leaves,
                    "crashes": crashes,
                });
                series.push(line);
                last_published = published;
                last_chat = chat;
            }
        }
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for peer in peers {
        leave(peer, &tally).await;
    }
    println!("{}", serde_json::json!({ "soak": series }));
}
