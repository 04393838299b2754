//! The content of Trystero's Nostr events: small JSON objects, parsed by Trystero's rules.
//!
//! - announce (to the room topic, every few seconds): `{"peerId": ...}`; a peer that should
//!   not offer answers an announce with the same object sent to the announcer's topic (a
//!   "nudge"), which the announcer treats as an announce;
//! - offer: `{"peerId", "offerId", "offer"}`; answer: `{"peerId", "answer", "offerId"?}`;
//!   candidate: `{"peerId", "offerId"?, "candidate"}`. `offer`, `answer` and `candidate` hold
//!   [`crate::crypto::SdpKey`] ciphertext: of the SDP, and of the candidate's JSON.
//!
//! Trystero drops content with an empty `peerId`, or with an `offer`, `answer` or
//! `candidate` that is present but not a non-empty string; it reads `offer` before
//! `candidate` before `answer`. `passive: true` marks a peer that only answers.

use serde_json::{Map, Value};

use crate::TrysteroError;
use crate::peer_id;

/// Longest content accepted (an encrypted SDP with candidates stays far below).
pub const MAX_CONTENT_LEN: usize = 64 * 1024;
/// Length of the offer ids Trystero makes.
pub const OFFER_ID_LEN: usize = 12;

/// One event's content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalContent {
    /// A peer is in the room (on the room topic), or asks to be offered to (a nudge, on the
    /// receiver's topic).
    Announce {
        /// The sender.
        peer_id: String,
        /// The sender only answers.
        passive: bool,
    },
    /// An encrypted offer.
    Offer {
        /// The sender.
        peer_id: String,
        /// Names this offer, for the answer and candidates that follow it.
        offer_id: Option<String>,
        /// The encrypted SDP.
        offer: String,
    },
    /// An encrypted answer to offer `offer_id`.
    Answer {
        /// The sender.
        peer_id: String,
        /// The offer answered.
        offer_id: Option<String>,
        /// The encrypted SDP.
        answer: String,
    },
    /// An encrypted trickled candidate (of the candidate's JSON).
    Candidate {
        /// The sender.
        peer_id: String,
        /// The offer this candidate's connection belongs to.
        offer_id: Option<String>,
        /// The encrypted `RTCIceCandidateInit` JSON.
        candidate: String,
    },
}

impl SignalContent {
    /// The sender's peer id.
    pub fn peer_id(&self) -> &str {
        match self {
            Self::Announce { peer_id, .. }
            | Self::Offer { peer_id, .. }
            | Self::Answer { peer_id, .. }
            | Self::Candidate { peer_id, .. } => peer_id,
        }
    }

    /// Parses an event's content.
    pub fn decode(content: &str) -> Result<Self, TrysteroError> {
        if content.len() > MAX_CONTENT_LEN {
            return Err(TrysteroError::TooLarge {
                size: content.len(),
                limit: MAX_CONTENT_LEN,
            });
        }
        let value: Value =
            serde_json::from_str(content).map_err(|_| TrysteroError::InvalidSignal("not JSON"))?;
        let Value::Object(object) = value else {
            return Err(TrysteroError::InvalidSignal("not a JSON object"));
        };
        for key in ["offer", "answer", "candidate"] {
            if let Some(field) = object.get(key) {
                if !matches!(field, Value::String(text) if !text.is_empty()) {
                    return Err(TrysteroError::InvalidSignal(
                        "offer, answer or candidate that is not a non-empty string",
                    ));
                }
            }
        }
        let text = |key: &str| match object.get(key) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            _ => None,
        };
        let peer_id = text("peerId").ok_or(TrysteroError::InvalidSignal("no peerId"))?;
        if !peer_id::is_acceptable(&peer_id) {
            return Err(TrysteroError::InvalidSignal(
                "peerId is not a short visible id",
            ));
        }
        let offer_id = text("offerId");
        Ok(if let Some(offer) = text("offer") {
            Self::Offer {
                peer_id,
                offer_id,
                offer,
            }
        } else if let Some(candidate) = text("candidate") {
            Self::Candidate {
                peer_id,
                offer_id,
                candidate,
            }
        } else if let Some(answer) = text("answer") {
            Self::Answer {
                peer_id,
                offer_id,
                answer,
            }
        } else {
            Self::Announce {
                peer_id,
                passive: object.get("passive") == Some(&Value::Bool(true)),
            }
        })
    }

    /// The JSON text Trystero sends for this content.
    pub fn encode(&self) -> String {
        let mut object = Map::new();
        let mut put = |key: &str, value: &str| {
            object.insert(key.to_owned(), Value::String(value.to_owned()));
        };
        match self {
            Self::Announce { peer_id, passive } => {
                put("peerId", peer_id);
                if *passive {
                    object.insert("passive".to_owned(), Value::Bool(true));
                }
            }
            Self::Offer {
                peer_id,
                offer_id,
                offer,
            } => {
                put("peerId", peer_id);
                if let Some(id) = offer_id {
                    put("offerId", id);
                }
                put("offer", offer);
            }
            Self::Answer {
                peer_id,
                offer_id,
                answer,
            } => {
                put("peerId", peer_id);
                put("answer", answer);
                if let Some(id) = offer_id {
                    put("offerId", id);
                }
            }
            Self::Candidate {
                peer_id,
                offer_id,
                candidate,
            } => {
                put("peerId", peer_id);
                if let Some(id) = offer_id {
                    put("offerId", id);
                }
                put("candidate", candidate);
            }
        }
        Value::Object(object).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_kind_round_trips() {
        let samples = [
            SignalContent::Announce {
                peer_id: "abc".into(),
                passive: false,
            },
            SignalContent::Announce {
                peer_id: "abc".into(),
                passive: true,
            },
            SignalContent::Offer {
                peer_id: "abc".into(),
                offer_id: Some("0123456789ab".into()),
                offer: "0$x".into(),
            },
            SignalContent::Answer {
                peer_id: "abc".into(),
                offer_id: None,
                answer: "0$y".into(),
            },
            SignalContent::Candidate {
                peer_id: "abc".into(),
                offer_id: Some("o".into()),
                candidate: "0$z".into(),
            },
        ];
        for sample in samples {
            assert_eq!(SignalContent::decode(&sample.encode()).unwrap(), sample);
        }
    }

    #[test]
    fn trysteros_rules_decide() {
        // Offer wins over candidate, which wins over answer.
        let both = r#"{"peerId":"p","answer":"a","candidate":"c","offer":"o"}"#;
        assert!(matches!(
            SignalContent::decode(both),
            Ok(SignalContent::Offer { .. })
        ));
        let both = r#"{"peerId":"p","answer":"a","candidate":"c"}"#;
        assert!(matches!(
            SignalContent::decode(both),
            Ok(SignalContent::Candidate { .. })
        ));
        for bad in [
            r#"{"peerId":""}"#,
            r#"{"offer":"o"}"#,
            r#"{"peerId":"p","offer":""}"#,
            r#"{"peerId":"p","answer":7}"#,
            r#"["peerId"]"#,
            "not json",
        ] {
            assert!(
                matches!(
                    SignalContent::decode(bad),
                    Err(TrysteroError::InvalidSignal(_))
                ),
                "{bad}"
            );
        }
    }
}
