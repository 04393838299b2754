//! Where a frame for a peer goes: the routing table the room machine keeps (through the
//! driver's `Establish` and `Retire` actions) and the sending side of every channel.
//!
//! In a full-mesh room each connected peer is routed over its own link. Channels read the
//! table directly, so sending never waits on the driver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use futures::future::{BoxFuture, join_all};
use genos_crypto::PeerId;

use crate::channel::{self, SendOptions, SendReport, Target};
use crate::link::Link;
use crate::shared::Shared;
use crate::stats::bump;
use crate::{MAX_METADATA_LEN, RoomError};

/// The links by peer, and the numbering of outgoing messages.
pub(crate) struct Router {
    shared: Arc<Shared>,
    links: RwLock<HashMap<PeerId, Arc<Link>>>,
    next_message: AtomicU64,
}

impl Router {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            links: RwLock::new(HashMap::new()),
            next_message: AtomicU64::new(0),
        }
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
            let mut report = SendReport::default();
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
