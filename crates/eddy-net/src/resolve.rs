//! The checks made when eddy connects: a URL's literal address and port before a request
//! leaves, and each resolved address as the HTTP client's own resolver (so the connection goes
//! to the address that was checked).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::address::is_public;
use crate::allowed::AllowedHosts;

static LOOPBACK_ONLY: AtomicBool = AtomicBool::new(false);

/// Restricts every outbound connection of this process to loopback addresses (127.0.0.0/8 and
/// ::1); there is no way back. Tests set it so that nothing they run can reach beyond the machine.
pub fn restrict_to_loopback() {
    LOOPBACK_ONLY.store(true, Ordering::SeqCst);
}

/// Whether the process is restricted to loopback.
pub fn loopback_only() -> bool {
    LOOPBACK_ONLY.load(Ordering::SeqCst)
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The loopback rule alone, for destinations an operator configured (Currents, SMTP relays,
/// `eddy sync` targets): any address, unless the process is restricted to loopback.
pub fn check_outbound(ip: IpAddr) -> Result<(), Refused> {
    // `::ffff:127.0.0.1` is loopback too.
    if loopback_only() && !ip.to_canonical().is_loopback() {
        return Err(Refused(format!(
            "{ip} is outside loopback, and this process may only connect to loopback (tests)"
        )));
    }
    Ok(())
}

/// The loopback rule for a destination an operator configured as a URL, checked where the
/// connection is made by a client eddy cannot give its resolver (the object stores): when the
/// process is restricted to loopback, the URL must name a loopback address or `localhost`.
/// `None` stands for a service's public default (AWS S3, Azure, Google Cloud Storage).
pub fn check_operator_url(url: Option<&str>) -> Result<(), Refused> {
    if !loopback_only() {
        return Ok(());
    }
    let refused = |what: &str| {
        Refused(format!(
            "{what} is not on loopback, and this process may only connect to loopback (tests): give a local endpoint"
        ))
    };
    let Some(url) = url else {
        return Err(refused("the service's public endpoint"));
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| refused(url))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => v4.is_loopback(),
        Some(url::Host::Ipv6(v6)) => v6.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback { Ok(()) } else { Err(refused(url)) }
}

/// Whom a client may reach: anything an operator configured, or what a workspace's content may
/// call (public addresses plus its allowed hosts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Destinations an operator configured: any address (the loopback rule still holds).
    Operator,
    /// Destinations a workspace's templates or webhooks name.
    Workspace(AllowedHosts),
}

impl Policy {
    /// Checks a URL before a request leaves: its scheme, and its host when it is a literal
    /// address (a name is checked by the resolver once resolved). `only_web_ports` adds
    /// Connected Content's rule: ports 80 and 443 unless the host is allowed.
    pub fn check_url(&self, url: &reqwest::Url, only_web_ports: bool) -> Result<(), Refused> {
        let allowed = match self {
            Policy::Operator => None,
            Policy::Workspace(allowed) => Some(allowed),
        };
        check_url_for(allowed, url, only_web_ports)
    }

    /// Which of a name's addresses may be connected to.
    fn admit(&self, name: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let trusted = match self {
            Policy::Operator => true,
            Policy::Workspace(allowed) => allowed.allows_name(name),
        };
        let mut refused = None;
        let admitted: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|a| {
                let verdict = check_outbound(a.ip()).and_then(|()| {
                    if trusted || is_public(a.ip()) {
                        Ok(())
                    } else {
                        Err(Refused(format!(
                            "{name} resolves to {}, a private address (add the host to the workspace's allowed_hosts to call it)",
                            a.ip()
                        )))
                    }
                });
                match verdict {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                }
            })
            .collect();
        match (admitted.is_empty(), refused) {
            (true, Some(reason)) => Err(reason),
            (true, None) => Err(Refused(format!("{name} has no address"))),
            (false, _) => Ok(admitted),
        }
    }
}

/// The HTTP client's resolver: resolves with the system's resolver, then keeps only the
/// addresses the policy admits, so the client connects to nothing else.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<Policy>,
}

impl PolicyResolver {
    /// A resolver for this policy.
    pub fn new(policy: Policy) -> PolicyResolver {
        PolicyResolver {
            policy: Arc::new(policy),
        }
    }

    /// The addresses of `name` the policy admits (a refusal when it admits none).
    pub(crate) async fn admitted(
        &self,
        name: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name, 0)).await?.collect();
        Ok(self.policy.admit(name, found)?)
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let admitted = resolver.admitted(&name).await?;
            Ok(Box::new(admitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client builder whose connections follow `policy`; redirects are not followed (a redirect
/// could lead anywhere).
pub fn client_builder(policy: Policy) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver::new(policy)))
}

/// [`Policy::check_url`] with a workspace's allowed hosts borrowed (`None`: an operator's
/// destination), so that checking a URL per message copies nothing.
pub fn check_url_for(
    allowed: Option<&AllowedHosts>,
    url: &reqwest::Url,
    only_web_ports: bool,
) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "only http and https URLs are called, not '{}'",
            url.scheme()
        )));
    }
    let Some(host) = url.host() else {
        return Err(Refused(format!("'{url}' names no host")));
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let literal: Option<IpAddr> = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    };
    let host_text = url.host_str().unwrap_or_default();
    let Some(allowed) = allowed else {
        return literal.map_or(Ok(()), check_outbound);
    };
    if allowed.allows(host_text, port) {
        return literal.map_or(Ok(()), check_outbound);
    }
    if only_web_ports && port != 80 && port != 443 {
        return Err(Refused(format!(
            "port {port} of {host_text} is not allowed (80 and 443 only, unless the host is in the workspace's allowed_hosts)"
        )));
    }
    if let Some(ip) = literal
        && !is_public(ip)
    {
        return Err(Refused(format!(
            "{ip} is a private address (add it to the workspace's allowed_hosts to call it)"
        )));
    }
    literal.map_or(Ok(()), check_outbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        text.parse().expect("a url")
    }

    #[test]
    fn literal_addresses_are_checked_before_sending() {
        let none = Policy::Workspace(AllowedHosts::default());
        assert!(none.check_url(&url("http://127.0.0.1/x"), false).is_err());
        assert!(
            none.check_url(&url("http://[::ffff:127.0.0.1]/"), false)
                .is_err()
        );
        assert!(
            none.check_url(&url("http://[64:ff9b::a9fe:a9fe]/"), false)
                .is_err()
        );
        assert!(none.check_url(&url("http://8.8.8.8:8080/"), false).is_ok());
        assert!(none.check_url(&url("http://8.8.8.8:8080/"), true).is_err());
        assert!(none.check_url(&url("ftp://8.8.8.8/"), false).is_err());
        let local = Policy::Workspace(AllowedHosts::parse(&["127.0.0.1", "[::1]:9"]).unwrap());
        assert!(
            local
                .check_url(&url("http://127.0.0.1:5000/"), true)
                .is_ok()
        );
        assert!(local.check_url(&url("http://[::1]:9/"), true).is_ok());
        assert!(local.check_url(&url("http://[::1]:10/"), false).is_err());
        assert!(
            Policy::Operator
                .check_url(&url("http://10.0.0.1/"), false)
                .is_ok()
        );
    }

    #[test]
    fn resolved_addresses_are_admitted_by_the_policy() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let none = Policy::Workspace(AllowedHosts::default());
        let err = none
            .admit("evil.example", vec![a("127.0.0.1:0")])
            .expect_err("private");
        assert!(err.0.contains("private address"), "{err}");
        let mixed = none
            .admit("mixed.example", vec![a("10.0.0.1:0"), a("93.184.216.34:0")])
            .expect("the public one");
        assert_eq!(mixed, vec![a("93.184.216.34:0")]);
        let allowed = Policy::Workspace(AllowedHosts::parse(&["localhost"]).unwrap());
        assert!(allowed.admit("localhost", vec![a("127.0.0.1:0")]).is_ok());
        assert!(Policy::Operator.admit("db", vec![a("10.0.0.1:0")]).is_ok());
    }
}
