//! Checking a TURN server before relying on it: one Allocate with the configured
//! credentials, so a wrong password or an unreachable server is a typed error at once rather
//! than a connection that never gathers a relay candidate and fails after the ICE timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};

use super::IceServer;
use crate::TransportError;

/// Largest datagram read from the TURN server.
const MAX_DATAGRAM: usize = 2048;

/// A TURN URL genos can use: `turn:host:port`, optionally `?transport=udp`.
fn udp_turn_address(url: &str) -> Result<String, TransportError> {
    let unsupported = || TransportError::TurnUnsupported(url.to_owned());
    let rest = url.strip_prefix("turn:").ok_or_else(unsupported)?;
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !(query.is_empty() || query == "transport=udp") {
        return Err(unsupported());
    }
    if address.is_empty() {
        return Err(unsupported());
    }
    Ok(if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:3478")
    })
}

/// Allocates a relay on each `turn:` URL of `server` with its credentials, releases it, and
/// returns the relayed address of the first that works.
///
/// Errors: [`TransportError::TurnUnsupported`] for URLs webrtc 0.21 cannot use (`turns:`,
/// `?transport=tcp`, not TURN); [`TransportError::TurnRefused`] when the server answers with
/// an error (wrong credentials: 401); [`TransportError::TurnUnreachable`] when it does not
/// answer within `timeout`. With several URLs, the last error is returned.
pub async fn check_turn(
    server: &IceServer,
    timeout: Duration,
) -> Result<SocketAddr, TransportError> {
    let mut last = TransportError::TurnUnsupported("no TURN URL".to_owned());
    for url in &server.urls {
        match check_url(url, server, timeout).await {
            Ok(relayed) => return Ok(relayed),
            Err(error) => last = error,
        }
    }
    Err(last)
}

async fn check_url(
    url: &str,
    server: &IceServer,
    timeout: Duration,
) -> Result<SocketAddr, TransportError> {
    let address = udp_turn_address(url)?;
    let unreachable = |reason: String| TransportError::TurnUnreachable {
        server: url.to_owned(),
        reason,
    };
    let turn_addr = tokio::net::lookup_host(&address)
        .await
        .map_err(|e| unreachable(format!("cannot resolve {address}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("{address} resolves to nothing")))?;
    let bind: SocketAddr = if turn_addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| unreachable(format!("cannot bind a UDP socket: {e}")))?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| unreachable(format!("no local address: {e}")))?;
    let crypto = rtc::crypto::default_provider()
        .map_err(|e| TransportError::InvalidConfig(format!("no crypto provider: {e}")))?;
    let mut client = Client::new(
        ClientConfig {
            stun_serv_addr: turn_addr.to_string(),
            turn_serv_addr: turn_addr.to_string(),
            local_addr,
            transport_protocol: TransportProtocol::UDP,
            username: server.username.clone(),
            password: server.credential.clone(),
            ..ClientConfig::default()
        },
        crypto,
    )
    .map_err(|e| TransportError::InvalidConfig(format!("TURN client: {e}")))?;
    let refused = |reason: String| TransportError::TurnRefused {
        server: url.to_owned(),
        reason,
    };
    client
        .allocate(Instant::now())
        .map_err(|e| refused(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        while let Some(transmit) = client.poll_write() {
            socket
                .send_to(&transmit.message, transmit.transport.peer_addr)
                .await
                .map_err(|e| unreachable(format!("send: {e}")))?;
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::AllocateResponse(_, relayed) => {
                    // Release the allocation (a Refresh with lifetime 0), best effort.
                    if let Ok(mut relay) = client.relay(relayed) {
                        let _ = relay.close(Instant::now());
                    }
                    while let Some(transmit) = client.poll_write() {
                        let _ = socket
                            .send_to(&transmit.message, transmit.transport.peer_addr)
                            .await;
                    }
                    return Ok(relayed);
                }
                Event::AllocateError(_, error) => return Err(refused(error.to_string())),
                Event::TransactionTimeout(_) => {
                    return Err(unreachable("no answer to the allocation".to_owned()));
                }
                _ => {}
            }
        }
        let wake = client
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (len, from) = received.map_err(|e| unreachable(format!("receive: {e}")))?;
                let Some(data) = buffer.get(..len) else { continue };
                let message = TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr,
                        peer_addr: from,
                        transport_protocol: TransportProtocol::UDP,
                        ecn: None,
                    },
                    message: BytesMut::from(data),
                };
                // Stray or malformed datagrams are the client's to ignore.
                let _ = client.handle_read(message);
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(unreachable(format!("no answer within {timeout:?}")));
                }
                let _ = client.handle_timeout(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_udp_turn_urls_are_usable() {
        assert_eq!(
            udp_turn_address("turn:127.0.0.1:3478").unwrap(),
            "127.0.0.1:3478"
        );
        assert_eq!(
            udp_turn_address("turn:example.org?transport=udp").unwrap(),
            "example.org:3478"
        );
        for url in [
            "turns:example.org:5349",
            "turn:example.org:3478?transport=tcp",
            "stun:example.org:3478",
            "turn:",
        ] {
            assert!(
                matches!(
                    udp_turn_address(url),
                    Err(TransportError::TurnUnsupported(_))
                ),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_silent_server_is_unreachable_not_a_hang() {
        // A UDP socket that never answers stands in for a dead TURN server.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("turn:{}", silent.local_addr().unwrap());
        let server = IceServer::turn(url, "user", "pass");
        let error = check_turn(&server, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(error, TransportError::TurnUnreachable { .. }),
            "{error}"
        );
    }
}
