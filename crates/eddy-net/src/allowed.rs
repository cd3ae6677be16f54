//! A workspace's `allowed_hosts`: the hosts its templates and webhooks may reach beyond public
//! addresses. An entry is a name or an address, with or without a port: `api.internal`,
//! `api.internal:8443`, `10.0.0.5`, `[fd00::5]:8080`, `::1`. Without a port it allows any port.

use std::net::IpAddr;

/// An `allowed_hosts` entry that is not a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a host (a name or an address, optionally with :port; IPv6 in brackets with a port)"
)]
pub struct InvalidHost(pub String);

/// One allowed host, normalised: lower case, no brackets, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Entry {
    host: String,
    port: Option<u16>,
}

/// The hosts a workspace allows, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

impl AllowedHosts {
    /// Parses every entry; the first that is not a host is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedHosts, InvalidHost> {
        let mut parsed = entries
            .iter()
            .map(|e| parse_entry(e.as_ref()))
            .collect::<Result<Vec<Entry>, InvalidHost>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(AllowedHosts { entries: parsed })
    }

    /// Whether `host` (as a URL writes it, IPv6 in brackets or not) on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalise(host);
        self.entries
            .iter()
            .any(|e| e.host == host && e.port.is_none_or(|p| p == port))
    }

    /// Whether `host` is allowed on some port: the resolver's question, which knows no port
    /// (the port was checked before the request left).
    pub fn allows_name(&self, host: &str) -> bool {
        let host = normalise(host);
        self.entries.iter().any(|e| e.host == host)
    }

    /// Whether no host is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn normalise(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_entry(raw: &str) -> Result<Entry, InvalidHost> {
    let invalid = || InvalidHost(raw.to_string());
    let text = raw.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    // A bare IPv6 address has colons of its own: it takes no port unless bracketed.
    if let Ok(IpAddr::V6(v6)) = text.parse::<IpAddr>() {
        return Ok(Entry {
            host: v6.to_string(),
            port: None,
        });
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(invalid)?;
        let v6: std::net::Ipv6Addr = inside.parse().map_err(|_| invalid())?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(invalid)?).ok_or_else(invalid)?),
        };
        (v6.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(parse_port(p).ok_or_else(invalid)?)),
            None => (text.to_string(), None),
        }
    };
    let host = normalise(&host);
    let is_address = host.parse::<IpAddr>().is_ok();
    if !is_address && !is_host_name(&host) {
        return Err(invalid());
    }
    Ok(Entry { host, port })
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A DNS name: labels of letters, digits, `-` and `_`, 1 to 63 bytes, not starting or ending
/// with `-`, 253 bytes in all.
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_and_without_ports() {
        let allowed = AllowedHosts::parse(&[
            "API.internal.",
            "127.0.0.1:8080",
            "[::1]:9000",
            "fd00::5",
            "[fd00::6]",
        ])
        .expect("valid");
        assert!(allowed.allows("api.internal", 1));
        assert!(allowed.allows("127.0.0.1", 8080));
        assert!(!allowed.allows("127.0.0.1", 8081));
        assert!(allowed.allows("[::1]", 9000));
        assert!(allowed.allows("[fd00::5]", 443));
        assert!(allowed.allows("fd00::6", 80));
        assert!(allowed.allows_name("127.0.0.1"));
        assert!(!allowed.allows_name("localhost"));
    }

    #[test]
    fn what_is_not_a_host_is_refused() {
        for bad in [
            "",
            " ",
            "http://x",
            "a b",
            "x:0",
            "x:99999",
            "x:",
            "[::1",
            "[nothost]:80",
            "user@host",
            "host/path",
            "-x.com",
            "a..b",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad:?} is refused");
        }
    }
}
