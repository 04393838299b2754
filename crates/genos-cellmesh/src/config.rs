//! Every knob and bound of the overlay, with its behaviour at the bound.

use std::time::Duration;

use crate::Sizing;

/// Settings of an [`Overlay`](crate::Overlay). `Default` suits rooms of 100 to 10,000+ peers.
///
/// Every collection the overlay keeps is bounded by a field here; the field's doc says what
/// happens at the bound.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OverlayConfig {
    /// How cells are sized. Default: about sqrt(N) peers per cell, at most 100.
    pub sizing: Sizing,
    /// Bridge links per pair of cells, each between a different pair of members. Default 3:
    /// a broadcast still crosses between two cells unless all three links are down.
    pub bridges_per_pair: u8,
    /// Hop budget of a frame. Default 4 (origin -> cell mate -> bridge -> remote cell needs 3);
    /// frames arriving with a larger TTL are dropped as forged.
    pub ttl: u8,
    /// How often a peer announces itself on its cell's signaling topic. Default 30 s. The
    /// signaling layer is expected to hand a new subscriber the topic's recent announces
    /// (Nostr: replaceable events with an expiry), so this is a liveness refresh, not the
    /// speed at which newcomers are found.
    pub announce_interval: Duration,
    /// How long a peer stays in the roster without a fresh announce or a live link.
    /// Default 95 s (three missed announces and a bit).
    pub peer_timeout: Duration,
    /// How long a peer known only second-hand stays in the roster without being heard
    /// first-hand (its announce on a topic of the current view, or a link to it) while no
    /// setup to it is under way. Second-hand is a cell mate's roster, a retry after failed
    /// setups, and everyone known when the cell count changes (heard on the old view's
    /// topics; a peer that left meanwhile may have said goodbye only on a topic this peer
    /// did not follow). Second-hand news never refreshes a known peer, and rosters pass on
    /// only first-hand members: otherwise cell mates keep each other's departed peers in
    /// the roster for good. Default 45 s (three connect timeouts).
    pub hearsay_timeout: Duration,
    /// How often each cell's leader posts its cell's size on the lobby (the census cell 0's
    /// leader resizes from). Default 60 s.
    pub census_interval: Duration,
    /// How long a newcomer waits for a beacon (the cell count) before it assumes it is alone
    /// and starts a one-cell room. Default 12 s.
    pub bootstrap_wait: Duration,
    /// How often cell 0's leader posts the room's view (epoch, cell count) on the lobby.
    /// Default 4 s (a third of `bootstrap_wait`, so a newcomer hears one live even where
    /// the signaling layer keeps nothing); where the signaling layer stores presence (Nostr
    /// rooms), a newcomer gets the last beacon at once and this can be minutes.
    pub beacon_interval: Duration,
    /// How long a newcomer keeps listening to the lobby after the first census entry or
    /// beacon before it joins the view with the most peers. Default 2 s.
    pub bootstrap_listen: Duration,
    /// How long a link the plan no longer wants is kept before it is closed (hysteresis: a
    /// link that becomes wanted again in that time is never closed). Default 10 s.
    pub linger: Duration,
    /// How long a peer waits in a new cell before it plans bridges: while it still learns
    /// its cell mates it would otherwise believe it holds every bridge slot of the cell and
    /// subscribe to every other cell's topic. Default 3 s.
    pub bridge_settle: Duration,
    /// How long a connect may take before the peer is given up until it announces again.
    /// Default 15 s.
    pub connect_timeout: Duration,
    /// Period of the housekeeping tick (re-planning, expiry, census). Default 500 ms.
    pub tick_interval: Duration,
    /// How long the bridge endpoint of slot `j > 0` waits, times `j`, before forwarding a
    /// frame into its cell; it forwards only if no cell mate did first. Default 100 ms.
    pub backup_delay: Duration,
    /// How often a peer tells four of its links (a random bridge, two ring successors
    /// among its cell mates in key order, further on in each of three digests, and a random
    /// cell mate) the ids of the broadcasts it accepted lately, each id in three
    /// consecutive digests: lazy repair, so a peer the eager path missed (a dead bridge, a
    /// lost message) learns what to pull. Default 200 ms; `Duration::ZERO` turns repair
    /// off.
    pub digest_interval: Duration,
    /// How long a peer that hears of a broadcast it lacks waits before pulling it (the eager
    /// path, backups included, usually comes first), and then between pulls from the next
    /// peer that offered it (three at most). Default 250 ms.
    pub repair_wait: Duration,
    /// How long accepted broadcasts are kept to answer pulls. Default 2 s.
    pub repair_window: Duration,
    /// Broadcast frames kept to answer pulls at most, and their bytes at most. At either
    /// bound the oldest is dropped (a pull for it goes unanswered; the puller asks another
    /// peer). Default 4,096 frames, 16 MiB.
    pub max_repair_frames: usize,
    /// See `max_repair_frames`.
    pub max_repair_bytes: usize,
    /// Missing broadcasts waited for at most. At the bound, further ids heard of are ignored
    /// until some arrive or are given up. Default 4,096.
    pub max_wanted: usize,
    /// Ids in one digest or pull at most (about 40 bytes each). A digest at the bound leaves
    /// the oldest ids out; longer lists received are dropped as malformed. Default 256.
    pub max_digest_ids: usize,
    /// How long after a link that never came up (setup failed) the peer is tried again;
    /// doubled at each further failure (at most `peer_timeout`). After the third the peer
    /// is tried again only once it is heard after the backoff. Default 2 s.
    pub retry_backoff: Duration,
    /// Peers remembered at most (own cell and the cells this peer bridges to). At the bound,
    /// announces of unknown peers are ignored (and counted) until entries expire. Default 4,096.
    pub max_roster: usize,
    /// Links at most. At the bound, inbound links beyond the plan are closed and connects
    /// are not started. Default 400.
    pub max_links: usize,
    /// Origins whose sequence windows are remembered for deduplication. At the bound, the
    /// origin heard from least recently is forgotten; its next frame opens a new window and
    /// anything older than that frame is refused. Default 16,384.
    pub max_origins: usize,
    /// Sequence numbers remembered per origin below its highest (rounded up to a multiple
    /// of 64; 64 to 65,536): a frame further back than that is refused as too old (it could
    /// be a replay), and a broadcast a digest names that far back is taken as received. So
    /// it bounds how late a frame, a repaired one included, may arrive: at a stream of 25
    /// frames a second, 64 is 2.6 s. Costs window/8 bytes per origin remembered. Default 64
    /// (the simulator's thousands of peers); cells rooms use 1,024.
    pub dedup_window: u32,
    /// Delayed forwards (backup bridge endpoints) held at most. At the bound, a frame is
    /// forwarded at once instead: a duplicate rather than a loss. Default 4,096.
    pub max_pending_forwards: usize,
    /// Largest cell count accepted from a beacon or census, and ever used. Default 4,096
    /// (rooms of 400,000 peers at cells of 100); larger claims are ignored.
    pub max_cells: u32,
    /// Largest cell size a census entry may claim (larger claims count as this). Default
    /// 1,000.
    pub max_census_count: u32,
    /// Targets one `SendToMany` may name. Default 1,024.
    pub max_targets: usize,
    /// Largest link message accepted, in bytes; larger ones are dropped. Default 1 MiB + 4 KiB.
    pub max_message_len: usize,
    /// Peers listed in one roster message at most. Default 512.
    pub max_roster_message: usize,
    /// How long a directed payload waits for its target's acknowledgement before it is sent
    /// again (as a new frame, over more and other paths); doubled after each resend, at most
    /// 8 times this. Default 1 s (three hops each way take about 0.2 s in a room spread over
    /// a continent).
    pub direct_retry: Duration,
    /// How long a directed payload is sent again before it is given up
    /// ([`OverlayEvent::DirectFailed`](crate::OverlayEvent::DirectFailed)). Default 60 s: a peer a mass
    /// crash cut off is usually linked again within that.
    pub direct_give_up: Duration,
    /// Directed payloads awaiting acknowledgement span at most this many message numbers;
    /// sending one more gives up those that fall out of the span (reported like a timeout).
    /// Targets remember this many message numbers per origin to deliver each once (so a
    /// resend is never taken for new, and never refused as too old). Rounded up to a
    /// multiple of 64, 64 to 65,536. Default 1,024.
    pub direct_window: u32,
    /// Bytes of directed payloads (with metadata) kept for resending at most; at the bound
    /// the oldest is given up. Default 16 MiB.
    pub max_unacked_bytes: usize,
    /// How long a target gathers acknowledgements for one origin before sending them in one
    /// frame (64 at most). Default 20 ms.
    pub ack_delay: Duration,
    /// First sequence number of this peer's frames. Drivers pass something that grows across
    /// restarts (milliseconds since the epoch, shifted) so a restarted peer is not taken for a
    /// replay. Default 0. Directed payloads are numbered from it too.
    pub first_seq: u64,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            sizing: Sizing::default(),
            bridges_per_pair: 3,
            ttl: 4,
            announce_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(95),
            hearsay_timeout: Duration::from_secs(45),
            census_interval: Duration::from_secs(60),
            bootstrap_wait: Duration::from_secs(12),
            beacon_interval: Duration::from_secs(4),
            bootstrap_listen: Duration::from_secs(2),
            linger: Duration::from_secs(10),
            bridge_settle: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(15),
            tick_interval: Duration::from_millis(500),
            backup_delay: Duration::from_millis(100),
            digest_interval: Duration::from_millis(200),
            repair_wait: Duration::from_millis(250),
            repair_window: Duration::from_secs(2),
            max_repair_frames: 4_096,
            max_repair_bytes: 16 << 20,
            max_wanted: 4_096,
            max_digest_ids: 256,
            retry_backoff: Duration::from_secs(2),
            max_roster: 4_096,
            max_links: 400,
            max_origins: 16_384,
            dedup_window: 64,
            max_pending_forwards: 4_096,
            max_cells: 4_096,
            max_census_count: 1_000,
            max_targets: 1_024,
            max_message_len: (1 << 20) + 4096,
            max_roster_message: 512,
            direct_retry: Duration::from_secs(1),
            direct_give_up: Duration::from_secs(60),
            direct_window: 1_024,
            max_unacked_bytes: 16 << 20,
            ack_delay: Duration::from_millis(20),
            first_seq: 0,
        }
    }
}
