//! Signed links served by eddy: the open pixel, click redirects, and subscription changes
//! (`${set_user_to_unsubscribed_url}` and the one-click `List-Unsubscribe`). A link carries what
//! it acts on, signed with a key kept in the store, so that nobody can forge one for another
//! user and a redirect only goes where the email pointed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a link acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Workspace id.
    pub w: u32,
    /// Profile id.
    pub p: u32,
    /// Dispatch id.
    pub d: String,
    /// `o` open, `c` click, `s` subscription link in the body, `l` List-Unsubscribe.
    pub k: char,
    /// The click's destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    /// The state a subscription link sets (`unsubscribed`, `subscribed`, `opted_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
}

/// Signs and checks links.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// Bytes of the signature kept in a link.
const TAG_BYTES: usize = 16;

impl Signer {
    /// A signer with a secret key.
    pub fn new(key: Vec<u8>) -> Signer {
        debug_assert!(key.len() >= 16, "tracking keys are at least 128 bits");
        Signer { key }
    }

    fn tag(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        mac.finalize().into_bytes()[..TAG_BYTES].to_vec()
    }

    /// The URL-safe token of a link.
    pub fn token(&self, link: &Link) -> String {
        let payload = serde_json::to_vec(link).unwrap_or_default();
        let tag = self.tag(&payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The link of a token, when its signature holds.
    pub fn open(&self, token: &str) -> Option<Link> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = self.tag(&payload);
        // Constant time: the comparison must not tell how much of a forged tag was right.
        if tag.len() != expected.len()
            || tag
                .iter()
                .zip(&expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return None;
        }
        serde_json::from_slice(&payload).ok()
    }
}

/// The attribute that marks the links a template wrote, before it is rendered. Its value is
/// unquoted (the marker is hex), so a mark inside a quoted Liquid string leaves it whole.
const MARK_ATTRIBUTE: &str = " data-eddy-link=";

/// Marks every `<a` of a template's source with `marker`, so that after rendering the links
/// the template wrote can be told from links that came in with the data (a profile attribute
/// holding `<a href=…>`): only marked ones become tracked links. The marker is random per send,
/// so data cannot carry it.
pub fn mark_links(source: &str, marker: &str) -> String {
    let lower = source.to_ascii_lowercase();
    let mut out = String::with_capacity(source.len() + 64);
    let mut copied = 0;
    for (at, _) in lower.match_indices("<a") {
        let next = lower.as_bytes().get(at + 2).copied().unwrap_or(b'>');
        if !next.is_ascii_whitespace() {
            continue;
        }
        out.push_str(&source[copied..at + 2]);
        out.push_str(MARK_ATTRIBUTE);
        out.push_str(marker);
        copied = at + 2;
    }
    out.push_str(&source[copied..]);
    out
}

/// Replaces the `href` of every `<a>` marked with `marker` (see [`mark_links`]) whose URL is
/// http(s) with `rewrite(url)`, and takes the marks out.
pub fn rewrite_marked_links(
    html: &str,
    marker: &str,
    rewrite: impl FnMut(&str) -> Option<String>,
) -> String {
    debug_assert!(marker.bytes().all(|b| b.is_ascii_hexdigit()));
    let mark = format!("{MARK_ATTRIBUTE}{marker}");
    let rewritten = rewrite_links_where(html, |tag| tag.contains(&mark), rewrite);
    rewritten.replace(&mark, "")
}

/// Replaces the `href` of every `<a>` whose URL is http(s) with `rewrite(url)`.
pub fn rewrite_links(html: &str, rewrite: impl FnMut(&str) -> Option<String>) -> String {
    rewrite_links_where(html, |_| true, rewrite)
}

fn rewrite_links_where(
    html: &str,
    chosen: impl Fn(&str) -> bool,
    mut rewrite: impl FnMut(&str) -> Option<String>,
) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 256);
    let mut copied = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find("<a") {
        let start = from + pos;
        let Some(end) = lower[start..].find('>').map(|e| start + e) else {
            break;
        };
        from = end;
        let next = lower.as_bytes().get(start + 2).copied().unwrap_or(b'>');
        if !next.is_ascii_whitespace() || !chosen(&html[start..end]) {
            continue;
        }
        let Some((value_start, value_end)) = href_span(&lower[start..end]) else {
            continue;
        };
        let (value_start, value_end) = (start + value_start, start + value_end);
        let url = html[value_start..value_end].trim();
        let url = url.replace("&amp;", "&");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            continue;
        }
        let Some(replacement) = rewrite(&url) else {
            continue;
        };
        out.push_str(&html[copied..value_start]);
        out.push_str(&replacement.replace('&', "&amp;"));
        copied = value_end;
    }
    out.push_str(&html[copied..]);
    out
}

/// Where the value of `href` is inside a tag's text (quoted or not).
fn href_span(tag: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(pos) = tag[from..].find("href") {
        let at = from + pos;
        from = at + 4;
        if at == 0 || !tag.as_bytes()[at - 1].is_ascii_whitespace() {
            continue;
        }
        let rest = &tag[from..];
        let trimmed = rest.trim_start();
        if !trimmed.starts_with('=') {
            continue;
        }
        let after_eq = from + (rest.len() - trimmed.len()) + 1;
        let value = tag[after_eq..].trim_start();
        let value_at = after_eq + (tag[after_eq..].len() - value.len());
        return match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let close = value[1..].find(q)?;
                Some((value_at + 1, value_at + 1 + close))
            }
            Some(_) => {
                let len = value
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(value.len());
                Some((value_at, value_at + len))
            }
            None => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link {
            w: 1,
            p: 42,
            d: "disp".into(),
            k: 'c',
            u: Some("https://shop.test/a?b=1&c=2".into()),
            s: None,
        }
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let signer = Signer::new(vec![7; 32]);
        let token = signer.token(&link());
        assert_eq!(signer.open(&token), Some(link()));
        let other = Signer::new(vec![8; 32]);
        assert_eq!(other.open(&token), None);
        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged = link();
        forged.p = 43;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(signer.open(&format!("{forged_payload}.{tag}")), None);
        assert_eq!(signer.open(payload), None);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        );
    }

    #[test]
    fn only_links_the_template_wrote_are_rewritten() {
        let marker = "0123abcd";
        let source = r#"<p>Hi {{ name }}</p><a href="https://shop.test/{{ id }}">Shop</a> {{ "<a href='https://in-string.test'>x</a>" }}"#;
        let marked = mark_links(source, marker);
        // What the render made: the name came from profile data and holds a link.
        let rendered = marked
            .replace("{{ name }}", r#"<a href="https://evil.example">win</a>"#)
            .replace("{{ id }}", "42")
            .replace(r#"{{ "<a"#, "<a")
            .replace(r#"</a>" }}"#, "</a>");
        let out = rewrite_marked_links(&rendered, marker, |url| Some(format!("T({url})")));
        assert!(
            out.contains(r#"<a href="https://evil.example">win</a>"#),
            "{out}"
        );
        assert!(
            out.contains(r#"<a href="T(https://shop.test/42)">Shop</a>"#),
            "{out}"
        );
        assert!(out.contains("T(https://in-string.test)"), "{out}");
        assert!(!out.contains("data-eddy-link"), "{out}");
    }

    #[test]
    fn only_http_links_of_anchors_are_rewritten() {
        let html = r#"<p><a href="https://s.test/x?a=1&amp;b=2">x</a> <A class=y HREF='http://t.test'>t</A> <a href="mailto:a@b.co">m</a> <abbr href="https://no.test">n</abbr> <a data-href="https://no.test">d</a></p>"#;
        let mut seen = Vec::new();
        let out = rewrite_links(html, |url| {
            seen.push(url.to_string());
            Some(format!("https://e.test/c?u={}", seen.len()))
        });
        assert_eq!(seen, vec!["https://s.test/x?a=1&b=2", "http://t.test"]);
        assert_eq!(
            out,
            r#"<p><a href="https://e.test/c?u=1">x</a> <A class=y HREF='https://e.test/c?u=2'>t</A> <a href="mailto:a@b.co">m</a> <abbr href="https://no.test">n</abbr> <a data-href="https://no.test">d</a></p>"#
        );
    }
}
