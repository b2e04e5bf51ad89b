//! The allow-list of `[agents.NAME.http]`: which origins an agent may reach.
//!
//! A rule is an origin, `scheme://host[:port]`, matched against the request's canonical URL
//! (scheme and host lowercased, the port made explicit):
//! - `https://api.example.com` matches that host on port 443 only (the scheme's default);
//!   `http://localhost:11434` that port only; `https://example.com:*` any port.
//! - `https://*.example.com` matches every subdomain at any depth (`a.example.com`,
//!   `a.b.example.com`), never `example.com` itself: list both if both are meant.
//! - A trailing `/` is ignored; a rule with a path, query, user or fragment is refused (rules
//!   are origins, not URL prefixes), as is a `*` anywhere but a leading `*.` label.
//!
//! After a rule matches, the host's addresses are checked ([`super::guard`]): a private,
//! loopback or link-local address is refused unless the rule names it literally (an IP
//! address, or `localhost`).

use std::net::IpAddr;

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub scheme: String,
    /// Lowercased; for a wildcard rule the suffix after `*.`.
    pub host: String,
    pub wildcard: bool,
    /// None: any port.
    pub port: Option<u16>,
    /// As written, for messages.
    pub text: String,
}

/// A request's canonical origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl Rule {
    /// Parses one `allow` entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("`{text}` is not an origin rule: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("write scheme://host[:port], e.g. https://api.example.com"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default = default_port(&scheme).ok_or_else(|| bad("the scheme is http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "rules are origins (scheme://host[:port]); a path, query, fragment or user is not \
                 allowed",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal is bracketed: [::1] or [::1]:8080.
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
                let port = if p == "*" {
                    None
                } else {
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| bad("the port is a number or *"))?,
                    )
                };
                (h, port)
            }
            _ => (rest, Some(default)),
        };
        let host = host.to_ascii_lowercase();
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix.to_string()),
            None => (false, host),
        };
        if host.is_empty() || host.contains('*') {
            return Err(bad(
                "`*` may only be a whole leading label: https://*.example.com",
            ));
        }
        Ok(Rule {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            wildcard,
            port,
            text: text.to_string(),
        })
    }

    pub fn matches(&self, o: &Origin) -> bool {
        if self.scheme != o.scheme || self.port.is_some_and(|p| p != o.port) {
            return false;
        }
        if self.wildcard {
            o.host.len() > self.host.len() + 1
                && o.host.ends_with(&self.host)
                && o.host[..o.host.len() - self.host.len()].ends_with('.')
        } else {
            self.host == o.host
        }
    }

    /// The rule names its host literally (an IP address or `localhost`), so private and
    /// loopback addresses are what it means.
    pub fn names_address(&self) -> bool {
        !self.wildcard && (self.host == "localhost" || self.host.parse::<IpAddr>().is_ok())
    }
}

impl Origin {
    /// The canonical origin of a request URI; None when it has no scheme or host.
    pub fn of(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port = uri.port_u16().or_else(|| default_port(&scheme))?;
        Some(Origin { scheme, host, port })
    }

    /// The rule to add to allow this origin, for a denial's hint.
    pub fn as_rule(&self) -> String {
        if default_port(&self.scheme) == Some(self.port) {
            format!("{}://{}", self.scheme, self.host)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(&url.parse().unwrap()).unwrap()
    }

    #[test]
    fn rules_match_canonical_origins() {
        let r = Rule::parse("https://API.example.com/").unwrap();
        assert!(r.matches(&origin("https://api.example.com/v1/x?y=1")));
        assert!(r.matches(&origin("https://api.example.com:443/")));
        assert!(r.matches(&origin("https://API.EXAMPLE.COM./")));
        assert!(!r.matches(&origin("https://api.example.com:8443/")));
        assert!(!r.matches(&origin("http://api.example.com/")));
        assert!(!r.matches(&origin("https://api.example.com.evil.net/")));

        let w = Rule::parse("https://*.example.com").unwrap();
        assert!(w.matches(&origin("https://a.example.com")));
        assert!(w.matches(&origin("https://a.b.example.com")));
        assert!(!w.matches(&origin("https://example.com")));
        assert!(!w.matches(&origin("https://badexample.com")));

        let any = Rule::parse("http://localhost:*").unwrap();
        assert!(any.matches(&origin("http://localhost:11434/api")));
        assert!(any.names_address());
        let ip = Rule::parse("http://127.0.0.1:8080").unwrap();
        assert!(ip.matches(&origin("http://127.0.0.1:8080/")));
        assert!(ip.names_address() && !w.names_address());
        let v6 = Rule::parse("http://[::1]:9000").unwrap();
        assert!(v6.matches(&origin("http://[::1]:9000/")));
    }

    #[test]
    fn bad_rules_say_why() {
        for (rule, why) in [
            ("api.example.com", "scheme://host"),
            ("ftp://x.org", "http or https"),
            ("https://x.org/v1", "origins"),
            ("https://user@x.org", "origins"),
            ("https://x.*.org", "leading label"),
            ("https://*", "leading label"),
            ("https://x.org:port", "port is a number"),
        ] {
            let e = Rule::parse(rule).unwrap_err();
            assert!(e.contains(why), "{rule}: {e}");
        }
    }
}
