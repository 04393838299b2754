//! Where a frame for a peer goes: the routing table the room machine keeps (through the
//! driver's `Establish` and `Retire` actions) and the sending side of every channel.
//!
//! In a full-mesh room each connected peer is routed over its own link. Channels read the
//! table directly, so sending never waits on the driver. In a cells room a message is cut
//! into overlay chunks handed to the driver, whose overlay routes them (`mesh/`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, join_all};
use genos_cellmesh::Input as MeshInput;
use genos_crypto::PeerId;
use tokio::sync::mpsc;

use crate::channel::{self, Progress, SendOptions, SendReport, Target};
use crate::link::Link;
use crate::media::RoomMedia;
use crate::mesh::wire::ChunkMeta;
use crate::shared::Shared;
use crate::stats::bump;
use crate::{MAX_METADATA_LEN, RoomError};

/// The links by peer, and the numbering of outgoing messages.
pub(crate) struct Router {
    shared: Arc<Shared>,
    links: RwLock<HashMap<PeerId, Arc<Link>>>,
    next_message: AtomicU64,
    /// (Cells rooms) where sends go, and the chunk size.
    mesh: Option<(mpsc::Sender<MeshInput>, usize)>,
    /// Media tracks, ours and the peers'.
    pub(crate) media: RoomMedia,
}

/// A cells-room sender waits at most this long in total for its links' overlay queues to
/// drain below half before it queues anyway (frames beyond a full queue are dropped and
/// repaired).
const MESH_PACING_LIMIT: Duration = Duration::from_secs(10);

impl Router {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            links: RwLock::new(HashMap::new()),
            next_message: AtomicU64::new(0),
            mesh: None,
            media: RoomMedia::default(),
        }
    }

    /// Makes this a cells room's router: sends become overlay commands to `commands`, in
    /// chunks of `chunk_size` bytes.
    pub(crate) fn with_mesh(
        mut self,
        commands: mpsc::Sender<MeshInput>,
        chunk_size: usize,
    ) -> Self {
        self.mesh = Some((commands, chunk_size.max(1)));
        self
    }

    /// Waits while any link holds more than half its overlay queue (a large message must
    /// not overrun the queues and lean on repair), or the overlay more than half of the
    /// directed chunks it may keep awaiting acks (beyond the bound it gives up the oldest),
    /// at most until `deadline`.
    async fn mesh_pace(&self, deadline: Instant) {
        loop {
            let busy = self.shared.mesh_backpressure()
                || self
                    .read()
                    .values()
                    .any(|link| link.mesh_backlog() > link.mesh_capacity() / 2);
            if !busy || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends through the overlay (cells rooms): checked like any send before.
    async fn send_mesh(
        &self,
        commands: &mpsc::Sender<MeshInput>,
        chunk_size: usize,
        channel: &str,
        payload: Bytes,
        options: SendOptions,
    ) -> Result<SendReport, RoomError> {
        let shared = &self.shared;
        let unreliable = options.unreliable;
        if unreliable && payload.len() > chunk_size {
            return Err(RoomError::MessageTooLarge {
                size: payload.len(),
                limit: chunk_size,
            });
        }
        let local = shared.local;
        let targets: Option<Vec<PeerId>> = match options.target {
            Target::All => None,
            Target::Peer(peer) => Some(vec![peer]),
            Target::Peers(mut peers) => {
                peers.sort();
                peers.dedup();
                Some(peers)
            }
        };
        let mut report = SendReport {
            via_overlay: true,
            ..SendReport::default()
        };
        let targets = match targets {
            Some(mut peers) => {
                if let Some(at) = peers.iter().position(|p| *p == local) {
                    peers.remove(at);
                    report.failed.push((local, RoomError::UnknownPeer(local)));
                }
                if peers.is_empty() {
                    return Ok(report);
                }
                Some(peers)
            }
            None => None,
        };
        let message = self.next_message.fetch_add(1, Ordering::Relaxed);
        report.message = Some(message);
        let total = payload.len();
        let deadline = Instant::now() + MESH_PACING_LIMIT;
        let mut offset = 0;
        loop {
            let end = (offset + chunk_size).min(total);
            let header = ChunkMeta {
                channel: channel.to_owned(),
                message,
                offset: offset as u64,
                total: total as u64,
                meta: (offset == 0)
                    .then(|| options.meta.as_ref().map(|m| m.to_vec()))
                    .flatten(),
                unreliable,
            };
            let meta = header.encode();
            let chunk = payload.slice(offset..end);
            let input = match &targets {
                None => MeshInput::Broadcast {
                    meta,
                    payload: chunk,
                },
                Some(peers) if peers.len() == 1 => MeshInput::SendTo {
                    target: *peers.first().map_or(local.as_bytes(), |p| p.as_bytes()),
                    meta,
                    payload: chunk,
                },
                Some(peers) => MeshInput::SendToMany {
                    targets: peers.iter().map(|p| *p.as_bytes()).collect(),
                    meta,
                    payload: chunk,
                },
            };
            self.mesh_pace(deadline).await;
            if commands.send(input).await.is_err() {
                return Err(RoomError::Left);
            }
            offset = end;
            if let Some(progress) = options.progress.as_ref() {
                let peer = match &targets {
                    Some(peers) if peers.len() == 1 => peers.first().copied().unwrap_or(local),
                    _ => local,
                };
                progress(Progress {
                    peer,
                    message,
                    done: offset as u64,
                    total: total as u64,
                });
            }
            if offset >= total {
                break;
            }
        }
        let counters = &shared.counters;
        if unreliable {
            bump(&counters.datagrams_sent, 1);
        } else {
            bump(&counters.messages_sent, 1);
            bump(&counters.bytes_sent, total as u64);
        }
        report.sent = match targets {
            Some(peers) => peers,
            None => {
                let mut linked: Vec<PeerId> = self.read().keys().copied().collect();
                linked.sort();
                linked
            }
        };
        Ok(report)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<PeerId, Arc<Link>>> {
        self.links
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<PeerId, Arc<Link>>> {
        self.links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The link frames for `peer` go through.
    pub(crate) fn link(&self, peer: &PeerId) -> Option<Arc<Link>> {
        self.read().get(peer).cloned()
    }

    /// Every link, in no particular order.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.read().values().cloned().collect()
    }

    /// Routes `link.peer` over `link`.
    pub(crate) fn insert(&self, link: Arc<Link>) {
        self.write().insert(link.peer, link);
    }

    /// Stops routing `peer` over link `dial`; returns that link.
    pub(crate) fn remove(&self, peer: &PeerId, dial: u64) -> Option<Arc<Link>> {
        let mut links = self.write();
        match links.get(peer) {
            Some(link) if link.dial == dial => links.remove(peer),
            _ => None,
        }
    }

    /// Removes every route; returns the links.
    pub(crate) fn drain(&self) -> Vec<Arc<Link>> {
        self.write().drain().map(|(_, link)| link).collect()
    }
}

impl channel::Sender for Router {
    fn send<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        options: SendOptions,
    ) -> BoxFuture<'a, Result<SendReport, RoomError>> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.has_left() {
                return Err(RoomError::Left);
            }
            if payload.len() > shared.limits.max_message_size {
                return Err(RoomError::MessageTooLarge {
                    size: payload.len(),
                    limit: shared.limits.max_message_size,
                });
            }
            let meta = options.meta.as_deref();
            if let Some(meta) = meta.filter(|m| m.len() > MAX_METADATA_LEN) {
                return Err(RoomError::MetadataTooLarge {
                    size: meta.len(),
                    limit: MAX_METADATA_LEN,
                });
            }
            if let Some((commands, chunk_size)) = &self.mesh {
                return self
                    .send_mesh(commands, *chunk_size, channel, payload, options)
                    .await;
            }
            let targets: Vec<(PeerId, Option<Arc<Link>>)> = match options.target {
                Target::All => self
                    .links()
                    .into_iter()
                    .map(|l| (l.peer, Some(l)))
                    .collect(),
                Target::Peer(peer) => vec![(peer, self.link(&peer))],
                Target::Peers(mut peers) => {
                    peers.sort();
                    peers.dedup();
                    peers.into_iter().map(|p| (p, self.link(&p))).collect()
                }
            };
            let message = self.next_message.fetch_add(1, Ordering::Relaxed);
            let progress = options.progress.as_ref();
            let unreliable = options.unreliable;
            let payload = &payload;
            let sends = targets.into_iter().map(|(peer, link)| async move {
                let result = match link {
                    Some(link) if unreliable => {
                        link.send_datagram(channel, message, payload, meta).await
                    }
                    Some(link) => {
                        link.send_message(channel, message, payload, meta, progress)
                            .await
                    }
                    None => Err(RoomError::UnknownPeer(peer)),
                };
                (peer, result)
            });
            let mut report = SendReport {
                message: Some(message),
                ..SendReport::default()
            };
            for (peer, result) in join_all(sends).await {
                match result {
                    Ok(()) => {
                        let counters = &shared.counters;
                        if unreliable {
                            bump(&counters.datagrams_sent, 1);
                        } else {
                            bump(&counters.messages_sent, 1);
                            bump(&counters.bytes_sent, payload.len() as u64);
                        }
                        report.sent.push(peer);
                    }
                    Err(error) => report.failed.push((peer, error)),
                }
            }
            Ok(report)
        })
    }
}
