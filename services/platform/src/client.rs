//! gRPC client channels to other clouddp services, with TLS and W3C trace context injection.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::{ClientTlsSettings, TlsError};

/// A channel that could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a valid endpoint.
    #[error("invalid endpoint url {url}: {message}")]
    Url { url: String, message: String },
    /// TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Result of building a channel.
pub type ClientResult<T> = Result<T, ClientError>;

/// A lazily connecting channel to `url` (`http://` or `https://`); TLS settings apply to `https://`.
pub fn channel(url: &str, tls: &ClientTlsSettings) -> ClientResult<Channel> {
    let invalid = |message: String| ClientError::Url {
        url: url.to_owned(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| invalid(error.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.client_config()?)
            .map_err(|error| invalid(error.to_string()))?;
    } else if !url.starts_with("http://") {
        return Err(invalid("use an http:// or https:// url".to_owned()));
    }
    Ok(endpoint.connect_lazy())
}

/// Puts the current span's W3C trace context into the request's metadata.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    crate::telemetry::inject_context(request.metadata_mut());
    Ok(request)
}

/// The interceptor type of [`inject_trace_context`].
pub type TraceInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel wrapped so every call carries the trace context.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<Channel, TraceInterceptor>;

/// Wraps `channel` with [`inject_trace_context`].
pub fn traced(channel: Channel) -> TracedChannel {
    tonic::service::interceptor::InterceptedService::new(
        channel,
        inject_trace_context as TraceInterceptor,
    )
}
