//! Fetching an extended relay list from a relay directory over HTTP(S).
//!
//! Deliberately small: one `GET` over HTTP/1.0 (so no chunked bodies), a response capped at
//! 1 MiB, a JSON array of relay URLs in the body. Relay directories such as nostr.watch's
//! API serve exactly that.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::SignalError;

const MAX_RESPONSE: usize = 1 << 20;
const MAX_RELAYS: usize = 256;

fn unavailable(what: impl std::fmt::Display) -> SignalError {
    SignalError::Unavailable(format!("relay directory: {what}"))
}

/// Fetches `url` (http:// or https://) and returns the `ws://`/`wss://` URLs of its JSON
/// array body (at most 256).
pub async fn fetch_relay_directory(
    url: &str,
    timeout: Duration,
) -> Result<Vec<String>, SignalError> {
    tokio::time::timeout(timeout, fetch(url))
        .await
        .map_err(|_| unavailable("timed out"))?
}

async fn fetch(url: &str) -> Result<Vec<String>, SignalError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(SignalError::InvalidConfig(format!(
            "directory URL {url:?} is not http:// or https://"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| unavailable("bad port"))?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(unavailable)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\nUser-Agent: genos\r\n\r\n"
    );
    let response = if tls {
        let stream = tls_connect(host, tcp).await.map_err(unavailable)?;
        exchange(stream, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    parse_response(&response)
}

/// TLS over `tcp` to `host`, checked against the web's root certificates (webpki-roots).
/// The client configuration is built once per process (every relay reconnect uses it).
pub(crate) async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, SignalError> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unavailable)?;
    let mut response = Vec::new();
    let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
    limited
        .read_to_end(&mut response)
        .await
        .map_err(unavailable)?;
    if response.len() > MAX_RESPONSE {
        return Err(unavailable("response larger than 1 MiB"));
    }
    Ok(response)
}

pub(crate) fn parse_response(response: &[u8]) -> Result<Vec<String>, SignalError> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| unavailable("no end of headers"))?;
    let (head, body) = response.split_at(split);
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(unavailable(format!("answered {}", status_line.trim())));
    }
    let body = body.get(4..).unwrap_or_default();
    let values: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| unavailable(format!("body is not a JSON array: {e}")))?;
    Ok(values
        .iter()
        .filter_map(serde_json::Value::as_str)
        .filter(|url| url.starts_with("ws://") || url.starts_with("wss://"))
        .take(MAX_RELAYS)
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_directory_response() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[\"wss://a.example\", 5, \"http://not-a-relay\", \"ws://b.example\"]";
        assert_eq!(
            parse_response(response).unwrap(),
            vec!["wss://a.example".to_owned(), "ws://b.example".to_owned()]
        );
    }

    #[test]
    fn refuses_errors_and_garbage() {
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n[]").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n{\"relays\": 1}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
