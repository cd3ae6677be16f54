//! Email addresses as RFC 5322 writes them (`addr-spec` and `name-addr`), parsed before they
//! reach a header or an SMTP command. Only what parses is ever written, so no address (from a
//! request, a template or a profile) can carry a line break, a second address or a command.
//!
//! Accepted: a dot-atom local part (`first.last+tag`), a host name as DNS writes it with at
//! least one dot, or an address literal (`[192.0.2.1]`); a display name in front of `<…>`,
//! quoted or not. Not accepted: quoted local parts, comments, groups, several addresses, and
//! any control character anywhere.

use std::fmt;

/// One mailbox: an address and, optionally, the name shown with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, unquoted (may hold any printable text, non-ASCII included).
    pub name: Option<String>,
    /// The `local@domain` address.
    pub address: String,
}

/// Why text is not a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAddress(pub String);

impl fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Mailbox {
    /// Parses `address`, `Name <address>` or `"Name" <address>`.
    pub fn parse(text: &str) -> Result<Mailbox, InvalidAddress> {
        let shown = || {
            let mut s: String = text.chars().take(100).collect();
            s = s.escape_debug().to_string();
            InvalidAddress(format!("'{s}' is not an email address"))
        };
        if text.chars().any(char::is_control) {
            return Err(InvalidAddress(format!(
                "'{}' is not an email address (it holds a control character)",
                text.chars().take(100).collect::<String>().escape_debug()
            )));
        }
        let trimmed = text.trim();
        let Some(open) = trimmed.find('<') else {
            return addr_spec(trimmed)
                .map(|address| Mailbox {
                    name: None,
                    address,
                })
                .ok_or_else(shown);
        };
        let inner = trimmed[open + 1..].strip_suffix('>').ok_or_else(shown)?;
        let address = addr_spec(inner.trim()).ok_or_else(shown)?;
        let name = display_name(trimmed[..open].trim()).ok_or_else(shown)?;
        Ok(Mailbox { name, address })
    }

    /// The domain of the address.
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default()
    }
}

/// `atext` beyond letters and digits (RFC 5322 §3.2.3).
pub(crate) const ATEXT: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

fn addr_spec(text: &str) -> Option<String> {
    let (local, domain) = text.rsplit_once('@')?;
    let dot_atom = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|atom| {
                !atom.is_empty()
                    && atom
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || ATEXT.contains(&b))
            })
    };
    if !dot_atom(local) || local.len() > 64 {
        return None;
    }
    let domain_ok =
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            literal.parse::<std::net::Ipv4Addr>().is_ok()
                || literal
                    .strip_prefix("IPv6:")
                    .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            domain.contains('.') && eddy_net::is_host_name(domain)
        };
    domain_ok.then(|| text.to_string())
}

/// A display name: empty (none), a quoted string, or words; the text inside quotes may hold
/// anything printable (quotes and backslashes escaped).
fn display_name(text: &str) -> Option<Option<String>> {
    if text.is_empty() {
        return Some(None);
    }
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        let mut name = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => name.push(chars.next()?),
                '"' => return None,
                c => name.push(c),
            }
        }
        return Some(Some(name));
    }
    // Unquoted: words, which may not hold the characters that delimit addresses.
    if text.contains(['"', '<', '>', '@', ',', ';', ':', '\\', '[', ']']) {
        return None;
    }
    Some(Some(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_parse_as_rfc_5322_writes_them() {
        let m = Mailbox::parse("Shop <news@shop.test>").expect("name-addr");
        assert_eq!(m.name.as_deref(), Some("Shop"));
        assert_eq!(m.address, "news@shop.test");
        assert_eq!(m.domain(), "shop.test");
        let m = Mailbox::parse(r#""Shop, Inc. \"EU\"" <n@s.test>"#).expect("quoted");
        assert_eq!(m.name.as_deref(), Some(r#"Shop, Inc. "EU""#));
        assert_eq!(
            Mailbox::parse(" first.last+tag@mail.example.com ")
                .unwrap()
                .address,
            "first.last+tag@mail.example.com"
        );
        assert_eq!(
            Mailbox::parse("a@[192.0.2.1]").unwrap().address,
            "a@[192.0.2.1]"
        );
        assert_eq!(
            Mailbox::parse("Grüße <g@x.test>").unwrap().name.as_deref(),
            Some("Grüße")
        );
    }

    #[test]
    fn injections_and_non_addresses_are_refused() {
        for bad in [
            "b@example.com>\r\nRSET\r\nMAIL FROM:<spoof@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA",
            "a@b.co\r\nBcc: evil2@example.com\r\nX-Injected: yes",
            "a@b.co\nBcc: x@y.z",
            "a@b.co\0",
            "news",
            "a@b",
            "a@@b.co",
            ".a@b.co",
            "a..b@c.co",
            "a@-b.co",
            "a b@c.co",
            "a@b.co, c@d.co",
            "<a@b.co> x",
            "Name <a@b.co",
            "Na<me <a@b.co>",
            "\"a\"@b.co",
            "a@b.co>",
            "",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} is refused");
        }
        let error = Mailbox::parse("a@b.co\r\nX: y").unwrap_err();
        assert!(error.0.contains("control character"), "{error}");
        assert!(!error.0.contains('\r'));
    }
}
