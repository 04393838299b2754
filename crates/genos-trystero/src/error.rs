//! The crate's typed errors.

/// What can go wrong decoding or encoding Trystero's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrysteroError {
    /// A signaling event's content is not what Trystero sends.
    #[error("invalid signaling content: {0}")]
    InvalidSignal(&'static str),
    /// Ciphertext that is not `IV$base64`, or an IV that is not 16 decimal bytes.
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(&'static str),
    /// The ciphertext does not open with this room's key: another password (or tampering).
    #[error("cannot decrypt: wrong room password or altered ciphertext")]
    WrongPassword,
    /// A frame on the data channel that Trystero would not send.
    #[error("invalid frame: {0}")]
    InvalidFrame(&'static str),
    /// An action name longer than Trystero's 32 bytes, or empty.
    #[error("action name of {0} bytes: Trystero allows 1 to 32")]
    ActionName(usize),
    /// A message or its metadata larger than this side accepts.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes the message has (or would have) reached.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Metadata or a JSON payload that is not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The settings cannot work (no relay, an empty app or room id, ...).
    #[error("invalid settings: {0}")]
    InvalidConfig(String),
    /// No relay took our subscription in time.
    #[error("signaling: {0}")]
    Signal(String),
    /// The WebRTC layer failed.
    #[error("transport: {0}")]
    Transport(String),
    /// No joined peer with this id (or it left before answering).
    #[error("no joined peer {0}")]
    NoPeer(String),
    /// The room was left (or its driver stopped).
    #[error("the room was left")]
    Left,
}
