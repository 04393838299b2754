//! A fuzzing harness for [`Overlay::handle`]: a script of inputs read from arbitrary bytes,
//! played against one overlay (`A`) with a second, honest overlay (`B`) producing real
//! frames, rosters, digests and pulls that the script delivers to `A` as they are, cut short,
//! with bytes flipped, or replaced by raw bytes. Shared by the fuzz target (`fuzz/`) and the
//! crate's tests, which replay the kept corpus and random scripts.
//!
//! What it checks besides "no panic": every payload `A` delivers as `B`'s is one `B` sent,
//! with its metadata (a changed frame is never delivered); nothing is delivered as coming
//! from a peer that never sent; one input never yields more outputs than a bound.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Input, MeshTopic, Output, Overlay, OverlayConfig, OverlayEvent, PeerKey, SimAuth};

const A: PeerKey = [1; 32];
const B: PeerKey = [2; 32];
const C: PeerKey = [3; 32];
/// Messages of `B` (and of `A`) kept for the script to deliver.
const POOL: usize = 64;
/// Outputs one input may produce at most (the bounds below keep far under it).
const MAX_OUTPUTS: usize = 4_096;
/// Inputs one script plays at most.
const MAX_STEPS: usize = 2_048;

/// Small bounds, so a short script reaches every one of them.
fn config() -> OverlayConfig {
    OverlayConfig {
        max_roster: 8,
        max_links: 4,
        max_origins: 4,
        max_pending_forwards: 4,
        max_wanted: 8,
        max_repair_frames: 8,
        max_repair_bytes: 4_096,
        max_digest_ids: 8,
        max_targets: 4,
        max_message_len: 2_048,
        max_roster_message: 8,
        max_cells: 64,
        ..OverlayConfig::default()
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self, len: usize) -> Bytes {
        let len = len.min(self.data.len());
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        Bytes::copy_from_slice(taken)
    }

    /// Bytes whose count (below `bound`) the next two bytes give.
    fn sized(&mut self, bound: u16) -> Bytes {
        let len = self.u16().unwrap_or(0) % bound;
        self.bytes(usize::from(len))
    }

    /// Bytes whose count (below `bound`) the next byte gives.
    fn short(&mut self, bound: u8) -> Bytes {
        let len = self.byte().unwrap_or(0) % bound;
        self.bytes(usize::from(len))
    }

    fn peer(&mut self) -> PeerKey {
        match self.byte().unwrap_or(0) % 4 {
            0 => A,
            1 => B,
            2 => C,
            n => [n.wrapping_add(self.byte().unwrap_or(0)); 32],
        }
    }

    fn topic(&mut self) -> MeshTopic {
        match self.byte().unwrap_or(0) % 2 {
            0 => MeshTopic::Lobby,
            _ => MeshTopic::Cell {
                cells: u32::from(self.byte().unwrap_or(0) % 8),
                cell: u32::from(self.byte().unwrap_or(0) % 8),
            },
        }
    }
}

/// What a script did, so a test can tell it reached the frame path.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ScriptStats {
    /// Payloads `A` delivered (each one `B` sent).
    pub delivered: u64,
    /// Frames and messages `A` dropped (malformed, forged, duplicate, ...).
    pub dropped: u64,
}

struct Script {
    a: Overlay<SimAuth>,
    b: Overlay<SimAuth>,
    now: Instant,
    /// What `B` sent, as (meta, payload).
    sent_by_b: HashSet<(Bytes, Bytes)>,
    from_b: VecDeque<Bytes>,
    from_a: VecDeque<Bytes>,
    stats: ScriptStats,
}

impl Script {
    fn new(cells: Option<u32>) -> Self {
        let now = Instant::now();
        let mut script = Self {
            a: Overlay::new(config(), [9; 32], SimAuth::new(A), 1),
            b: Overlay::new(config(), [9; 32], SimAuth::new(B), 2),
            now,
            sent_by_b: HashSet::new(),
            from_b: VecDeque::new(),
            from_a: VecDeque::new(),
            stats: ScriptStats::default(),
        };
        script.feed_a(Input::Start { cells_hint: cells });
        script.feed_b(Input::Start { cells_hint: cells });
        script
    }

    fn feed_a(&mut self, input: Input) {
        let outputs = self.a.handle(input, self.now);
        assert!(outputs.len() <= MAX_OUTPUTS, "{} outputs", outputs.len());
        for output in outputs {
            match output {
                Output::Event(OverlayEvent::Dropped { .. }) => self.stats.dropped += 1,
                Output::Deliver(delivery) => {
                    self.stats.delivered += 1;
                    assert!(
                        delivery.origin == B,
                        "delivered as from {:?}, which never sent",
                        delivery.origin.first()
                    );
                    assert!(
                        self.sent_by_b
                            .contains(&(delivery.meta.clone(), delivery.payload.clone())),
                        "delivered a payload B never sent"
                    );
                }
                Output::Send { to, message } if to == B => push(&mut self.from_a, message),
                _ => {}
            }
        }
    }

    fn feed_b(&mut self, input: Input) {
        let outputs = self.b.handle(input, self.now);
        for output in outputs {
            if let Output::Send { to, message } = output {
                if to == A {
                    push(&mut self.from_b, message);
                }
            }
        }
    }

    fn step(&mut self, op: u8, reader: &mut Reader<'_>) {
        match op % 12 {
            0 | 1 => {
                let meta = reader.short(16);
                let payload = reader.sized(1_024);
                self.sent_by_b.insert((meta.clone(), payload.clone()));
                let input = if op % 12 == 0 {
                    Input::Broadcast { meta, payload }
                } else {
                    Input::SendTo {
                        target: A,
                        meta,
                        payload,
                    }
                };
                self.feed_b(input);
            }
            2 => {
                if let Some(message) = self.from_b.pop_front() {
                    self.feed_a(Input::Received { from: B, message });
                }
            }
            3 => {
                // A message of B's with one byte changed, or cut short.
                if let Some(message) = self.from_b.pop_front() {
                    let at = usize::from(reader.u16().unwrap_or(0));
                    let flip = reader.byte().unwrap_or(1);
                    let mut bytes = message.to_vec();
                    if flip == 0 {
                        bytes.truncate(at % (bytes.len() + 1));
                    } else if let Some(byte) = bytes.get_mut(at % message.len().max(1)) {
                        *byte ^= flip;
                    }
                    self.feed_a(Input::Received {
                        from: B,
                        message: bytes.into(),
                    });
                }
            }
            4 => {
                let from = reader.peer();
                let message = reader.sized(4_096);
                self.feed_a(Input::Received { from, message });
            }
            5 => {
                let millis = u64::from(reader.u16().unwrap_or(0));
                self.now += Duration::from_millis(millis);
                self.feed_a(Input::Tick);
                self.feed_b(Input::Tick);
            }
            6 => {
                let peer = reader.peer();
                self.feed_a(Input::LinkUp { peer });
                if peer == A {
                    self.feed_b(Input::LinkUp { peer });
                }
            }
            7 => {
                let peer = reader.peer();
                self.feed_a(Input::LinkDown { peer });
                if peer == A {
                    self.feed_b(Input::LinkDown { peer });
                }
            }
            8 => {
                let peer = reader.peer();
                let topic = reader.topic();
                let cells = u32::from(reader.byte().unwrap_or(0));
                let epoch = u32::from(reader.byte().unwrap_or(0));
                let count = u32::from(reader.u16().unwrap_or(0));
                self.feed_a(Input::Announced {
                    peer,
                    topic,
                    cells,
                    epoch,
                    count,
                });
            }
            9 => {
                let peer = reader.peer();
                let topic = reader.topic();
                self.feed_a(Input::PeerLeft { peer, topic });
            }
            10 => {
                // A's own sends, to one or many (possibly too many) targets.
                let count = usize::from(reader.byte().unwrap_or(0) % 8);
                let targets = (0..count).map(|_| reader.peer()).collect();
                let payload = reader.short(u8::MAX);
                self.feed_a(Input::SendToMany {
                    targets,
                    meta: Bytes::new(),
                    payload: payload.clone(),
                });
                self.feed_a(Input::Broadcast {
                    meta: Bytes::new(),
                    payload,
                });
            }
            _ => {
                // What A sent B (hellos, digests, pulls, frames) reaches B: its answers
                // (repairs, rosters) come back through the pool.
                if let Some(message) = self.from_a.pop_front() {
                    self.feed_b(Input::Received { from: A, message });
                }
            }
        }
    }
}

fn push(pool: &mut VecDeque<Bytes>, message: Bytes) {
    if pool.len() >= POOL {
        pool.pop_front();
    }
    pool.push_back(message);
}

/// Plays the script `data` describes (see the module docs); panics if the overlay breaks a
/// rule the harness checks.
pub fn overlay_script(data: &[u8]) -> ScriptStats {
    let mut reader = Reader { data };
    let cells = match reader.byte() {
        Some(0) | None => None,
        Some(n) => Some(u32::from(n % 4)),
    };
    let mut script = Script::new(cells);
    // Linked both ways from the start, so B's frames reach A's frame path.
    script.feed_a(Input::LinkUp { peer: B });
    script.feed_b(Input::LinkUp { peer: A });
    for _ in 0..MAX_STEPS {
        let Some(op) = reader.byte() else {
            break;
        };
        script.step(op, &mut reader);
    }
    script.feed_a(Input::Leave);
    script.stats
}

/// Reads `data` as a scenario file (`genos sim`'s input) and derives its overlay settings:
/// a clear error or a scenario within its documented ranges, never a panic.
pub fn scenario_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = crate::sim::Scenario::from_toml(text) {
        assert!(
            scenario.validate().is_ok(),
            "an accepted scenario is invalid"
        );
        let _ = scenario.overlay_config();
    }
}
