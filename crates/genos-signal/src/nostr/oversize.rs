//! Skips oversized WebSocket messages from a relay without losing the connection.
//!
//! tungstenite bounds what it buffers, but a message over its bound is an error that ends the
//! connection: anyone able to publish one large event through a relay with a looser size cap
//! could make every peer drop that relay, reconnect and resubscribe, over and over.
//! [`SkipOversized`] sits between the socket (after TLS) and tungstenite and reads the frames
//! itself: a message whose payload exceeds the limit is read past and never reaches tungstenite;
//! everything else passes unchanged. Memory stays bounded: a fragmented message is held (at
//! most the limit) until its last fragment shows whether it fits; a single oversized frame is
//! streamed past. Relay-to-client frames are unmasked; a masked frame is passed on for
//! tungstenite to refuse.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The end of the HTTP upgrade response, after which frames start.
const HEADERS_END: &[u8] = b"\r\n\r\n";

/// A stream that drops WebSocket messages over `limit` payload bytes (see the module docs).
pub(crate) struct SkipOversized<S> {
    inner: S,
    limit: usize,
    /// Told of each message dropped, at once (the reader may then wait for bytes a long
    /// time: a count folded in only after the next message would lag behind).
    on_skip: OnSkip,
    /// Bytes read from the socket, not yet looked at.
    input: BytesMut,
    /// Bytes ready for tungstenite.
    output: BytesMut,
    state: State,
    /// The fragments of a message being held until its last one arrives.
    held: BytesMut,
    held_payload: usize,
    /// A data message is fragmented and its first fragment was held.
    holding: bool,
    /// The rest of a fragmented message is being skipped.
    skipping_message: bool,
    /// The socket ended.
    eof: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Passing the HTTP response through; `matched` bytes of `HEADERS_END` seen.
    Handshake { matched: usize },
    /// At the start of a frame.
    Header,
    /// Copying `remaining` payload bytes to the output (or to `held` when `hold`).
    Pass { remaining: u64, hold: bool },
    /// Dropping `remaining` payload bytes.
    Skip { remaining: u64 },
}

/// A frame header: what it is and how long.
struct FrameHeader {
    fin: bool,
    opcode: u8,
    masked: bool,
    header_len: usize,
    payload_len: u64,
}

/// Parses a frame header from the start of `bytes`; None if more bytes are needed.
fn parse_header(bytes: &[u8]) -> Option<FrameHeader> {
    let first = *bytes.first()?;
    let second = *bytes.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, payload_len) = match second & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (8, u64::from_be_bytes(raw))
        }
        short => (0, u64::from(short)),
    };
    let header_len = 2 + extended + if masked { 4 } else { 0 };
    if bytes.len() < header_len {
        return None;
    }
    Some(FrameHeader {
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
        masked,
        header_len,
        payload_len,
    })
}

/// What a [`SkipOversized`] calls for each message it drops.
pub(crate) type OnSkip = Arc<dyn Fn() + Send + Sync>;

/// An [`OnSkip`] counting into `counter`.
#[cfg(test)]
fn count_into(counter: Arc<std::sync::atomic::AtomicU64>) -> OnSkip {
    Arc::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
}

impl<S> SkipOversized<S> {
    pub(crate) fn new(inner: S, limit: usize, on_skip: OnSkip) -> Self {
        Self {
            inner,
            limit,
            on_skip,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
            state: State::Handshake { matched: 0 },
            held: BytesMut::new(),
            held_payload: 0,
            holding: false,
            skipping_message: false,
            eof: false,
        }
    }

    fn count_skipped(&self) {
        (self.on_skip)();
        tracing::debug!(limit = self.limit, "skipped an oversized relay message");
    }

    /// Moves what can be decided from `input` to `output`; false if more input is needed.
    fn process(&mut self) -> bool {
        let mut progressed = false;
        loop {
            match self.state {
                State::Handshake { mut matched } => {
                    if self.input.is_empty() {
                        return progressed;
                    }
                    let mut taken = 0;
                    for &byte in self.input.iter() {
                        taken += 1;
                        matched = match (HEADERS_END.get(matched), byte) {
                            (Some(&want), got) if want == got => matched + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if matched == HEADERS_END.len() {
                            break;
                        }
                    }
                    let bytes = self.input.split_to(taken);
                    self.output.extend_from_slice(&bytes);
                    progressed = true;
                    self.state = if matched == HEADERS_END.len() {
                        State::Header
                    } else {
                        State::Handshake { matched }
                    };
                }
                State::Header => {
                    let Some(header) = parse_header(&self.input) else {
                        return progressed;
                    };
                    progressed = true;
                    let header_bytes = self.input.split_to(header.header_len);
                    self.state = self.next_state(&header, &header_bytes);
                }
                State::Pass { remaining, hold } => {
                    if remaining == 0 {
                        self.state = State::Header;
                        // The last fragment of a held message is in: it goes out whole.
                        if hold && !self.holding && !self.held.is_empty() {
                            let held = self.held.split();
                            self.output.extend_from_slice(&held);
                        }
                        continue;
                    }
                    let Some(bytes) = self.take_input(remaining) else {
                        return progressed;
                    };
                    if hold {
                        self.held.extend_from_slice(&bytes);
                    } else {
                        self.output.extend_from_slice(&bytes);
                    }
                    self.state = State::Pass {
                        remaining: remaining - bytes.len() as u64,
                        hold,
                    };
                    progressed = true;
                }
                State::Skip { remaining } => {
                    if remaining == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    let Some(bytes) = self.take_input(remaining) else {
                        return progressed;
                    };
                    self.state = State::Skip {
                        remaining: remaining - bytes.len() as u64,
                    };
                    progressed = true;
                }
            }
        }
    }

    /// Up to `remaining` of the bytes read so far (shared, not copied); None if there are none.
    fn take_input(&mut self, remaining: u64) -> Option<BytesMut> {
        if self.input.is_empty() {
            return None;
        }
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        Some(self.input.split_to(n))
    }

    /// Decides what happens to the frame whose header was just read.
    fn next_state(&mut self, header: &FrameHeader, header_bytes: &[u8]) -> State {
        let len = header.payload_len;
        let over = |size: u64| size > self.limit as u64;
        let is_control = header.opcode & 0x08 != 0;
        if is_control || header.masked {
            // Control frames (<= 125 bytes) pass, even between fragments; a masked frame is a
            // protocol error tungstenite reports.
            self.output.extend_from_slice(header_bytes);
            return State::Pass {
                remaining: len,
                hold: false,
            };
        }
        let continuation = header.opcode == 0;
        if continuation && self.skipping_message {
            self.skipping_message = !header.fin;
            return State::Skip { remaining: len };
        }
        if continuation && self.holding {
            let total = self.held_payload as u64 + len;
            if over(total) {
                self.held.clear();
                self.held_payload = 0;
                self.holding = false;
                self.skipping_message = !header.fin;
                self.count_skipped();
                return State::Skip { remaining: len };
            }
            self.held_payload += len as usize;
            self.held.extend_from_slice(header_bytes);
            self.holding = !header.fin;
            return State::Pass {
                remaining: len,
                hold: true,
            };
        }
        if continuation {
            // A continuation of nothing: tungstenite reports the protocol error.
            self.output.extend_from_slice(header_bytes);
            return State::Pass {
                remaining: len,
                hold: false,
            };
        }
        // The first frame of a message.
        if over(len) {
            self.skipping_message = !header.fin;
            self.count_skipped();
            return State::Skip { remaining: len };
        }
        if header.fin {
            self.output.extend_from_slice(header_bytes);
            return State::Pass {
                remaining: len,
                hold: false,
            };
        }
        self.holding = true;
        self.held_payload = len as usize;
        self.held.extend_from_slice(header_bytes);
        State::Pass {
            remaining: len,
            hold: true,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SkipOversized<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.process() && !this.output.is_empty() {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            }
            this.input.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SkipOversized<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Everything `bytes` yields through the filter (for the fuzz target and the tests).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn filter_all(bytes: &[u8], limit: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut reader = SkipOversized::new(bytes, limit, Arc::new(|| {}));
    let mut out = Vec::new();
    // A slice never waits, so the read completes on its first poll.
    let read = futures::executor::block_on(reader.read_to_end(&mut out));
    debug_assert!(read.is_ok());
    out
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    /// An unmasked server frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => bytes.push(len as u8),
            len @ 126..=65_535 => {
                bytes.push(126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    /// What tungstenite would read from `wire` through the filter, read in small pieces.
    async fn filtered(wire: Vec<u8>, limit: usize) -> (Vec<u8>, u64) {
        let skipped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut reader = SkipOversized::new(&wire[..], limit, count_into(skipped.clone()));
        let mut out = Vec::new();
        let mut piece = [0u8; 7];
        loop {
            let n = reader.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&piece[..n]);
        }
        (out, skipped.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_frames_around_it_pass() {
        let small = frame(true, 1, b"[\"EVENT\",1]");
        let medium = frame(true, 2, &[9; 300]);
        let mut wire = RESPONSE.to_vec();
        wire.extend(&small);
        wire.extend(frame(true, 1, &vec![b'x'; 100_000]));
        wire.extend(&medium);
        wire.extend(frame(true, 9, b"ping"));
        let (out, skipped) = filtered(wire, 1_000).await;
        let expected = [RESPONSE, &small, &medium, &frame(true, 9, b"ping")].concat();
        assert_eq!(out, expected);
        assert_eq!(skipped, 1);
    }

    #[tokio::test]
    async fn a_fragmented_message_passes_whole_or_is_skipped_whole() {
        let first = frame(false, 1, &[b'a'; 400]);
        let middle = frame(false, 0, &[b'b'; 400]);
        let last = frame(true, 0, &[b'c'; 100]);
        let ping = frame(true, 9, b"p");
        let after = frame(true, 1, b"after");
        // 900 bytes in three fragments with a ping between: fits 1,000.
        let mut wire = RESPONSE.to_vec();
        wire.extend([&first[..], &ping, &middle, &last, &after].concat());
        let (out, skipped) = filtered(wire.clone(), 1_000).await;
        // The ping may overtake the held fragments; the message stays whole and in place.
        let expected = [RESPONSE, &ping, &first, &middle, &last, &after].concat();
        assert_eq!(out, expected);
        assert_eq!(skipped, 0);
        // Over 800 bytes: the whole message goes, the ping and the next message stay.
        let (out, skipped) = filtered(wire, 800).await;
        assert_eq!(out, [RESPONSE, &ping, &after].concat());
        assert_eq!(skipped, 1);
        // A first fragment that is already too large: the rest of its message goes too.
        let mut wire = RESPONSE.to_vec();
        wire.extend([&first[..], &middle, &last, &after].concat());
        let (out, skipped) = filtered(wire, 300).await;
        assert_eq!(out, [RESPONSE, &after].concat());
        assert_eq!(skipped, 1);
    }

    proptest::proptest! {
        /// Any bytes at all: no panic, nothing made up, and a wire of frames that all fit
        /// passes unchanged.
        #[test]
        fn any_input_is_safe_and_fitting_frames_pass_unchanged(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            sizes in proptest::collection::vec(0usize..3000, 0..12),
            limit in 0usize..4096,
        ) {
            let mut wire = RESPONSE.to_vec();
            wire.extend(&noise);
            proptest::prop_assert!(filter_all(&wire, limit).len() <= wire.len());
            let mut wire = RESPONSE.to_vec();
            for (n, size) in sizes.iter().enumerate() {
                let size = *size.min(&limit);
                wire.extend(frame(true, if n % 2 == 0 { 1 } else { 2 }, &vec![n as u8; size]));
            }
            proptest::prop_assert_eq!(filter_all(&wire, limit), wire);
        }
    }

    #[tokio::test]
    async fn a_truncated_stream_ends_without_a_panic() {
        let mut wire = RESPONSE.to_vec();
        wire.extend(&frame(true, 1, &[1; 500])[..40]);
        let (out, _) = filtered(wire.clone(), 1_000).await;
        assert_eq!(out, wire);
        // A header cut short, and a declared length near u64::MAX.
        let mut wire = RESPONSE.to_vec();
        wire.extend([
            0x81, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
        ]);
        let (out, skipped) = filtered(wire, 1_000).await;
        assert_eq!(out, RESPONSE);
        assert_eq!(skipped, 1);
    }
}
