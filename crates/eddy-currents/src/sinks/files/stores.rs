//! The object stores a file connector writes to: S3 (and S3-compatible servers), Azure Blob
//! Storage and Google Cloud Storage, each with the same short client retries.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};

use crate::connector::Sink;
use crate::sinks::files::config::{AzureConnector, GcsConnector};

/// The object-store client's own retries: few and short. The file task retries a failed write
/// forever with its own backoff, and a flush or an export must learn of an outage in seconds,
/// not after the client's default three minutes of retrying.
fn client_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        ..object_store::RetryConfig::default()
    }
}

/// An S3 client for connector or export settings: path-style, plain HTTP allowed for local servers.
pub fn s3_store(
    settings: &eddy_store::meta::S3Settings,
    sse: Option<&str>,
) -> Result<AmazonS3, object_store::Error> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_retry(client_retry())
        // eddy deletes one object at a time (the connection check's); a single DELETE is
        // core S3 that every compatible server has, the bulk POST is not.
        .with_disable_bulk_delete(true);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    if let Some(sse) = sse {
        // The key's enum is not re-exported; its documented name parses to it.
        let key: AmazonS3ConfigKey = "aws_server_side_encryption".parse()?;
        builder = builder.with_config(key, sse);
    }
    builder.build()
}

/// The object store a file-writing connector writes to.
pub(crate) fn file_store(sink: &Sink) -> Result<Arc<dyn object_store::ObjectStore>, String> {
    let endpoint = match sink {
        Sink::S3(s3) => s3.s3.endpoint.as_deref(),
        Sink::Azure(azure) => azure.endpoint.as_deref(),
        Sink::Gcs(gcs) => gcs.endpoint.as_deref(),
        Sink::Amplitude(_) => None,
    };
    eddy_net::check_operator_url(endpoint).map_err(|refused| refused.to_string())?;
    match sink {
        Sink::S3(s3) => s3_store(&s3.s3, s3.server_side_encryption.as_deref())
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid s3 settings: {e}")),
        Sink::Azure(azure) => azure_store(azure)
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid azure settings: {e}")),
        Sink::Gcs(gcs) => gcs_store(gcs)
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid gcs settings: {e}")),
        Sink::Amplitude(_) => Err("amplitude connectors write no files".into()),
    }
}

/// A Google Cloud Storage client; an endpoint without a key is an emulator (no real token).
fn gcs_store(
    settings: &GcsConnector,
) -> Result<object_store::gcp::GoogleCloudStorage, object_store::Error> {
    let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(&settings.bucket)
        .with_retry(client_retry());
    if let Some(key) = &settings.service_account_key {
        builder = builder.with_service_account_key(key);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_base_url(endpoint.trim_end_matches('/'))
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true));
        if settings.service_account_key.is_none() {
            // Emulators take any token; a static one keeps the client from asking the cloud
            // metadata server for a real one.
            builder = builder.with_bearer_token("emulator");
        }
    }
    builder.build()
}

/// An Azure Blob Storage client; an endpoint (Azurite) is used as given, over plain HTTP.
fn azure_store(
    settings: &AzureConnector,
) -> Result<object_store::azure::MicrosoftAzure, object_store::Error> {
    let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
        .with_retry(client_retry())
        .with_account(&settings.account)
        .with_container_name(&settings.container);
    if let Some(key) = &settings.access_key {
        builder = builder.with_access_key(key);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint.clone())
            .with_allow_http(true);
    }
    builder.build()
}
