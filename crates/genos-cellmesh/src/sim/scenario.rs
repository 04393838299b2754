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
    /// Peers start knowing the cell count (a room that has been running). With `false` they
    /// bootstrap from the lobby beacon, or alone.
    pub warm: bool,
    /// Peers join spread over this many milliseconds.
    pub join_window_ms: u64,
    /// Simulated seconds before measuring.
    pub warmup_s: u64,
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
    /// Render a picture of cells and bridges (only for rooms of up to 400 peers).
    pub picture: bool,
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
            warm: true,
            join_window_ms: 2_000,
            warmup_s: 40,
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
            picture: true,
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
        } else {
            Sizing::Auto {
                max_cell: self.max_cell,
            }
        };
        config.max_roster = config.max_roster.max(self.peers + 16).min(200_000);
        config
    }
}
