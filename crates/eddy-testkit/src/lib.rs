//! eddy's shared test kit, for tests and benchmarks alike (never shipped).
//!
//! - [`app`]: `spawn_app()` — a real `eddy serve` in process on port 0 with a fresh data dir and
//!   a REST key; `start(dir)` restarts on an existing one.
//! - [`s3`]: a small S3-compatible server (path-style PUT/GET, failure switch).
//! - [`amplitude`]: an emulator of Amplitude's HTTP API v2, faults included.
//! - [`amplitude_profile`]: an emulator of Amplitude's User Profile API (for Connected Content).
//! - [`braze`]: an emulated Braze `/users/track` with scripted faults (for `eddy sync`).
//! - [`receivers`]: a webhook receiver and a real SMTP server (aiosmtpd) for sending tests.
//! - [`proxy`]: a TCP proxy that delays or holds traffic (a database far away, or stalled).
//! - [`read_avro`]: the records of a Currents file, through eddy's own Avro reader.

pub mod amplitude;
pub mod amplitude_profile;
pub mod app;
pub mod braze;
pub mod proxy;
pub mod receivers;
pub mod s3;

pub use amplitude::{AmplitudeEmulator, Fault};
pub use amplitude_profile::{AmplitudeProfileApi, ProfileUser};
pub use app::{TestApp, TestDatabase, spawn_app, spawn_with, start};
pub use proxy::TcpProxy;
pub use receivers::{SmtpServer, WebhookReceiver};
pub use s3::TestS3;

/// The records of an Avro Object Container File, read by eddy's own reader (the one `eddy sync`
/// and the benchmarks use); panics on a file that reader refuses.
pub fn read_avro(file: &[u8]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    eddy_currents::avro::read_container(file).expect("a valid Avro container")
}
