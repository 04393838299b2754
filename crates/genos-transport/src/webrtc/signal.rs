//! The signaling messages of the WebRTC transport: JSON, opaque to the layers above.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use webrtc::peer_connection::RTCIceCandidateInit;

use crate::TransportError;

/// A trickled ICE candidate, as in the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Candidate {
    candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    username_fragment: Option<String>,
}

impl From<RTCIceCandidateInit> for Candidate {
    fn from(init: RTCIceCandidateInit) -> Self {
        Self {
            candidate: init.candidate,
            sdp_mid: init.sdp_mid,
            sdp_mline_index: init.sdp_mline_index,
            username_fragment: init.username_fragment,
        }
    }
}

impl From<Candidate> for RTCIceCandidateInit {
    fn from(candidate: Candidate) -> Self {
        RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: candidate.username_fragment,
            ..Default::default()
        }
    }
}

/// One signaling message: `{"type":"offer","sdp":...}`, `{"type":"answer","sdp":...}` or
/// `{"type":"candidate","candidate":{...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Signal {
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate { candidate: Candidate },
}

impl Signal {
    pub(crate) fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }

    pub(crate) fn decode(message: &[u8]) -> Result<Self, TransportError> {
        serde_json::from_slice(message)
            .map_err(|e| TransportError::InvalidSignal(format!("not a WebRTC signal: {e}")))
    }
}

/// A message on the hidden control channel (besides the raw goodbye): renegotiation offers
/// and answers after the first exchange, the offerer's word that it applied an answer, and
/// the end of a media track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Control {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    /// Sent by an offerer once it applied an answer: `answers` counts every answer it has
    /// received on this connection (so one refused answer is covered by the next).
    Applied {
        answers: u64,
    },
    Ended {
        id: String,
    },
}

impl Control {
    pub(crate) fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }

    pub(crate) fn decode(message: &[u8]) -> Result<Self, TransportError> {
        if message.len() > super::MAX_SIGNAL_LEN {
            return Err(TransportError::InvalidSignal(format!(
                "control message of {} bytes",
                message.len()
            )));
        }
        serde_json::from_slice(message)
            .map_err(|e| TransportError::InvalidSignal(format!("not a control message: {e}")))
    }
}
