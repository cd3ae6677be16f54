//! An SMTP client for a workspace's relay: `smtp://` (optionally upgraded with STARTTLS) or
//! `smtps://` (TLS from the first byte), AUTH PLAIN, and kept-open connections reused for many
//! messages, a bounded number per relay.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};

/// How to reach a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte (`smtps://`).
    pub implicit_tls: bool,
    /// Upgrade with STARTTLS (required when set).
    pub starttls: bool,
    /// AUTH PLAIN user name.
    pub username: Option<String>,
    /// AUTH PLAIN password.
    pub password: Option<String>,
}

impl Relay {
    /// Reads `smtp://[user[:password]@]host[:port]` or `smtps://…` (ports 25 and 465 by default).
    pub fn parse(url: &str, starttls: bool) -> Result<Relay, String> {
        let (implicit_tls, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("smtp://") {
            (false, rest)
        } else {
            return Err("smtp_url starts with smtp:// or smtps://".into());
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            Some(info) => {
                let (u, p) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(percent_decode(p))),
                    None => (info, None),
                };
                (Some(percent_decode(u)), p)
            }
            None => (None, None),
        };
        let default_port = if implicit_tls { 465 } else { 25 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("'{p}' is not a port"))?;
                (h.trim_matches(['[', ']']).to_string(), port)
            }
            _ => (hostport.to_string(), default_port),
        };
        if host.is_empty() || host.contains(['/', '?', '#']) {
            return Err("smtp_url needs a host".into());
        }
        if implicit_tls && starttls {
            return Err("starttls applies to smtp:// (smtps:// is TLS already)".into());
        }
        Ok(Relay {
            host,
            port,
            implicit_tls,
            starttls,
            username,
            password,
        })
    }

    /// The URL with the password hidden.
    pub fn redacted(&self) -> String {
        let scheme = if self.implicit_tls { "smtps" } else { "smtp" };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:****@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The greeting and EHLO; answers the capabilities.
async fn greet<S: AsyncBufReadExt + AsyncWrite + Unpin>(
    stream: &mut S,
    helo: &str,
) -> Result<String, SmtpError> {
    expect(read_reply(stream).await?, 2, "greeting")?;
    expect(command(stream, &format!("EHLO {helo}")).await?, 2, "EHLO")
}

/// What the relay said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 2xx after the data: accepted.
    Accepted(String),
    /// 5xx: refused for good (a hard bounce).
    Rejected(String),
    /// 4xx: refused for now.
    Deferred(String),
}

/// The connection failed (network, TLS, protocol): the message may be tried again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SmtpError(pub String);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open, greeted and authenticated connection.
pub struct Connection {
    stream: BufStream<Box<dyn Io>>,
    last_used: std::time::Instant,
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn io_error(e: impl std::fmt::Display) -> SmtpError {
    SmtpError(e.to_string())
}

async fn read_reply<S: AsyncBufReadExt + Unpin>(
    stream: &mut S,
) -> Result<(u16, String), SmtpError> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, stream.read_line(&mut line))
            .await
            .map_err(|_| SmtpError("the relay did not answer in time".into()))?
            .map_err(io_error)?;
        if n == 0 {
            return Err(SmtpError("the relay closed the connection".into()));
        }
        let line = line.trim_end();
        if line.len() < 3 || line.len() > 4096 {
            return Err(SmtpError(format!("not an SMTP reply: {line:?}")));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| SmtpError(format!("not an SMTP reply: {line:?}")))?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
    }
}

async fn command<S: AsyncBufReadExt + AsyncWrite + Unpin>(
    stream: &mut S,
    line: &str,
) -> Result<(u16, String), SmtpError> {
    // One command is one line: text that would end it early is refused before anything is
    // written, so the session stays where it was.
    if line.contains(['\r', '\n', '\0']) {
        return Err(SmtpError(format!(
            "refused to send an SMTP command holding a line break: {:?}",
            line.chars().take(80).collect::<String>()
        )));
    }
    stream.write_all(line.as_bytes()).await.map_err(io_error)?;
    stream.write_all(b"\r\n").await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    read_reply(stream).await
}

fn expect(reply: (u16, String), code_class: u16, what: &str) -> Result<String, SmtpError> {
    if reply.0 / 100 == code_class {
        Ok(reply.1)
    } else {
        Err(SmtpError(format!("{what}: {}", reply.1)))
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, SmtpError> {
    let config = eddy_net::tls_config().map_err(io_error)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn upgrade(tcp: TcpStream, host: &str) -> Result<Box<dyn Io>, SmtpError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| SmtpError(format!("'{host}' is not a TLS server name: {e}")))?;
    let tls = tls_connector()?
        .connect(name, tcp)
        .await
        .map_err(|e| SmtpError(format!("TLS with {host}: {e}")))?;
    Ok(Box::new(tls))
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, upgrades and authenticates as configured.
    pub async fn open(relay: &Relay, helo: &str) -> Result<Connection, SmtpError> {
        let addresses: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((relay.host.as_str(), relay.port))
                .await
                .map_err(|e| SmtpError(format!("cannot resolve {}: {e}", relay.host)))?
                .collect();
        for address in &addresses {
            eddy_net::check_outbound(address.ip()).map_err(|e| SmtpError(e.to_string()))?;
        }
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addresses.as_slice()))
            .await
            .map_err(|_| {
                SmtpError(format!(
                    "connecting to {}:{} timed out",
                    relay.host, relay.port
                ))
            })?
            .map_err(|e| {
                SmtpError(format!(
                    "cannot connect to {}:{}: {e}",
                    relay.host, relay.port
                ))
            })?;
        let _ = tcp.set_nodelay(true);
        let (mut stream, capabilities) = if relay.implicit_tls {
            let mut stream = BufStream::new(upgrade(tcp, &relay.host).await?);
            let capabilities = greet(&mut stream, helo).await?;
            (stream, capabilities)
        } else {
            let mut plain = BufStream::new(tcp);
            let capabilities = greet(&mut plain, helo).await?;
            if relay.starttls {
                if !capabilities.to_ascii_uppercase().contains("STARTTLS") {
                    return Err(SmtpError(format!("{} does not offer STARTTLS", relay.host)));
                }
                expect(command(&mut plain, "STARTTLS").await?, 2, "STARTTLS")?;
                // The relay says nothing more before the handshake: nothing buffered is lost.
                let mut stream = BufStream::new(upgrade(plain.into_inner(), &relay.host).await?);
                let capabilities = expect(
                    command(&mut stream, &format!("EHLO {helo}")).await?,
                    2,
                    "EHLO",
                )?;
                (stream, capabilities)
            } else {
                let io: Box<dyn Io> = Box::new(plain.into_inner());
                (BufStream::new(io), capabilities)
            }
        };
        if let Some(user) = &relay.username {
            if !capabilities.to_ascii_uppercase().contains("AUTH") {
                return Err(SmtpError(format!("{} offers no AUTH", relay.host)));
            }
            let password = relay.password.clone().unwrap_or_default();
            let token = STANDARD.encode(format!("\0{user}\0{password}"));
            expect(
                command(&mut stream, &format!("AUTH PLAIN {token}")).await?,
                2,
                "AUTH",
            )?;
        }
        Ok(Connection {
            stream,
            last_used: std::time::Instant::now(),
        })
    }

    /// Sends one message to `recipients`; the first recipient decides the reply (the others are
    /// blind copies).
    pub async fn send(
        &mut self,
        from: &str,
        recipients: &[&str],
        data: &str,
    ) -> Result<Reply, SmtpError> {
        // Every address is checked before the first command, so a refused one leaves the
        // session as it was (no transaction begun).
        if let Some(bad) = std::iter::once(&from)
            .chain(recipients)
            .find(|a| a.is_empty() || a.contains(['\r', '\n', '\0', '<', '>', ' ']))
        {
            return Err(SmtpError(format!(
                "refused an envelope address that is not one address: {:?}",
                bad.chars().take(80).collect::<String>()
            )));
        }
        let classify = |(code, text): (u16, String)| match code / 100 {
            2 | 3 => None,
            4 => Some(Reply::Deferred(text)),
            _ => Some(Reply::Rejected(text)),
        };
        let reply = command(&mut self.stream, &format!("MAIL FROM:<{from}>")).await?;
        if let Some(refused) = classify(reply) {
            command(&mut self.stream, "RSET").await?;
            return Ok(refused);
        }
        for (i, to) in recipients.iter().enumerate() {
            let reply = command(&mut self.stream, &format!("RCPT TO:<{to}>")).await?;
            if i == 0
                && let Some(refused) = classify(reply)
            {
                command(&mut self.stream, "RSET").await?;
                return Ok(refused);
            }
        }
        let reply = command(&mut self.stream, "DATA").await?;
        if reply.0 != 354 {
            let refused = classify(reply).unwrap_or(Reply::Deferred("DATA refused".into()));
            command(&mut self.stream, "RSET").await?;
            return Ok(refused);
        }
        let stuffed = dot_stuff(data);
        self.stream
            .write_all(stuffed.as_bytes())
            .await
            .map_err(io_error)?;
        if !stuffed.ends_with("\r\n") {
            self.stream.write_all(b"\r\n").await.map_err(io_error)?;
        }
        self.stream.write_all(b".\r\n").await.map_err(io_error)?;
        self.stream.flush().await.map_err(io_error)?;
        let (code, text) = read_reply(&mut self.stream).await?;
        Ok(match code / 100 {
            2 => Reply::Accepted(text),
            4 => Reply::Deferred(text),
            _ => Reply::Rejected(text),
        })
    }

    /// Says QUIT (best effort).
    pub async fn quit(mut self) {
        let _ = command(&mut self.stream, "QUIT").await;
    }
}

/// Doubles a leading dot on every line (RFC 5321 §4.5.2) and makes every line end CRLF.
pub fn dot_stuff(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    for line in data.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if body.starts_with('.') {
            out.push('.');
        }
        out.push_str(body);
        if line.ends_with('\n') {
            out.push_str("\r\n");
        }
    }
    out
}

/// How long a connection may sit idle before it is checked with NOOP.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Open connections to one relay, reused; at most `max` at a time.
pub struct Pool {
    relay: Relay,
    helo: String,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool of at most `max` connections.
    pub fn new(relay: Relay, helo: String, max: usize) -> Pool {
        Pool {
            relay,
            helo,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.max(1)),
        }
    }

    /// Sends one message on an idle connection (or a new one); a connection that failed is
    /// dropped, one that answered is kept.
    pub async fn send(
        &self,
        from: &str,
        recipients: &[&str],
        data: &str,
    ) -> Result<Reply, SmtpError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SmtpError("the pool is closed".into()))?;
        let reused = self.idle.lock().await.pop();
        let mut connection = match reused {
            // Relays close connections left idle; one unused for a while is asked first, so that
            // a message is never deferred for a connection that was already gone.
            Some(mut c) if c.last_used.elapsed() > IDLE_CHECK => {
                match command(&mut c.stream, "NOOP").await {
                    Ok((250, _)) => c,
                    _ => Connection::open(&self.relay, &self.helo).await?,
                }
            }
            Some(c) => c,
            None => Connection::open(&self.relay, &self.helo).await?,
        };
        let reply = connection.send(from, recipients, data).await?;
        connection.last_used = std::time::Instant::now();
        self.idle.lock().await.push(connection);
        Ok(reply)
    }

    /// Closes the idle connections.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().await);
        for connection in idle {
            connection.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let r = Relay::parse("smtps://me%40x.test:p%3Ass@mail.x.test", false).unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.implicit_tls),
            ("mail.x.test", 465, true)
        );
        assert_eq!(r.username.as_deref(), Some("me@x.test"));
        assert_eq!(r.password.as_deref(), Some("p:ss"));
        assert_eq!(r.redacted(), "smtps://me@x.test:****@mail.x.test:465");
        let r = Relay::parse("smtp://127.0.0.1:2525", true).unwrap();
        assert_eq!((r.port, r.starttls, r.username), (2525, true, None));
        assert!(Relay::parse("http://x", false).is_err());
        assert!(Relay::parse("smtps://x", true).is_err());
        assert!(Relay::parse("smtp://x:notaport", false).is_err());
    }

    /// A scripted relay: refuses recipients starting with `bounce` (550) and `soft` (451),
    /// records each message's data, and answers every other command 250.
    async fn relay() -> (
        u16,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, opened) = (got.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test\r\n").await.unwrap();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &[u8] = if line.starts_with("EHLO") {
                            b"250-test\r\n250 PIPELINING\r\n"
                        } else if line.starts_with("RCPT TO:<bounce") {
                            b"550 5.1.1 unknown\r\n"
                        } else if line.starts_with("RCPT TO:<soft") {
                            b"451 4.2.0 later\r\n"
                        } else if line == "DATA" {
                            write.write_all(b"354 go\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            seen.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        } else {
                            b"250 ok\r\n"
                        };
                        write.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        (port, got, connections)
    }

    #[tokio::test]
    async fn a_pool_sends_reuses_its_connection_and_classifies_refusals() {
        let (port, got, connections) = relay().await;
        let relay_url = Relay::parse(&format!("smtp://127.0.0.1:{port}"), false).unwrap();
        let pool = Pool::new(relay_url, "eddy.test".into(), 1);
        let reply = pool
            .send("a@x.test", &["u@x.test"], "Subject: s\r\n\r\n.hidden\r\n")
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Accepted(_)), "{reply:?}");
        assert!(
            matches!(pool.send("a@x.test", &["bounce@x.test"], "x").await.unwrap(), Reply::Rejected(t) if t.starts_with("550"))
        );
        assert!(
            matches!(pool.send("a@x.test", &["soft@x.test"], "x").await.unwrap(), Reply::Deferred(t) if t.starts_with("451"))
        );
        // After refusals (answered with RSET) the same connection still delivers.
        assert!(matches!(
            pool.send("a@x.test", &["v@x.test"], "body").await.unwrap(),
            Reply::Accepted(_)
        ));
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A recipient holding commands is refused before anything is written: the relay
        // receives no forged message, and the pool still delivers at once.
        let injected = "b@example.com>\r\nRSET\r\nMAIL FROM:<spoof@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nforged\r\n.";
        let refused = pool.send("a@x.test", &["u@x.test", injected], "real").await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(matches!(
            pool.send("a@x.test", &["w@x.test"], "after").await.unwrap(),
            Reply::Accepted(_)
        ));
        let got = got.lock().unwrap().clone();
        // Dot-stuffed on the wire (a relay takes the extra dot off again).
        assert_eq!(
            got,
            vec![
                "Subject: s\n\n..hidden\n".to_string(),
                "body\n".to_string(),
                "after\n".to_string()
            ]
        );
        pool.close().await;
    }

    #[tokio::test]
    async fn starttls_is_required_when_asked_for() {
        let (port, _, _) = relay().await;
        let relay_url = Relay::parse(&format!("smtp://127.0.0.1:{port}"), true).unwrap();
        let err = Connection::open(&relay_url, "eddy.test")
            .await
            .err()
            .unwrap();
        assert!(err.0.contains("does not offer STARTTLS"), "{err}");
    }

    #[test]
    fn dots_are_stuffed_and_lines_end_crlf() {
        assert_eq!(dot_stuff("a\n.b\r\n..c"), "a\r\n..b\r\n...c");
        assert_eq!(dot_stuff(".\r\n"), "..\r\n");
    }
}
