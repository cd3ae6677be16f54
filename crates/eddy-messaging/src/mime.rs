//! Internet Message Format for the emails eddy sends: headers encoded per RFC 2047, a
//! `multipart/alternative` body with plain text and HTML (base64, lines of 76), and the one-click
//! unsubscribe headers of RFC 8058.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::address::Mailbox;

/// One rendered email, ready to be formatted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `From`.
    pub from: Mailbox,
    /// The recipient.
    pub to: Mailbox,
    /// `Reply-To`.
    pub reply_to: Option<Mailbox>,
    /// Subject.
    pub subject: String,
    /// HTML body.
    pub html: String,
    /// Plain-text body.
    pub text: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// `Message-ID` without the angle brackets.
    pub message_id: String,
    /// The one-click unsubscribe URL (`List-Unsubscribe`).
    pub list_unsubscribe: Option<String>,
    /// `Date`, UTC ms.
    pub date_ms: i64,
}

/// A header value: as is when it is printable ASCII, else RFC 2047 encoded words.
pub fn encode_header(value: &str) -> String {
    let clean: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if clean.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return clean;
    }
    // Encoded words are at most 75 characters: 45 bytes of text give 60 of base64.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
    }
    words.join("\r\n ")
}

/// A mailbox as a header writes it: the name quoted or encoded as needed, the address in angle
/// brackets.
pub fn mailbox_header(mailbox: &Mailbox) -> String {
    let Some(name) = &mailbox.name else {
        return mailbox.address.clone();
    };
    let plain =
        |b: u8| b.is_ascii_alphanumeric() || b == b' ' || crate::address::ATEXT.contains(&b);
    let name = if !name.is_ascii() {
        encode_header(name)
    } else if name.bytes().all(plain) {
        name.clone()
    } else {
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    };
    format!("{name} <{}>", mailbox.address)
}

fn base64_lines(text: &str, out: &mut String) {
    let encoded = STANDARD.encode(text.as_bytes());
    let bytes = encoded.as_bytes();
    for line in bytes.chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
}

/// Formats a mail as RFC 5322 text with CRLF line ends (before SMTP dot-stuffing).
pub fn format(mail: &Mail, boundary: &str) -> String {
    let mut out = String::with_capacity(mail.html.len() * 2 + mail.text.len() * 2 + 1024);
    let date = jiff::Timestamp::from_millisecond(mail.date_ms)
        .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string())
        .unwrap_or_default();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", &mailbox_header(&mail.from));
    header("To", &mailbox_header(&mail.to));
    if let Some(reply_to) = &mail.reply_to {
        header("Reply-To", &mailbox_header(reply_to));
    }
    header("Subject", &encode_header(&mail.subject));
    header("Date", &date);
    header("Message-ID", &format!("<{}>", mail.message_id));
    header("MIME-Version", "1.0");
    if let Some(url) = &mail.list_unsubscribe {
        header("List-Unsubscribe", &format!("<{url}>"));
        header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
    }
    for (name, value) in &mail.headers {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ':')
            .collect();
        if name.is_empty() {
            continue;
        }
        header(&name, &encode_header(value));
    }
    header(
        "Content-Type",
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );
    out.push_str("\r\n");
    for (content_type, body) in [("text/plain", &mail.text), ("text/html", &mail.html)] {
        out.push_str("--");
        out.push_str(boundary);
        out.push_str("\r\nContent-Type: ");
        out.push_str(content_type);
        out.push_str("; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        base64_lines(body, &mut out);
    }
    out.push_str("--");
    out.push_str(boundary);
    out.push_str("--\r\n");
    out
}

/// Puts the preheader first in the HTML body, hidden, so that mail clients show it after the
/// subject.
pub fn with_preheader(html: &str, preheader: &str) -> String {
    if preheader.is_empty() {
        return html.to_string();
    }
    let hidden = format!(
        "<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">{}</div>",
        escape_html(preheader)
    );
    insert_after_body_open(html, &hidden)
}

fn insert_after_body_open(html: &str, insert: &str) -> String {
    let lower = html.to_ascii_lowercase();
    if let Some(start) = lower.find("<body")
        && let Some(end) = lower[start..].find('>')
    {
        let at = start + end + 1;
        return format!("{}{insert}{}", &html[..at], &html[at..]);
    }
    format!("{insert}{html}")
}

/// Appends an element before `</body>` (or at the end).
pub fn append_to_body(html: &str, element: &str) -> String {
    let lower = html.to_ascii_lowercase();
    match lower.rfind("</body>") {
        Some(at) => format!("{}{element}{}", &html[..at], &html[at..]),
        None => format!("{html}{element}"),
    }
}

/// Escapes text for HTML.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// A plain-text rendering of HTML for the text part when none is given: tags dropped, block
/// ends as line breaks, links as `text (url)`, the common entities decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    let mut pending_href: Option<String> = None;
    while let Some(lt) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&rest[..lt]);
        }
        let Some(gt) = rest[lt..].find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        let lower = tag.to_ascii_lowercase();
        let name = lower
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default()
            .to_string();
        let closing = lower.starts_with('/');
        match (skip_until, closing) {
            (Some(end), true) if name == end => skip_until = None,
            (Some(_), _) => {}
            (None, false) if name == "style" || name == "script" || name == "head" => {
                skip_until = Some(match name.as_str() {
                    "style" => "style",
                    "script" => "script",
                    _ => "head",
                })
            }
            (None, false) if name == "a" => pending_href = attribute(tag, "href"),
            (None, true) if name == "a" => {
                if let Some(href) = pending_href.take()
                    && !href.starts_with('#')
                {
                    out.push_str(&format!(" ({href})"));
                }
            }
            (None, _)
                if matches!(
                    name.as_str(),
                    "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "table"
                ) =>
            {
                out.push('\n')
            }
            _ => {}
        }
        rest = &rest[lt + gt + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let mut lines: Vec<String> = decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lines.dedup_by(|a, b| a.is_empty() && b.is_empty());
    lines.join("\n").trim().to_string()
}

/// The value of an attribute of a tag's inside text (`a href="x"`).
pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let at = from + pos;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[from..].trim_start();
        if !before_ok || !after.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - after.len() + 1;
        let value = tag[value_start..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default().to_string(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or_default()
                .to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_headers_are_encoded_words() {
        assert_eq!(encode_header("Hello"), "Hello");
        let encoded = encode_header("Grüße");
        assert_eq!(encoded, format!("=?UTF-8?B?{}?=", STANDARD.encode("Grüße")));
        let long = "é".repeat(60);
        for word in encode_header(&long).split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
        }
        assert_eq!(encode_header("a\r\nBcc: x"), "aBcc: x");
        let quoted = Mailbox::parse(r#""Shop, Inc. \"EU\"" <n@s.test>"#).unwrap();
        assert_eq!(mailbox_header(&quoted), r#""Shop, Inc. \"EU\"" <n@s.test>"#);
        let encoded = Mailbox::parse("Grüße <g@x.test>").unwrap();
        assert!(mailbox_header(&encoded).starts_with("=?UTF-8?B?"));
    }

    #[test]
    fn formatted_mail_has_both_parts_and_the_unsubscribe_headers() {
        let mail = Mail {
            from: Mailbox::parse("Shop <n@s.test>").unwrap(),
            to: Mailbox::parse("u@x.test").unwrap(),
            reply_to: Some(Mailbox::parse("Help, Desk <h@s.test>").unwrap_or(Mailbox {
                name: Some("Help, Desk".into()),
                address: "h@s.test".into(),
            })),
            subject: "Hi".into(),
            html: "<p>Hi</p>".into(),
            text: "Hi".into(),
            headers: Vec::new(),
            message_id: "m@s.test".into(),
            list_unsubscribe: Some("https://e.test/u".into()),
            date_ms: 0,
        };
        let text = format(&mail, "b1");
        assert!(text.contains("From: Shop <n@s.test>\r\n"));
        assert!(text.contains("Reply-To: \"Help, Desk\" <h@s.test>\r\n"));
        assert!(text.contains("List-Unsubscribe: <https://e.test/u>\r\n"));
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(text.contains("Content-Type: multipart/alternative; boundary=\"b1\"\r\n"));
        assert!(text.contains(&STANDARD.encode("<p>Hi</p>")));
        assert!(text.ends_with("--b1--\r\n"));
        assert!(text.lines().all(|l| l.len() <= 998));
    }

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><style>p{}</style></head><body><h1>Hi &amp; welcome</h1><p>See <a href=\"https://s.test/x\">our shop</a></p></body></html>";
        assert_eq!(
            html_to_text(html),
            "Hi & welcome\n\nSee our shop (https://s.test/x)"
        );
    }

    #[test]
    fn preheader_goes_first_in_the_body() {
        let html = with_preheader(
            "<html><body class=\"x\"><p>a</p></body></html>",
            "Sale <now>",
        );
        assert!(html.starts_with("<html><body class=\"x\"><div style="));
        assert!(html.contains("Sale &lt;now&gt;"));
        assert_eq!(
            append_to_body("<body>a</body>", "<img>"),
            "<body>a<img></body>"
        );
        assert_eq!(
            attribute("a class='x' href = \"u\"", "href").as_deref(),
            Some("u")
        );
        assert_eq!(attribute("a data-href=\"u\"", "href"), None);
    }
}
