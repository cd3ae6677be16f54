//! The check a connector passes before it is created or changed: one cheap request that proves
//! the destination takes writes with these settings, so a misspelt bucket or a wrong key is
//! refused with its cause at once instead of retrying in the background forever.

use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::checkpoint::root_cause;
use crate::connector::Sink;
use crate::sinks::amplitude::config::AmplitudeConnector;
use crate::sinks::files::stores::file_store;

/// How long a check may take in all; the client's own retries fit inside it.
const PROBE_DEADLINE: Duration = Duration::from_secs(15);

/// Checks that `sink` accepts writes: an object written (and removed) under the connector's
/// prefix for object stores, an authenticated request without events for Amplitude.
pub(crate) async fn probe(sink: &Sink) -> Result<(), String> {
    let check = async {
        match sink {
            Sink::Amplitude(settings) => check_amplitude_key(settings).await,
            _ => probe_write(sink).await,
        }
    };
    match tokio::time::timeout(PROBE_DEADLINE, check).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the {} destination did not answer within {} seconds (\"validate\": false skips this check)",
            sink.kind(),
            PROBE_DEADLINE.as_secs()
        )),
    }
}

/// Writes a small object beside where Currents files go, then removes it. A store that lets
/// eddy write but not delete (Braze asks only for write access) keeps the object; that is
/// logged, not refused.
async fn probe_write(sink: &Sink) -> Result<(), String> {
    let store = file_store(sink)?;
    let prefix = sink.files().map(|f| f.prefix).unwrap_or_default();
    let name = format!("eddy-connection-check-{}", eddy_store::ids::id_hex(8));
    let path = if prefix.is_empty() {
        Path::from(name)
    } else {
        Path::from(format!("{}/{name}", prefix.trim_end_matches('/')))
    };
    let body = b"written by eddy to check a Currents connector's settings; safe to delete\n";
    if let Err(e) = store.put(&path, body.to_vec().into()).await {
        return Err(format!(
            "the test write to {} failed: {} (\"validate\": false skips this check)",
            sink.kind(),
            root_cause(path.as_ref(), &e)
        ));
    }
    if let Err(e) = store.delete(&path).await {
        tracing::info!(connector_type = sink.kind(), object = %path, error = %e,
            "the connection check's object stays: it could not be deleted");
    }
    Ok(())
}

/// Posts Amplitude an upload without events: a wrong key answers `Invalid API key`; any other
/// answer from Amplitude means the key was taken (an empty upload ingests nothing).
async fn check_amplitude_key(settings: &AmplitudeConnector) -> Result<(), String> {
    let Some(url) = settings.url() else {
        return Err(format!(
            "no Amplitude endpoint for region '{}'",
            settings.region
        ));
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_seconds.clamp(1, 10)))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let body = serde_json::json!({"api_key": settings.api_key, "events": []});
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach Amplitude: {}", root_cause(&url, &e)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let error = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    if error.starts_with("Invalid API key") {
        return Err("Amplitude: Invalid API key".into());
    }
    if status.is_server_error() || status.as_u16() == 403 {
        return Err(format!(
            "Amplitude answered {status} to the key check: {}",
            if error.is_empty() {
                text.trim()
            } else {
                &error
            }
        ));
    }
    Ok(())
}
