//! Errors of the overlay.

/// Why the overlay refused a message or a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The bytes are not a valid overlay message.
    #[error("malformed overlay message: {0}")]
    Malformed(&'static str),
    /// A payload larger than a frame may carry.
    #[error("payload of {len} bytes is larger than the {max} bytes a frame carries")]
    TooLarge {
        /// Bytes asked for (payload, metadata and their length prefix).
        len: usize,
        /// The most a frame carries.
        max: usize,
    },
    /// More targets than one command may name.
    #[error("{count} targets, more than the {max} one command may name")]
    TooManyTargets {
        /// Targets named.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// The overlay has not started (or has left).
    #[error("the overlay is not running")]
    NotRunning,
    /// Signing or sealing failed.
    #[error("authentication: {0}")]
    Auth(#[from] crate::AuthError),
}
