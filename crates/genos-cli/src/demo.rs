//! `genos demo`: peers join a room, meet, chat, move a file with progress and leave, written
//! against the room layer only (any signaling and transport backends).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos::crypto::PeerId;
use genos::room::{Room, RoomConfig, RoomError, RoomEvent, SendOptions};
use genos::signal::Signaling;
use genos::transport::Transport;
use sha2::{Digest, Sha256};

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The room layer refused something.
    #[error("room: {0}")]
    Room(#[from] RoomError),
    /// The peers did not finish a step within the demo's time limit.
    #[error("the peers did not finish {step} within {limit:?}")]
    Timeout {
        /// The step that did not finish.
        step: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// A received file did not match what was sent.
    #[error("the file received by {0} does not match the one sent")]
    Corrupt(String),
    /// Fewer than two peers.
    #[error("the demo needs at least two peers")]
    TooFewPeers,
}

/// What the demo reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DemoEvent {
    /// A peer joined the room.
    Joined {
        /// The peer.
        peer: PeerId,
    },
    /// A peer is connected to another one.
    Met {
        /// Who.
        peer: PeerId,
        /// Whom.
        other: PeerId,
    },
    /// A chat line arrived.
    Chat {
        /// The receiver.
        peer: PeerId,
        /// The sender.
        from: PeerId,
        /// The text.
        text: String,
    },
    /// The file's progress at a receiver, in whole percent (reported every 25%).
    FileProgress {
        /// The receiver.
        peer: PeerId,
        /// Percent done.
        percent: u64,
    },
    /// A receiver has the whole file and its SHA-256 matches.
    FileReceived {
        /// The receiver.
        peer: PeerId,
        /// Size in bytes.
        bytes: usize,
    },
    /// A peer left.
    Left {
        /// The peer.
        peer: PeerId,
    },
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DemoReport {
    /// Peers that took part.
    pub peers: usize,
    /// Links established (one per pair).
    pub connections: usize,
    /// Chat lines delivered.
    pub chat_lines: usize,
    /// Copies of the file received intact.
    pub files_received: usize,
    /// The file's size.
    pub file_bytes: usize,
    /// From start until every peer had joined (key derived, relay subscribed).
    pub joined: Duration,
    /// From start until every peer was connected to every other.
    pub all_connected: Duration,
    /// Time to move the file to every other peer.
    pub file_transfer: Duration,
    /// From start until every peer had left.
    pub total: Duration,
}

/// Limit on each step, so a broken backend fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

async fn step<T>(
    step: &'static str,
    future: impl Future<Output = Result<T, DemoError>>,
) -> Result<T, DemoError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| DemoError::Timeout {
            step,
            limit: STEP_TIMEOUT,
        })?
}

/// Runs the demo: one room per `(signaling, peer id)`, all on `transport`, in the room
/// `config`; the first peer sends a file of `file_bytes` bytes to the others. `on_event`
/// sees what happens as it happens.
pub async fn run<S, T>(
    peers: Vec<(S, PeerId)>,
    transport: T,
    config: RoomConfig,
    file_bytes: usize,
    mut on_event: impl FnMut(&DemoEvent),
) -> Result<DemoReport, DemoError>
where
    S: Signaling,
    T: Transport + Clone,
{
    let start = Instant::now();
    let count = peers.len();
    if count < 2 {
        return Err(DemoError::TooFewPeers);
    }
    let mut report = DemoReport {
        peers: count,
        file_bytes,
        ..DemoReport::default()
    };

    let mut rooms = Vec::with_capacity(count);
    for (signaling, id) in peers {
        rooms.push(Room::join(signaling, transport.clone(), id, config.clone()).await?);
        on_event(&DemoEvent::Joined { peer: id });
    }
    report.joined = start.elapsed();

    // Meet: every room sees every other peer join.
    let ids: Vec<PeerId> = rooms.iter().map(Room::local_peer).collect();
    // Room for every meeting there can be, so a report is never dropped.
    let (met_tx, mut met_rx) = tokio::sync::mpsc::channel(count * count);
    let mut meeting = Vec::new();
    for room in &rooms {
        let mut events = room.events();
        let me = room.local_peer();
        let mut missing: HashSet<PeerId> = ids.iter().copied().filter(|p| *p != me).collect();
        let met = met_tx.clone();
        meeting.push(async move {
            while !missing.is_empty() {
                match events.next().await {
                    Some(RoomEvent::PeerJoined { peer }) => {
                        if missing.remove(&peer) {
                            let _ = met.try_send(DemoEvent::Met {
                                peer: me,
                                other: peer,
                            });
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
    }
    drop(met_tx);
    let meet = futures::future::join_all(meeting);
    step("meeting", async {
        let mut meet = std::pin::pin!(meet);
        loop {
            tokio::select! {
                _ = &mut meet => return Ok(()),
                Some(event) = met_rx.recv() => {
                    report.connections += 1;
                    on_event(&event);
                }
            }
        }
    })
    .await?;
    while let Ok(event) = met_rx.try_recv() {
        report.connections += 1;
        on_event(&event);
    }
    report.connections /= 2;
    report.all_connected = start.elapsed();

    // Chat: everyone greets everyone.
    let chats: Vec<_> = rooms
        .iter()
        .map(|r| r.channel("chat"))
        .collect::<Result<_, _>>()?;
    for (room, chat) in rooms.iter().zip(&chats) {
        let text = format!("hello from {}", room.local_peer().short());
        chat.send(Bytes::from(text)).await?;
    }
    for (room, chat) in rooms.iter().zip(&chats) {
        for _ in 1..count {
            let message = step("chat", async {
                chat.recv().await.ok_or(DemoError::Room(RoomError::Left))
            })
            .await?;
            report.chat_lines += 1;
            on_event(&DemoEvent::Chat {
                peer: room.local_peer(),
                from: message.from,
                text: String::from_utf8_lossy(&message.payload).into_owned(),
            });
        }
    }

    // A file from the first peer to all others, with progress on the receiving side.
    let file: Vec<u8> = (0..file_bytes).map(|i| (i % 251) as u8).collect();
    let digest = Sha256::digest(&file);
    let transfer_start = Instant::now();
    let receivers: Vec<_> = rooms
        .iter()
        .skip(1)
        .map(|room| {
            let channel = room.channel("files")?;
            let progress = channel.progress(4096);
            Ok::<_, RoomError>((room.local_peer(), channel, progress))
        })
        .collect::<Result<_, _>>()?;
    let sender = rooms.first().map(|r| r.channel("files")).transpose()?;
    let send = async {
        if let Some(sender) = sender {
            sender
                .send_with(file, SendOptions::default().with_meta("demo.bin"))
                .await?;
        }
        Ok::<_, DemoError>(())
    };
    // Four steps (25, 50, 75, 100 %) per receiver at most.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::channel(4 * count);
    let receive =
        futures::future::join_all(receivers.into_iter().map(|(peer, channel, mut progress)| {
            let progress_tx = progress_tx.clone();
            async move {
                let mut next = 25;
                let mut report = |done: u64, total: u64| {
                    let percent = done * 100 / total.max(1);
                    while percent >= next && next <= 100 {
                        let _ = progress_tx.try_send(DemoEvent::FileProgress {
                            peer,
                            percent: next,
                        });
                        next += 25;
                    }
                };
                let got = async {
                    let message = channel.recv().await.ok_or(RoomError::Left)?;
                    if Sha256::digest(&message.payload) != digest {
                        return Err(DemoError::Corrupt(peer.short()));
                    }
                    Ok(DemoEvent::FileReceived {
                        peer,
                        bytes: message.payload.len(),
                    })
                };
                let mut got = std::pin::pin!(got);
                let result = loop {
                    tokio::select! {
                        result = &mut got => break result,
                        Some(p) = progress.next() => report(p.done, p.total),
                    }
                };
                while let Some(p) = progress.next_ready() {
                    report(p.done, p.total);
                }
                result
            }
        }));
    drop(progress_tx);
    let received = step("file transfer", async {
        let (sent, received) = futures::join!(send, async {
            let mut receive = std::pin::pin!(receive);
            loop {
                tokio::select! {
                    results = &mut receive => return results,
                    Some(event) = progress_rx.recv() => on_event(&event),
                }
            }
        });
        sent?;
        Ok(received)
    })
    .await?;
    while let Ok(event) = progress_rx.try_recv() {
        on_event(&event);
    }
    for result in received {
        let event = result?;
        report.files_received += 1;
        on_event(&event);
    }
    report.file_transfer = transfer_start.elapsed();

    futures::future::join_all(rooms.iter().map(Room::leave)).await;
    for id in ids {
        on_event(&DemoEvent::Left { peer: id });
    }
    report.total = start.elapsed();
    Ok(report)
}
