//! Where eddy may open connections on behalf of what users configure or templates write.
//!
//! One rule serves Connected Content and webhooks: public addresses, plus the hosts a workspace
//! lists in `allowed_hosts`. A host name is checked after it is resolved, and the connection goes
//! to the address that was checked ([`PolicyResolver`] is the resolver of the HTTP client), so a
//! name that resolves to a public address once and a private one the next time cannot slip
//! through. Beside it, a process may be restricted to loopback ([`restrict_to_loopback`]): every
//! outbound client of eddy (webhooks, Connected Content, SMTP, Currents, `eddy sync`) then
//! refuses any other address, which is how tests make sure they never reach beyond the machine.
//!
//! - [`address`]: which addresses are public, in every spelling.
//! - [`allowed`]: a workspace's `allowed_hosts`, parsed and matched.
//! - [`connector`]: the connector of the lean HTTP/1 client webhooks are sent with.
//! - [`resolve`]: the checks at connection time and the resolver that applies them.

pub mod address;
pub mod allowed;
pub mod connector;
pub mod resolve;

pub use address::is_public;
pub use allowed::{AllowedHosts, InvalidHost, is_host_name};
pub use connector::{Connector, connector, tls_config};
pub use resolve::{
    Policy, PolicyResolver, Refused, check_operator_url, check_outbound, check_url_for,
    client_builder, loopback_only, restrict_to_loopback,
};
