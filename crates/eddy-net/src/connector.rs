//! The connector of eddy's lean HTTP/1 client (webhooks, where a broadcast makes one request per
//! recipient): TCP to the addresses the policy admits, TLS with the machine's trusted roots.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

use crate::resolve::{Policy, PolicyResolver};

/// HTTP or HTTPS over TCP to admitted addresses only.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;

/// A connector whose connections follow `policy`.
pub fn connector(policy: Policy) -> Result<Connector, rustls::Error> {
    let mut tcp = HttpConnector::new_with_resolver(PolicyResolver::new(policy));
    // `https` URLs are wrapped in TLS by the layer above, which hands them down as TCP.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp))
}

/// A TLS client configuration trusting the machine's roots (those that fail to parse are
/// skipped, as every client of the system store does).
pub fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The resolver as hyper's connector calls it. A refusal travels as the error itself (not
/// wrapped in an `io::Error`, whose `source` would skip it), so callers find [`crate::Refused`]
/// in the error's chain.
impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            let admitted = resolver.admitted(name.as_str()).await?;
            Ok(admitted.into_iter())
        })
    }
}
