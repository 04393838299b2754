//! What a simulation run does, read from TOML.

use serde::Deserialize;

use crate::{OverlayConfig, Sizing};

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The TOML does not parse or has unknown fields.
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("scenario: {0}")]
    Invalid(String),
}

/// One simulation run. Every field has a default; see `scenarios/*.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Scenario {
    /// A name for the report.
    pub name: String,
    /// Peers in the room (1 to 100,000).
    pub peers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// One-way latency of a link, milliseconds.
    pub latency_ms: u64,
    /// Extra random latency per message, up to this many milliseconds.
    pub jitter_ms: u64,
    /// How long a crash takes to notice (the transport's heartbeat timeout), milliseconds.
    pub detect_ms: u64,
    /// No peer is given the cell count: each bootstraps from the lobby (a stored beacon, or
    /// alone after a wait), as in a real room. With `false` every peer starts knowing the
    /// final count (a room that has been running; kinder than reality).
    pub cold_start: bool,
    /// Peers arrive spread over this many milliseconds.
    pub join_window_ms: u64,
    /// Relays store presence (addressable events replaced per author and topic, with an
    /// expiry): a new subscriber gets the unexpired announces of its topic at once. With
    /// `false`, announces are ephemeral (heard only by those subscribed when they are sent).
    pub stored_presence: bool,
    /// How long a stored announce stays valid (its NIP-40 expiry), seconds. Clients drop
    /// expired presence themselves (not every relay does).
    pub presence_expiry_s: u64,
    /// Events a peer may publish to the relay per minute (nostr-relay-builder's default is
    /// 60, as a bucket of 60 refilled over a minute); 0 for no limit. The driver keeps a
    /// sixth for presence (announces beyond that share are refused, lost) and paces link
    /// signaling within the rest (it waits for tokens).
    pub relay_events_per_min: u32,
    /// Relay events each end of a link setup publishes (offer or answer, and its candidates).
    pub signals_per_link: u32,
    /// Link setups between two peers that already hold links send their signals through the
    /// mesh (sealed directed frames) instead of the relay: only a peer's first links cost
    /// relay events. With `false` every setup goes through the relay and its rate limit.
    pub signal_via_mesh: bool,
    /// The relay restarts this many seconds into the run (0 for never): stored presence and
    /// subscriptions are lost; clients reconnect after `relay_reconnect_ms`, resubscribe and
    /// publish their presence again; announces in between are lost.
    pub relay_restart_s: u64,
    /// How long clients take to reconnect after a relay restart, milliseconds.
    pub relay_reconnect_ms: u64,
    /// One-way trips a link setup takes: offer and answer through the relay (4), ICE checks
    /// (2), DTLS (4), SCTP (2) and the channel open (1) make 13.
    pub link_setup_trips: u32,
    /// Fraction of link setups that fail (ICE or DTLS never completes).
    pub link_failure: f64,
    /// How long a failed setup takes to be reported, milliseconds.
    pub link_failure_ms: u64,
    /// Fraction of frames and repair messages lost on links (a bounded queue shedding, a
    /// link reset); hellos and rosters are not lost.
    pub loss: f64,
    /// Simulated seconds before measuring.
    pub warmup_s: u64,
    /// (Cold start) end the warm-up at the first check (every 5 simulated seconds, once
    /// everyone arrived) that finds the room converged, rather than at `warmup_s`, which
    /// then bounds it: a run timed by the wall clock spends it on the room forming and on
    /// the traffic, not on idle minutes of refreshed presence.
    pub start_when_converged: bool,
    /// Simulated seconds after warm-up, with no traffic, over which discovery load is measured.
    pub steady_s: u64,
    /// Broadcasts sent with no faults, from random peers.
    pub broadcasts: usize,
    /// Over how many simulated seconds those broadcasts are spread.
    pub broadcast_window_s: u64,
    /// Payload bytes of each broadcast.
    pub payload_bytes: usize,
    /// Directed sends between random pairs (after the broadcasts).
    pub directed: usize,
    /// Seconds of churn after the directed sends (0 for none): peers leave (half gracefully,
    /// half crashing) and newcomers without a hint arrive, while a broadcast goes out every
    /// second.
    pub churn_s: u64,
    /// Fraction of the room replaced per minute during the churn.
    pub churn_per_minute: f64,
    /// Fraction of peers that crash at once after the fault-free phase (0 for none).
    pub crash_fraction: f64,
    /// Broadcasts sent in the second right after the crash, before anyone notices.
    pub after_crash_broadcasts: usize,
    /// Seconds of probing (one broadcast a second) after the crash.
    pub repair_s: u64,
    /// Bridge links per cell pair.
    pub bridges_per_pair: u8,
    /// Largest cell (automatic sizing) or, with `fixed_cell`, the cell size.
    pub max_cell: u32,
    /// Use cells of exactly `max_cell` peers instead of sqrt(N).
    pub fixed_cell: bool,
    /// Keep the room one cell (a full mesh) up to this many peers, as a room with
    /// `Topology::Auto` does (0: off).
    pub mesh_max: u32,
    /// Render a picture of cells and bridges (only for rooms of up to 400 peers).
    pub picture: bool,
    /// A wall-clock goal for the whole run, seconds (0 for none): checked by `--check`.
    pub wall_goal_s: u64,
    /// The overlay's lazy repair (digests and pulls). `false` shows what the eager paths
    /// alone deliver.
    pub lazy_repair: bool,
    /// How long a backup bridge end waits, times its slot, before forwarding into its cell,
    /// milliseconds (0: the overlay's default, 100).
    pub backup_delay_ms: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            peers: 100,
            seed: 1,
            latency_ms: 20,
            jitter_ms: 20,
            detect_ms: 3_000,
            cold_start: true,
            join_window_ms: 10_000,
            stored_presence: true,
            presence_expiry_s: 95,
            relay_events_per_min: 60,
            signals_per_link: 2,
            signal_via_mesh: true,
            relay_restart_s: 0,
            relay_reconnect_ms: 2_000,
            link_setup_trips: 13,
            link_failure: 0.02,
            link_failure_ms: 5_000,
            loss: 0.001,
            warmup_s: 90,
            start_when_converged: false,
            steady_s: 60,
            broadcasts: 100,
            broadcast_window_s: 10,
            payload_bytes: 200,
            directed: 100,
            churn_s: 0,
            churn_per_minute: 0.1,
            crash_fraction: 0.1,
            after_crash_broadcasts: 50,
            repair_s: 60,
            bridges_per_pair: 3,
            max_cell: 100,
            fixed_cell: false,
            mesh_max: 0,
            picture: true,
            wall_goal_s: 0,
            lazy_repair: true,
            backup_delay_ms: 0,
        }
    }
}

impl Scenario {
    /// Reads a scenario from TOML text.
    ///
    /// ```
    /// let scenario = genos_cellmesh::sim::Scenario::from_toml("name = 'x'\npeers = 50").unwrap();
    /// assert_eq!(scenario.peers, 50);
    /// assert!(genos_cellmesh::sim::Scenario::from_toml("peers = 0").is_err());
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |what: &str| Err(ScenarioError::Invalid(what.into()));
        if self.peers == 0 || self.peers > 100_000 {
            return invalid("peers must be 1 to 100,000");
        }
        if !(0.0..=1.0).contains(&self.churn_per_minute) || self.churn_s > 3_600 {
            return invalid("churn_per_minute must be 0 to 1 and churn_s at most an hour");
        }
        if !(0.0..=0.5).contains(&self.link_failure) || !(0.0..=0.5).contains(&self.loss) {
            return invalid("link_failure and loss must be 0 to 0.5");
        }
        if self.link_setup_trips > 100 || self.link_failure_ms > 600_000 {
            return invalid("link_setup_trips at most 100, link_failure_ms at most 10 minutes");
        }
        if self.presence_expiry_s > 86_400 || self.relay_reconnect_ms > 600_000 {
            return invalid(
                "presence_expiry_s at most a day, relay_reconnect_ms at most 10 minutes",
            );
        }
        if !(0.0..=0.9).contains(&self.crash_fraction) {
            return invalid("crash_fraction must be 0 to 0.9");
        }
        if self.bridges_per_pair == 0 || self.bridges_per_pair > 8 {
            return invalid("bridges_per_pair must be 1 to 8");
        }
        if self.max_cell < 2 {
            return invalid("max_cell must be at least 2");
        }
        if self.payload_bytes > 1 << 20 {
            return invalid("payload_bytes must be at most 1 MiB");
        }
        if self.broadcasts > 1_000_000 || self.directed > 1_000_000 {
            return invalid("at most a million broadcasts or directed sends");
        }
        if self.start_when_converged && !self.cold_start {
            return invalid("start_when_converged needs cold_start");
        }
        if self.warmup_s > 3_600
            || self.steady_s > 3_600
            || self.repair_s > 3_600
            || self.broadcast_window_s > 3_600
        {
            return invalid("phases must be at most an hour");
        }
        Ok(())
    }

    /// The overlay configuration this scenario runs with.
    pub fn overlay_config(&self) -> OverlayConfig {
        let mut config = OverlayConfig::default();
        config.bridges_per_pair = self.bridges_per_pair;
        config.sizing = if self.fixed_cell {
            Sizing::Fixed(self.max_cell)
        } else if self.mesh_max > 0 {
            Sizing::MeshFirst {
                mesh_max: self.mesh_max,
                max_cell: self.max_cell,
            }
        } else {
            Sizing::Auto {
                max_cell: self.max_cell,
            }
        };
        config.max_roster = config.max_roster.max(self.peers + 16).min(200_000);
        if !self.lazy_repair {
            config.digest_interval = std::time::Duration::ZERO;
        }
        if self.backup_delay_ms > 0 {
            config.backup_delay = std::time::Duration::from_millis(self.backup_delay_ms);
        }
        config
    }
}
