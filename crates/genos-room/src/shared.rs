//! State shared by the room handle, its channels, its links and its driver: who we are, the
//! limits, the delivery registry, the counters and the event stream. It sits below
//! `channel.rs`, `link.rs` and `router.rs`, which all read it; it imports none of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use genos_crypto::{PeerId, SealKey};
use tokio::sync::{broadcast, mpsc};

use crate::registry::Registry;
use crate::stats::Counters;
use crate::{RoomEvent, RoomLimits, lock};

/// See the module docs.
pub(crate) struct Shared {
    pub(crate) local: PeerId,
    pub(crate) limits: RoomLimits,
    pub(crate) data_key: SealKey,
    /// Zero of the links' millisecond clocks.
    pub(crate) epoch: Instant,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) counters: Counters,
    /// (Cells rooms) where links hand overlay messages to the driver.
    mesh_inbox: OnceLock<mpsc::Sender<(PeerId, Bytes)>>,
    events: Mutex<Option<broadcast::Sender<RoomEvent>>>,
    left: AtomicBool,
    /// (Cells rooms) the overlay holds more than half of what it may keep of directed
    /// sends awaiting acks: senders wait (see `Router::mesh_pace`).
    mesh_backpressure: AtomicBool,
}

impl Shared {
    /// New shared state, and the first receiver of the room's events (which sees them from
    /// the start).
    pub(crate) fn new(
        local: PeerId,
        limits: RoomLimits,
        data_key: SealKey,
    ) -> (Self, broadcast::Receiver<RoomEvent>) {
        let (events, first) = broadcast::channel(limits.event_capacity.max(1));
        let shared = Self {
            local,
            limits,
            data_key,
            epoch: Instant::now(),
            registry: Arc::new(Mutex::new(Registry::new(limits))),
            counters: Counters::default(),
            mesh_inbox: OnceLock::new(),
            events: Mutex::new(Some(events)),
            left: AtomicBool::new(false),
            mesh_backpressure: AtomicBool::new(false),
        };
        (shared, first)
    }

    /// Where links hand overlay messages (cells rooms only).
    pub(crate) fn mesh_inbox(&self) -> Option<&mpsc::Sender<(PeerId, Bytes)>> {
        self.mesh_inbox.get()
    }

    /// Makes this a cells room whose links hand overlay messages to `inbox`.
    pub(crate) fn set_mesh_inbox(&self, inbox: mpsc::Sender<(PeerId, Bytes)>) {
        let _ = self.mesh_inbox.set(inbox);
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Reports an event to every reader (none after the room has left).
    pub(crate) fn emit(&self, event: RoomEvent) {
        if let Some(events) = lock(&self.events).as_ref() {
            let _ = events.send(event);
        }
    }

    /// A new reader of the room's events, or `None` once the room has left.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<RoomEvent>> {
        lock(&self.events)
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    pub(crate) fn mesh_backpressure(&self) -> bool {
        self.mesh_backpressure.load(Ordering::Relaxed)
    }

    pub(crate) fn set_mesh_backpressure(&self, on: bool) {
        self.mesh_backpressure.store(on, Ordering::Relaxed);
    }

    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Ordering::Relaxed)
    }

    /// Marks the room left: sends are refused from now on.
    pub(crate) fn mark_left(&self) {
        self.left.store(true, Ordering::Relaxed);
    }

    /// Ends the channels and the event stream.
    pub(crate) fn close(&self) {
        self.registry().close();
        lock(&self.events).take();
    }
}
