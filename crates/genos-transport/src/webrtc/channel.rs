//! A WebRTC data channel behind the `DataChannel` trait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel as RtcDataChannel, DataChannelEvent};

use super::Shared;
use crate::shared::Counters;
use crate::{DataChannel, Reliability, TransportError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Opening,
    Open,
    Closed,
}

/// What the connection keeps of each channel: enough to end it and read its buffer level.
pub(crate) struct ChannelShared {
    phase: watch::Sender<Phase>,
    buffered: AtomicUsize,
}

impl ChannelShared {
    pub(crate) fn end(&self) {
        self.phase.send_replace(Phase::Closed);
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }
}

struct Inner {
    data_channel: Arc<dyn RtcDataChannel>,
    shared: Arc<ChannelShared>,
    label: String,
    reliability: Reliability,
    max_message_size: usize,
    receiver: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    counters: Arc<Counters>,
}

/// A data channel of a [`super::WebRtcConnection`].
#[derive(Clone)]
pub struct WebRtcChannel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebRtcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcChannel")
            .field("label", &self.inner.label)
            .field("reliability", &self.inner.reliability)
            .finish_non_exhaustive()
    }
}

impl WebRtcChannel {
    /// Wraps a webrtc data channel and starts the task that reads its events.
    pub(crate) fn start(
        data_channel: Arc<dyn RtcDataChannel>,
        label: String,
        reliability: Reliability,
        connection: &Shared,
        already_open: bool,
    ) -> Self {
        let initial = if already_open {
            Phase::Open
        } else {
            Phase::Opening
        };
        let shared = Arc::new(ChannelShared {
            phase: watch::Sender::new(initial),
            buffered: AtomicUsize::new(0),
        });
        connection
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shared.clone());
        let (sender, receiver) = mpsc::channel(connection.config.receive_queue);
        let counters = connection.counters.clone();
        tokio::spawn(read_events(
            data_channel.clone(),
            shared.clone(),
            sender,
            counters.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                data_channel,
                shared,
                label,
                reliability,
                max_message_size: connection.config.max_message_size.min(
                    connection
                        .remote_max_message
                        .load(std::sync::atomic::Ordering::Acquire),
                ),
                receiver: tokio::sync::Mutex::new(receiver),
                counters,
            }),
        }
    }

    /// Waits until the channel is open (an error if it closes first).
    pub(crate) async fn wait_open(&self) -> Result<(), TransportError> {
        let mut phase = self.inner.shared.phase.subscribe();
        loop {
            match *phase.borrow_and_update() {
                Phase::Open => return Ok(()),
                Phase::Closed => return Err(TransportError::ChannelClosed),
                Phase::Opening => {}
            }
            if phase.changed().await.is_err() {
                return Err(TransportError::ChannelClosed);
            }
        }
    }

    async fn refresh_buffered(&self) {
        if let Ok(outstanding) = self.inner.data_channel.outstanding_bytes().await {
            self.inner
                .shared
                .buffered
                .store(outstanding, Ordering::Relaxed);
        }
    }
}

async fn read_events(
    data_channel: Arc<dyn RtcDataChannel>,
    shared: Arc<ChannelShared>,
    sender: mpsc::Sender<Bytes>,
    counters: Arc<Counters>,
) {
    let mut phase = shared.phase.subscribe();
    loop {
        let event = tokio::select! {
            event = data_channel.poll() => event,
            changed = phase.wait_for(|p| *p == Phase::Closed) => {
                let _ = changed;
                break;
            }
        };
        match event {
            Some(DataChannelEvent::OnOpen) => {
                shared.phase.send_if_modified(|p| {
                    let opening = *p == Phase::Opening;
                    if opening {
                        *p = Phase::Open;
                    }
                    opening
                });
            }
            Some(DataChannelEvent::OnMessage(message)) => {
                let data = message.data.freeze();
                counters.count_received(data.len() as u64);
                if sender.send(data).await.is_err() {
                    break;
                }
            }
            Some(DataChannelEvent::OnClose) | None => break,
            Some(_) => {}
        }
    }
    shared.end();
}

impl DataChannel for WebRtcChannel {
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
        self.inner.shared.buffered()
    }

    async fn send(&self, message: Bytes) -> Result<(), TransportError> {
        crate::shared::check_message_size(message.len(), self.inner.max_message_size)?;
        self.wait_open().await?;
        let len = message.len() as u64;
        // Zero-copy when the caller hands over its only reference (a freshly built frame).
        let data = message
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(shared.as_ref()));
        let counters = &self.inner.counters;
        match self.inner.reliability {
            Reliability::ReliableOrdered => {
                // Waits while the channel's buffered bytes are at the configured limit.
                self.inner
                    .data_channel
                    .send(data)
                    .await
                    .map_err(|_| TransportError::ChannelClosed)?;
            }
            _ => {
                if self.inner.data_channel.try_send(data).await.is_err() {
                    if *self.inner.shared.phase.borrow() == Phase::Closed {
                        return Err(TransportError::ChannelClosed);
                    }
                    counters.count_dropped();
                    return Ok(());
                }
            }
        }
        counters.count_sent(len);
        self.refresh_buffered().await;
        Ok(())
    }

    async fn recv(&self) -> Option<Bytes> {
        let mut receiver = self.inner.receiver.lock().await;
        let mut phase = self.inner.shared.phase.subscribe();
        tokio::select! {
            biased;
            message = receiver.recv() => message,
            _ = phase.wait_for(|p| *p == Phase::Closed) => receiver.try_recv().ok(),
        }
    }

    async fn close(&self) {
        let _ = self.inner.data_channel.close().await;
        self.inner.shared.end();
    }
}
