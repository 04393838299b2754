//! Interface filtering: which local addresses the WebRTC transport offers as ICE candidates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport, TransportError,
};

/// IPs of every candidate line found in a signaling message.
fn candidate_ips(signal: &[u8], out: &mut Vec<IpAddr>) {
    let text = String::from_utf8_lossy(signal);
    for piece in text.split("candidate:").skip(1) {
        // foundation component transport priority address port "typ" type ...
        if let Some(address) = piece.split_whitespace().nth(4) {
            if let Ok(ip) = address.trim_matches(['"', '\\']).parse() {
                out.push(ip);
            }
        }
    }
}

/// Connects a pair, relaying and recording every signal; returns the candidate IPs seen and
/// whether a message crossed.
async fn connect_and_record(config: WebRtcConfig) -> (Vec<IpAddr>, bool) {
    let transport = WebRtcTransport::new(config).unwrap();
    let (a, mut a_events) = transport.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = transport.connect(Role::Answerer).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(1);
    {
        let (b, seen) = (b.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(event) = a_events.next().await {
                if let ConnectionEvent::Signal(message) = event {
                    candidate_ips(&message, &mut seen.lock().unwrap());
                    let _ = b.handle_signal(message).await;
                }
            }
        });
    }
    {
        let (a, seen) = (a.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(event) = b_events.next().await {
                match event {
                    ConnectionEvent::Signal(message) => {
                        candidate_ips(&message, &mut seen.lock().unwrap());
                        let _ = a.handle_signal(message).await;
                    }
                    ConnectionEvent::ChannelOpened(channel) => {
                        let _ = opened_tx.send(channel).await;
                    }
                    _ => {}
                }
            }
        });
    }
    let crossed = tokio::time::timeout(Duration::from_secs(20), async {
        let left = a
            .open_channel("c", Reliability::ReliableOrdered)
            .await
            .unwrap();
        let right = opened_rx.recv().await.unwrap();
        // Both sides are genos: the 256 KiB each advertises is the limit.
        assert_eq!(left.max_message_size(), 256 * 1024);
        assert_eq!(right.max_message_size(), 256 * 1024);
        left.send(Bytes::from(vec![1u8; 256 * 1024])).await.unwrap();
        assert_eq!(right.recv().await.map(|m| m.len()), Some(256 * 1024));
        left.send(Bytes::from_static(b"over loopback"))
            .await
            .unwrap();
        right.recv().await.as_deref() == Some(&b"over loopback"[..])
    })
    .await
    .unwrap_or(false);
    a.close().await;
    b.close().await;
    let seen = seen.lock().unwrap().clone();
    (seen, crossed)
}

fn no_ice_servers(mut config: WebRtcConfig) -> WebRtcConfig {
    config.ice_servers.clear();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_narrowed_to_the_loopback_interface_offers_only_loopback() {
    let config = no_ice_servers(WebRtcConfig::default())
        .with_loopback(true)
        .with_interfaces(["lo"]);
    let (ips, crossed) = connect_and_record(config).await;
    assert!(!ips.is_empty(), "no candidates seen");
    assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
    assert!(crossed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_filter_decides_what_is_offered() {
    let config = no_ice_servers(WebRtcConfig::default())
        .with_loopback(true)
        .with_ip_filter(|ip| ip == IpAddr::from([127, 0, 0, 1]));
    let (ips, crossed) = connect_and_record(config).await;
    assert!(!ips.is_empty());
    assert!(
        ips.iter().all(|ip| *ip == IpAddr::from([127, 0, 0, 1])),
        "{ips:?}"
    );
    assert!(crossed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_offered_only_when_allowed() {
    // The default configuration never offers loopback.
    let config = no_ice_servers(WebRtcConfig::default());
    let bound = config.bind_addrs().unwrap();
    assert!(bound.iter().all(|a| !a.starts_with("127.")), "{bound:?}");
    // An explicit loopback bind without the switch is a configuration error.
    let refused = no_ice_servers(WebRtcConfig::default()).with_udp_addrs(["127.0.0.1:0"]);
    assert!(matches!(
        WebRtcTransport::new(refused),
        Err(TransportError::InvalidConfig(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtering_everything_away_is_a_typed_error() {
    let config = no_ice_servers(WebRtcConfig::default()).with_interfaces(["no-such-interface0"]);
    let error = WebRtcTransport::new(config).err();
    assert!(
        matches!(error, Some(TransportError::InvalidConfig(_))),
        "{error:?}"
    );
}
