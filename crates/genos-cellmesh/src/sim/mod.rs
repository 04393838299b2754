//! A discrete-event simulator for the overlay (feature `sim`).
//!
//! Thousands of [`Overlay`](crate::Overlay)s run on one thread against a simulated network:
//! links open after a few latencies, messages arrive after a latency with jitter, signaling
//! topics fan announces out to their subscribers, crashed peers go silent and their links
//! are noticed down only after a detection delay. Time is simulated (no sleeping) and every
//! random choice comes from the scenario's seed, so a run is reproducible.
//!
//! A [`Scenario`] (TOML) says how many peers, how they join, what traffic to send and what
//! faults to inject; [`run`] plays it and returns a [`Report`] with the overlay's figures
//! beside two baselines computed on the same peers: a full mesh and the GenosRTC layout
//! (cells of 10, cells linked to cells ±2^k through one bridge per cell). The report renders
//! as text and as SVG (histograms; a picture of cells and bridges for small rooms).
//!
//! Signatures in the simulator are [`SimAuth`](crate::SimAuth)'s keyed hashes: the overlay's
//! checks run, at a cost 10,000 peers on one core can afford. Real signatures and sealing
//! ([`CryptoAuth`](crate::CryptoAuth)) are exercised by the crate's tests.

mod baseline;
mod net;
mod report;
mod rng;
mod run;
mod scenario;
mod stats;

pub use baseline::{Baseline, BaselineFigures};
pub use report::{ChurnFigures, Report, RunFigures};
pub use rng::Rng;
pub use scenario::{Scenario, ScenarioError};
pub use stats::{Histogram, Stats};

pub use net::{Health, Net, NetConfig, RelayCounters};
pub use run::run;
