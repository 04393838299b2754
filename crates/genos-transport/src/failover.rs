//! `FailoverTransport`: a direct link when one can be made, a fallback link when not.
//!
//! Wraps two backends: `direct` (WebRTC) and `fallback` (a
//! [`FallbackTransport`](crate::fallback::FallbackTransport) through a hub). The offerer tries
//! the direct path first; when it fails before connecting (ICE failed) or has not connected
//! within [`FailoverConfig::direct_timeout`], the offerer drops it and offers the fallback
//! path instead, and the answerer follows. The layer above sees one connection: its channels
//! and tracks are those of whichever path connected. Built without a direct backend
//! ([`FailoverTransport::fallback_only`], `--no-direct`), every link takes the fallback path
//! at once.
//!
//! Signals carry a one-byte path tag ([`TAG_DIRECT`], [`TAG_FALLBACK`]) before the path's
//! own bytes. A link stays on the path it connected with: when it later fails, the layer
//! above redials, and the new link tries the direct path first again, so a room moves back
//! to direct links once they work. An answerer that already connected directly and then
//! receives a fallback offer (both sides raced the timeout) reports
//! [`ConnectionState::Failed`], and the room redials.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::media::{LocalTrack, TrackSpec};
use crate::shared::{self, EventStream, lock};
use crate::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, DataChannel, Reliability, Role,
    Transport, TransportError, TransportLimits,
};

/// Tag of a signal for the direct path.
pub const TAG_DIRECT: u8 = b'D';
/// Tag of a signal for the fallback path.
pub const TAG_FALLBACK: u8 = b'F';

/// Settings of a [`FailoverTransport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailoverConfig {
    /// How long the offerer gives the direct path to connect before it switches to the
    /// fallback. Default 10 s (a direct link on a working network connects in well under a
    /// second; ICE gives up on a broken one only after tens of seconds).
    pub direct_timeout: Duration,
    /// Capacity of each connection's event queue. Default 256.
    pub events_capacity: usize,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            direct_timeout: Duration::from_secs(10),
            events_capacity: 256,
        }
    }
}

impl FailoverConfig {
    /// Sets the direct path's time to connect.
    pub fn with_direct_timeout(mut self, timeout: Duration) -> Self {
        self.direct_timeout = timeout;
        self
    }
}

/// Direct links with a fallback path. Cheap to clone.
pub struct FailoverTransport<D, F> {
    inner: Arc<Backends<D, F>>,
}

struct Backends<D, F> {
    direct: Option<D>,
    fallback: F,
    config: FailoverConfig,
}

impl<D, F> Clone for FailoverTransport<D, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<D, F> std::fmt::Debug for FailoverTransport<D, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverTransport")
            .field("direct", &self.inner.direct.is_some())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<D: Transport, F: Transport> FailoverTransport<D, F> {
    /// Tries `direct` first, `fallback` when it fails.
    pub fn new(direct: D, fallback: F, config: FailoverConfig) -> Self {
        Self::build(Some(direct), fallback, config)
    }

    /// Every link through `fallback` (no direct attempt).
    pub fn fallback_only(fallback: F, config: FailoverConfig) -> Self {
        Self::build(None, fallback, config)
    }

    fn build(direct: Option<D>, fallback: F, config: FailoverConfig) -> Self {
        Self {
            inner: Arc::new(Backends {
                direct,
                fallback,
                config,
            }),
        }
    }
}

/// Which path a connection runs on.
enum Path<D: Connection, F: Connection> {
    None,
    Direct(D),
    Fallback(F),
}

impl<D: Connection, F: Connection> Clone for Path<D, F> {
    fn clone(&self) -> Self {
        match self {
            Self::None => Self::None,
            Self::Direct(d) => Self::Direct(d.clone()),
            Self::Fallback(f) => Self::Fallback(f.clone()),
        }
    }
}

/// Which path a link took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// The direct path (WebRTC).
    Direct,
    /// Through the fallback hub.
    Fallback,
}

type Chan<D, F> = FailoverChannel<<D as Connection>::Channel, <F as Connection>::Channel>;

/// The current path and its generation (events of older paths are ignored).
type Current<D, F> = (
    u64,
    Path<<D as Transport>::Connection, <F as Transport>::Connection>,
);

struct Shared<D: Transport, F: Transport> {
    backends: Arc<Backends<D, F>>,
    role: Role,
    path: Mutex<Current<D, F>>,
    state: watch::Sender<ConnectionState>,
    events: mpsc::Sender<ConnectionEvent<Chan<D::Connection, F::Connection>>>,
}

/// A link on one of two paths. Cheap to clone; clones share the link.
pub struct FailoverConnection<D: Transport, F: Transport> {
    shared: Arc<Shared<D, F>>,
}

impl<D: Transport, F: Transport> Clone for FailoverConnection<D, F> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<D: Transport, F: Transport> std::fmt::Debug for FailoverConnection<D, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverConnection")
            .field("role", &self.shared.role)
            .field("path", &self.path())
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl<D: Transport, F: Transport> Transport for FailoverTransport<D, F> {
    type Connection = FailoverConnection<D, F>;
    type Events = EventStream<Chan<D::Connection, F::Connection>>;

    async fn connect(
        &self,
        role: Role,
    ) -> Result<(Self::Connection, Self::Events), TransportError> {
        let (events, stream) = EventStream::new(self.inner.config.events_capacity);
        let shared = Arc::new(Shared {
            backends: self.inner.clone(),
            role,
            path: Mutex::new((0, Path::None)),
            state: watch::Sender::new(ConnectionState::New),
            events,
        });
        if role == Role::Offerer {
            match &self.inner.direct {
                Some(direct) => {
                    let generation = Shared::start_direct(&shared, direct, None).await?;
                    Shared::watch_direct(&shared, generation);
                }
                None => Shared::start_fallback(&shared, None).await?,
            }
        }
        Ok((FailoverConnection { shared }, stream))
    }
}

impl<D: Transport, F: Transport> Shared<D, F> {
    /// Makes `path` the connection's path; returns its generation (events of older paths
    /// are ignored from now on). The old path is closed.
    fn take_path(me: &Arc<Self>, path: Path<D::Connection, F::Connection>) -> u64 {
        let (generation, old) = {
            let mut current = lock(&me.path);
            current.0 += 1;
            let old = std::mem::replace(&mut current.1, path);
            (current.0, old)
        };
        me.set_state(ConnectionState::Connecting);
        match old {
            Path::Direct(old) => drop(tokio::spawn(async move { old.close().await })),
            Path::Fallback(old) => drop(tokio::spawn(async move { old.close().await })),
            Path::None => {}
        }
        generation
    }

    fn is_current(&self, generation: u64) -> bool {
        lock(&self.path).0 == generation
    }

    fn set_state(&self, state: ConnectionState) {
        if shared::advance_state(&self.state, state) {
            let _ = self.events.try_send(ConnectionEvent::StateChanged(state));
        }
    }

    async fn emit(&self, event: ConnectionEvent<Chan<D::Connection, F::Connection>>) {
        let _ = self.events.send(event).await;
    }

    /// Makes a direct connection in our role the path (an answerer's handles `offer` first);
    /// returns its generation.
    async fn start_direct(
        me: &Arc<Self>,
        direct: &D,
        offer: Option<Bytes>,
    ) -> Result<u64, TransportError> {
        let (conn, events) = direct.connect(me.role).await?;
        if let Some(offer) = offer {
            conn.handle_signal(offer).await?;
        }
        let generation = Self::take_path(me, Path::Direct(conn));
        Self::pump(
            me,
            generation,
            PathKind::Direct,
            events,
            FailoverChannel::Direct,
        );
        Ok(generation)
    }

    /// Makes a fallback connection in our role the path, dropping any direct attempt (an
    /// answerer's handles `offer` first; an offerer's emits its own offer).
    async fn start_fallback(me: &Arc<Self>, offer: Option<Bytes>) -> Result<(), TransportError> {
        let (conn, events) = me.backends.fallback.connect(me.role).await?;
        if let Some(offer) = offer {
            conn.handle_signal(offer).await?;
        }
        let generation = Self::take_path(me, Path::Fallback(conn));
        Self::pump(
            me,
            generation,
            PathKind::Fallback,
            events,
            FailoverChannel::Fallback,
        );
        Ok(())
    }

    /// The offerer's switch after a failed or slow direct setup.
    async fn switch_to_fallback(me: &Arc<Self>, why: &str) {
        tracing::debug!(why, "switching to the fallback path");
        if let Err(error) = Self::start_fallback(me, None).await {
            tracing::debug!(%error, "the fallback path cannot start");
            me.set_state(ConnectionState::Failed);
        }
    }

    /// Gives the direct path `direct_timeout` to connect; then switches to the fallback.
    fn watch_direct(me: &Arc<Self>, generation: u64) {
        let weak = Arc::downgrade(me);
        let timeout = me.backends.config.direct_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(me) = weak.upgrade() else { return };
            if me.is_current(generation) && *me.state.borrow() != ConnectionState::Connected {
                Self::switch_to_fallback(&me, "direct setup too slow").await;
            }
        });
    }

    /// Forwards one path's events as the connection's (signals tagged with the path, channels
    /// wrapped), until the path is replaced or the connection is gone.
    fn pump<C: Send + 'static>(
        me: &Arc<Self>,
        generation: u64,
        kind: PathKind,
        mut events: impl futures::Stream<Item = ConnectionEvent<C>> + Send + Unpin + 'static,
        wrap: fn(C) -> Chan<D::Connection, F::Connection>,
    ) {
        let tag = match kind {
            PathKind::Direct => TAG_DIRECT,
            PathKind::Fallback => TAG_FALLBACK,
        };
        let weak: Weak<Self> = Arc::downgrade(me);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Some(me) = weak.upgrade() else { return };
                if !me.is_current(generation) {
                    return;
                }
                match event {
                    ConnectionEvent::StateChanged(state) => {
                        Self::on_path_state(&me, generation, kind, state).await;
                    }
                    other => me.emit(map_event(other, wrap, tag)).await,
                }
            }
        });
    }

    async fn on_path_state(
        me: &Arc<Self>,
        generation: u64,
        kind: PathKind,
        state: ConnectionState,
    ) {
        let connected_before = *me.state.borrow() == ConnectionState::Connected;
        match state {
            ConnectionState::Failed
                if kind == PathKind::Direct && !connected_before && me.role == Role::Offerer =>
            {
                Self::switch_to_fallback(me, "direct setup failed").await;
            }
            // An answerer's failed direct attempt waits for the offerer's fallback offer
            // (the layer above times out a setup that never completes).
            ConnectionState::Failed
                if kind == PathKind::Direct && !connected_before && me.role == Role::Answerer => {}
            ConnectionState::New | ConnectionState::Connecting => {}
            other if me.is_current(generation) => me.set_state(other),
            _ => {}
        }
    }
}

fn map_event<C, D: DataChannel, F: DataChannel>(
    event: ConnectionEvent<C>,
    wrap: fn(C) -> FailoverChannel<D, F>,
    tag: u8,
) -> ConnectionEvent<FailoverChannel<D, F>> {
    match event {
        ConnectionEvent::Signal(bytes) => {
            let mut tagged = BytesMut::with_capacity(bytes.len() + 1);
            tagged.put_u8(tag);
            tagged.put_slice(&bytes);
            ConnectionEvent::Signal(tagged.freeze())
        }
        ConnectionEvent::ChannelOpened(channel) => ConnectionEvent::ChannelOpened(wrap(channel)),
        ConnectionEvent::TrackReceived(track) => ConnectionEvent::TrackReceived(track),
        ConnectionEvent::TrackEnded { id } => ConnectionEvent::TrackEnded { id },
        ConnectionEvent::StateChanged(state) => ConnectionEvent::StateChanged(state),
    }
}

impl<D: Transport, F: Transport> FailoverConnection<D, F> {
    /// The path the link runs on (`None` before either side chose one).
    pub fn path(&self) -> Option<PathKind> {
        match lock(&self.shared.path).1 {
            Path::None => None,
            Path::Direct(_) => Some(PathKind::Direct),
            Path::Fallback(_) => Some(PathKind::Fallback),
        }
    }

    fn current(&self) -> Path<D::Connection, F::Connection> {
        lock(&self.shared.path).1.clone()
    }

    async fn connected(&self) -> Result<Path<D::Connection, F::Connection>, TransportError> {
        shared::wait_connected(&self.shared.state).await?;
        Ok(self.current())
    }
}

/// Limits reported before a path is chosen: the WebRTC backend's defaults.
const UNCHOSEN_LIMITS: TransportLimits = TransportLimits {
    max_message_size: 256 * 1024,
    send_buffer: 1024 * 1024,
    max_channels: 64,
};

impl<D: Transport, F: Transport> Connection for FailoverConnection<D, F> {
    type Channel = Chan<D::Connection, F::Connection>;

    fn role(&self) -> Role {
        self.shared.role
    }

    fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    fn limits(&self) -> TransportLimits {
        match self.current() {
            Path::None => UNCHOSEN_LIMITS,
            Path::Direct(d) => d.limits(),
            Path::Fallback(f) => f.limits(),
        }
    }

    async fn handle_signal(&self, message: Bytes) -> Result<(), TransportError> {
        let me = &self.shared;
        let (tag, body) = match message.first() {
            Some(&tag @ (TAG_DIRECT | TAG_FALLBACK)) => (tag, message.slice(1..)),
            _ => return Err(TransportError::InvalidSignal("no path tag".into())),
        };
        if me.state.borrow().is_terminal() {
            return Err(TransportError::NotConnected(*me.state.borrow()));
        }
        match (tag, self.current()) {
            (TAG_DIRECT, Path::Direct(conn)) => conn.handle_signal(body).await,
            (TAG_FALLBACK, Path::Fallback(conn)) => conn.handle_signal(body).await,
            (TAG_DIRECT, Path::None) if me.role == Role::Answerer => {
                let Some(direct) = &me.backends.direct else {
                    return Err(TransportError::InvalidSignal(
                        "a direct offer, and direct links are off here".into(),
                    ));
                };
                Shared::start_direct(me, direct, Some(body)).await.map(drop)
            }
            (TAG_FALLBACK, Path::None | Path::Direct(_)) if me.role == Role::Answerer => {
                if *me.state.borrow() == ConnectionState::Connected {
                    // Both sides raced the direct timeout; the room redials.
                    me.set_state(ConnectionState::Failed);
                    return Err(TransportError::InvalidSignal(
                        "a fallback offer on a connected direct link".into(),
                    ));
                }
                Shared::start_fallback(me, Some(body)).await
            }
            // A late signal of a path we left is harmless.
            (TAG_DIRECT, Path::Fallback(_)) => Ok(()),
            _ => Err(TransportError::InvalidSignal(
                "a signal for a path this side did not offer".into(),
            )),
        }
    }

    async fn open_channel(
        &self,
        label: &str,
        reliability: Reliability,
    ) -> Result<Self::Channel, TransportError> {
        shared::check_label(label)?;
        match self.connected().await? {
            Path::Direct(d) => Ok(FailoverChannel::Direct(
                d.open_channel(label, reliability).await?,
            )),
            Path::Fallback(f) => Ok(FailoverChannel::Fallback(
                f.open_channel(label, reliability).await?,
            )),
            Path::None => Err(TransportError::NotConnected(ConnectionState::New)),
        }
    }

    async fn stats(&self) -> ConnectionStats {
        match self.current() {
            Path::Direct(d) => d.stats().await,
            Path::Fallback(f) => f.stats().await,
            Path::None => ConnectionStats::default(),
        }
    }

    async fn add_track(&self, spec: TrackSpec) -> Result<LocalTrack, TransportError> {
        match self.connected().await? {
            Path::Direct(d) => d.add_track(spec).await,
            Path::Fallback(f) => f.add_track(spec).await,
            Path::None => Err(TransportError::NotConnected(ConnectionState::New)),
        }
    }

    async fn remove_track(&self, track: &LocalTrack) -> Result<(), TransportError> {
        match self.current() {
            Path::Direct(d) => d.remove_track(track).await,
            Path::Fallback(f) => f.remove_track(track).await,
            Path::None => Ok(()),
        }
    }

    async fn close(&self) {
        let path = self.current();
        self.shared.set_state(ConnectionState::Closed);
        match path {
            Path::Direct(d) => d.close().await,
            Path::Fallback(f) => f.close().await,
            Path::None => {}
        }
    }
}

/// A channel of a [`FailoverConnection`]: one of its path's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FailoverChannel<D, F> {
    /// On the direct path.
    Direct(D),
    /// On the fallback path.
    Fallback(F),
}

impl<D: DataChannel, F: DataChannel> DataChannel for FailoverChannel<D, F> {
    fn label(&self) -> &str {
        match self {
            Self::Direct(d) => d.label(),
            Self::Fallback(f) => f.label(),
        }
    }

    fn reliability(&self) -> Reliability {
        match self {
            Self::Direct(d) => d.reliability(),
            Self::Fallback(f) => f.reliability(),
        }
    }

    fn max_message_size(&self) -> usize {
        match self {
            Self::Direct(d) => d.max_message_size(),
            Self::Fallback(f) => f.max_message_size(),
        }
    }

    fn buffered_amount(&self) -> usize {
        match self {
            Self::Direct(d) => d.buffered_amount(),
            Self::Fallback(f) => f.buffered_amount(),
        }
    }

    async fn send(&self, message: Bytes) -> Result<(), TransportError> {
        match self {
            Self::Direct(d) => d.send(message).await,
            Self::Fallback(f) => f.send(message).await,
        }
    }

    async fn recv(&self) -> Option<Bytes> {
        match self {
            Self::Direct(d) => d.recv().await,
            Self::Fallback(f) => f.recv().await,
        }
    }

    async fn close(&self) {
        match self {
            Self::Direct(d) => d.close().await,
            Self::Fallback(f) => f.close().await,
        }
    }
}
