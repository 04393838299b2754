//! A channel of a fallback link: messages multiplexed on the WebSocket, with credit.
//!
//! The receiver holds at most the window of unread bytes per channel; it grants credit back
//! as its reader takes messages (in steps of a quarter window, so credits stay few). A sender
//! without credit waits (reliable) or drops (unreliable). A remote that sends beyond its
//! credit breaks the protocol and the link fails.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::Notify;

use super::ConnShared;
use super::wire::Frame;
use crate::shared::{self, lock};
use crate::{DataChannel, Reliability, TransportError};

/// A channel of a [`FallbackConnection`](super::FallbackConnection).
#[derive(Clone)]
pub struct FallbackChannel {
    pub(super) inner: Arc<ChannelInner>,
}

impl std::fmt::Debug for FallbackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackChannel")
            .field("id", &self.inner.id)
            .field("label", &self.inner.label)
            .field("reliability", &self.inner.reliability)
            .finish()
    }
}

pub(super) struct ChannelInner {
    pub(super) id: u32,
    label: String,
    reliability: Reliability,
    conn: Weak<ConnShared>,
    max_message_size: usize,
    window: usize,
    /// Bytes we may still send before the remote grants more.
    credit: Mutex<usize>,
    credit_granted: Notify,
    /// Messages received and not yet read, and their bytes.
    inbound: Mutex<(VecDeque<Bytes>, usize)>,
    /// Bytes read since the last credit we granted.
    consumed: AtomicUsize,
    arrived: Notify,
    /// Closed by either side or with the link: sends fail, reads drain then end.
    ended: AtomicBool,
}

impl FallbackChannel {
    pub(super) fn new(
        conn: &Arc<ConnShared>,
        id: u32,
        label: String,
        reliability: Reliability,
    ) -> Self {
        let window = conn.config.window;
        Self {
            inner: Arc::new(ChannelInner {
                id,
                label,
                reliability,
                conn: Arc::downgrade(conn),
                max_message_size: conn.config.max_message_size,
                window,
                credit: Mutex::new(window),
                credit_granted: Notify::new(),
                inbound: Mutex::new((VecDeque::new(), 0)),
                consumed: AtomicUsize::new(0),
                arrived: Notify::new(),
                ended: AtomicBool::new(false),
            }),
        }
    }
}

impl ChannelInner {
    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The channel is closed (by either side or with its link): wake everyone waiting.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.credit_granted.notify_waiters();
        self.arrived.notify_waiters();
    }

    pub(super) fn add_credit(&self, bytes: usize) {
        let mut credit = lock(&self.credit);
        // Never more than a window: a remote granting more than it was sent gains nothing.
        *credit = credit.saturating_add(bytes).min(self.window);
        drop(credit);
        self.credit_granted.notify_waiters();
    }

    /// Queues a received message; beyond the window the remote broke the protocol.
    pub(super) fn deliver(&self, message: Bytes) -> Result<(), String> {
        let mut inbound = lock(&self.inbound);
        let held = inbound.1 + message.len();
        if held > self.window {
            return Err(format!("channel {} sent beyond its credit", self.id));
        }
        inbound.1 = held;
        inbound.0.push_back(message);
        drop(inbound);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Takes `len` bytes of credit, waiting for it on a reliable channel; false when an
    /// unreliable channel has none.
    async fn take_credit(&self, len: usize) -> Result<bool, TransportError> {
        loop {
            let granted = self.credit_granted.notified();
            tokio::pin!(granted);
            granted.as_mut().enable();
            if self.is_ended() {
                return Err(TransportError::ChannelClosed);
            }
            {
                let mut credit = lock(&self.credit);
                if *credit >= len {
                    *credit -= len;
                    return Ok(true);
                }
            }
            if self.reliability == Reliability::UnreliableUnordered {
                return Ok(false);
            }
            granted.await;
        }
    }

    /// The reader took `len` bytes: grant credit back once a quarter window is read.
    fn consumed(&self, len: usize) {
        let total = self.consumed.fetch_add(len, Ordering::AcqRel) + len;
        if total >= self.window / 4 {
            let granted = self.consumed.swap(0, Ordering::AcqRel);
            if granted > 0
                && let Some(conn) = self.conn.upgrade()
            {
                conn.send_control(&Frame::Credit {
                    id: self.id,
                    bytes: u32::try_from(granted).unwrap_or(u32::MAX),
                });
            }
        }
    }
}

impl DataChannel for FallbackChannel {
    fn label(&self) -> &str {
        &self.inner.label
    }

    fn reliability(&self) -> Reliability {
        self.inner.reliability
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    fn buffered_amount(&self) -> usize {
        self.inner
            .conn
            .upgrade()
            .map_or(0, |conn| conn.queued.load(Ordering::Acquire))
    }

    async fn send(&self, message: Bytes) -> Result<(), TransportError> {
        let inner = &self.inner;
        shared::check_message_size(message.len(), inner.max_message_size)?;
        let conn = inner.conn.upgrade().ok_or_else(shared::closed)?;
        if !inner.take_credit(message.len()).await? {
            conn.counters.count_dropped();
            return Ok(());
        }
        let len = message.len() as u64;
        let frame = Frame::Data {
            id: inner.id,
            payload: message,
        }
        .encode();
        if inner.reliability == Reliability::UnreliableUnordered {
            // Never waits: a full writer queue drops the message, as a full SCTP buffer would.
            if conn.data.try_send(frame).is_err() {
                conn.counters.count_dropped();
                inner.add_credit(len as usize);
                return Ok(());
            }
        } else {
            conn.send_data(frame)
                .await
                .map_err(|_| TransportError::ChannelClosed)?;
        }
        conn.counters.count_sent(len);
        Ok(())
    }

    async fn recv(&self) -> Option<Bytes> {
        let inner = &self.inner;
        loop {
            let arrived = inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = {
                let mut inbound = lock(&inner.inbound);
                let next = inbound.0.pop_front();
                if let Some(message) = &next {
                    inbound.1 -= message.len();
                }
                next
            };
            if let Some(message) = next {
                inner.consumed(message.len());
                return Some(message);
            }
            if inner.is_ended() {
                return None;
            }
            arrived.await;
        }
    }

    async fn close(&self) {
        let inner = &self.inner;
        if inner.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        inner.end();
        if let Some(conn) = inner.conn.upgrade() {
            lock(&conn.channels).remove(&inner.id);
            // Behind this channel's queued data, so the remote reads all of it first.
            let _ = conn
                .send_data(Frame::CloseChannel { id: inner.id }.encode())
                .await;
        }
    }
}
