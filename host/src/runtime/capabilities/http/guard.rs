//! The SSRF guard: a request's host is resolved here and every address checked before the
//! connection is made, so a DNS name cannot lead an agent to the host's own loopback, the
//! private network or a cloud metadata address (Spin does the same after DNS).
//!
//! Plain HTTP is then sent to the checked address itself (the request keeps its `Host`), so
//! the name cannot resolve differently a moment later. HTTPS re-resolves when it connects, but
//! the certificate must then be valid for the name, which a rebinding attacker cannot give an
//! internal service.

use std::net::{IpAddr, SocketAddr};

/// Why an address may not be reached unless a rule names it: None when it is public.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata lives here)")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared address space (CGNAT)")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

/// Resolves `host:port`; every address must pass unless `named` (the rule names the host
/// literally). Returns the first address to connect to.
pub async fn resolve(host: &str, port: u16, named: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !named {
        for a in &addrs {
            if let Some(why) = restricted(a.ip()) {
                return Err(format!(
                    "{host} resolves to {} ({why}); only a rule that names the address itself \
                     (e.g. http://{}:{port}) reaches it",
                    a.ip(),
                    a.ip()
                ));
            }
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_are_restricted() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(restricted(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }
}
