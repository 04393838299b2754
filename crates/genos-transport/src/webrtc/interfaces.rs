//! Which local addresses ICE offers as host candidates: bind addresses, narrowed by
//! interface names, an IP filter and the loopback switch.
//!
//! webrtc 0.21 derives host candidates from the sockets it binds, expanding a wildcard bind
//! (`0.0.0.0:0`) into every non-loopback interface. To filter, we do the expansion ourselves
//! and hand webrtc explicit addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::TransportError;

/// A predicate on local IP addresses: `true` keeps the address for ICE.
#[derive(Clone)]
pub struct IpFilter(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>);

impl IpFilter {
    /// Wraps a predicate.
    pub fn new(filter: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(filter))
    }

    fn allows(&self, ip: IpAddr) -> bool {
        (self.0)(ip)
    }
}

impl std::fmt::Debug for IpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpFilter(..)")
    }
}

/// One address of one local interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalAddr {
    pub(crate) interface: String,
    pub(crate) ip: IpAddr,
}

/// The host's interface addresses now.
pub(crate) fn local_addrs() -> Vec<LocalAddr> {
    match rtc_shared::ifaces::ifaces() {
        Ok(interfaces) => interfaces
            .into_iter()
            .filter_map(|i| {
                i.addr.map(|addr| LocalAddr {
                    interface: i.name,
                    ip: addr.ip(),
                })
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list local interfaces");
            Vec::new()
        }
    }
}

/// What the configuration allows.
pub(crate) struct Policy<'a> {
    pub(crate) include_loopback: bool,
    pub(crate) interfaces: &'a [String],
    pub(crate) ip_filter: Option<&'a IpFilter>,
}

impl Policy<'_> {
    fn restricts(&self) -> bool {
        !self.interfaces.is_empty() || self.ip_filter.is_some()
    }

    fn allows(&self, ip: IpAddr, interface: Option<&str>) -> bool {
        if ip.is_loopback() && !self.include_loopback {
            return false;
        }
        if !self.interfaces.is_empty()
            && !interface.is_some_and(|name| self.interfaces.iter().any(|n| n == name))
        {
            return false;
        }
        self.ip_filter.is_none_or(|filter| filter.allows(ip))
    }
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The addresses to bind, given the configured ones, the policy and the host's addresses.
pub(crate) fn resolve(
    configured: &[String],
    policy: &Policy<'_>,
    host: &[LocalAddr],
) -> Result<Vec<String>, TransportError> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |addr: SocketAddr| {
        let text = addr.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    };
    for text in configured {
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| TransportError::InvalidConfig(format!("not a socket address: {text}")))?;
        let ip = addr.ip();
        if !ip.is_unspecified() {
            let interface = host
                .iter()
                .find(|h| h.ip == ip)
                .map(|h| h.interface.as_str());
            if policy.allows(ip, interface) {
                push(addr);
            }
            continue;
        }
        if !policy.restricts() {
            // webrtc expands the wildcard into every non-loopback interface itself.
            push(addr);
            if policy.include_loopback {
                let loopback: IpAddr = if ip.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                push(SocketAddr::new(loopback, addr.port()));
            }
            continue;
        }
        for local in host {
            let usable = local.ip.is_ipv4() == ip.is_ipv4()
                && !local.ip.is_unspecified()
                && !link_local(local.ip)
                && policy.allows(local.ip, Some(&local.interface));
            if usable {
                push(SocketAddr::new(local.ip, addr.port()));
            }
        }
    }
    if out.is_empty() {
        return Err(TransportError::InvalidConfig(
            "no local address is left for ICE after interface filtering".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<LocalAddr> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.2"),
            ("eth0", "fe80::1"),
            ("eth0", "fd00::2"),
            ("docker0", "172.17.0.1"),
            ("wlan0", "169.254.3.4"),
        ]
        .into_iter()
        .map(|(interface, ip)| LocalAddr {
            interface: interface.into(),
            ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        })
        .collect()
    }

    fn resolve_with(
        configured: &[&str],
        loopback: bool,
        interfaces: &[&str],
        filter: Option<IpFilter>,
    ) -> Result<Vec<String>, TransportError> {
        let configured: Vec<String> = configured.iter().map(|s| (*s).to_owned()).collect();
        let interfaces: Vec<String> = interfaces.iter().map(|s| (*s).to_owned()).collect();
        let policy = Policy {
            include_loopback: loopback,
            interfaces: &interfaces,
            ip_filter: filter.as_ref(),
        };
        resolve(&configured, &policy, &host())
    }

    #[test]
    fn without_restrictions_the_wildcard_is_left_to_webrtc() {
        assert_eq!(
            resolve_with(&["0.0.0.0:0"], false, &[], None).unwrap(),
            vec!["0.0.0.0:0"]
        );
        assert_eq!(
            resolve_with(&["0.0.0.0:0"], true, &[], None).unwrap(),
            vec!["0.0.0.0:0", "127.0.0.1:0"]
        );
    }

    #[test]
    fn interface_names_narrow_a_wildcard() {
        assert_eq!(
            resolve_with(&["0.0.0.0:5000"], false, &["eth0"], None).unwrap(),
            vec!["192.0.2.2:5000"]
        );
        assert_eq!(
            resolve_with(&["[::]:0"], false, &["eth0"], None).unwrap(),
            vec!["[fd00::2]:0"],
            "no link-local"
        );
        // Loopback only when allowed, even by name.
        assert!(resolve_with(&["0.0.0.0:0"], false, &["lo"], None).is_err());
        assert_eq!(
            resolve_with(&["0.0.0.0:0"], true, &["lo"], None).unwrap(),
            vec!["127.0.0.1:0"]
        );
    }

    #[test]
    fn an_ip_filter_narrows_wildcards_and_explicit_addresses() {
        let private = IpFilter::new(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 172));
        assert_eq!(
            resolve_with(&["0.0.0.0:0"], false, &[], Some(private.clone())).unwrap(),
            vec!["172.17.0.1:0"]
        );
        assert!(resolve_with(&["192.0.2.2:0"], false, &[], Some(private)).is_err());
    }

    #[test]
    fn explicit_loopback_needs_the_switch_and_garbage_is_refused() {
        assert!(resolve_with(&["127.0.0.1:0"], false, &[], None).is_err());
        assert_eq!(
            resolve_with(&["127.0.0.1:0"], true, &[], None).unwrap(),
            vec!["127.0.0.1:0"]
        );
        assert!(matches!(
            resolve_with(&["not an address"], true, &[], None),
            Err(TransportError::InvalidConfig(_))
        ));
    }
}
