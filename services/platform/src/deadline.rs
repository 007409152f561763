//! The caller's deadline (`grpc-timeout`) as gRPC defines it: a call that has not answered by then ends with
//! DEADLINE_EXCEEDED, and a server stream still open then ends with DEADLINE_EXCEEDED in its trailers. (The
//! transport's own timeout answers CANCELLED, and only until the response headers; this layer sits inside it
//! and takes its deadline first, so it always answers first.) The same layer cuts every `grpc-message` to
//! [`MAX_MESSAGE_BYTES`], in headers and trailers, since it already sees every response.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// The layer to put on the gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

/// A service that holds its calls to their deadline.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, RequestBody> tower::Service<http::Request<RequestBody>> for Deadline<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        // Taken now, before the transport starts its own timer for the same header.
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_timeout)
            .map(|timeout| Instant::now() + timeout);
        let answer = self.inner.call(request);
        let Some(deadline) = deadline else {
            return Box::pin(async move {
                let response = answer.await?;
                Ok(bounded(response.map(|body| {
                    tonic::body::Body::new(DeadlineBody {
                        inner: body,
                        sleep: None,
                        done: false,
                    })
                })))
            });
        };
        Box::pin(async move {
            // A deadline already past (`1n`) is answered before the work starts; a timer would fire only on the
            // next tick of the clock, after a quick answer.
            if Instant::now() >= deadline {
                return Ok(exceeded().into_http());
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(response)) => Ok(bounded(response.map(|body| {
                    tonic::body::Body::new(DeadlineBody {
                        inner: body,
                        sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
                        done: false,
                    })
                }))),
                Ok(Err(error)) => Err(error),
                Err(_) => Ok(exceeded().into_http()),
            }
        })
    }
}

const EXCEEDED: &str = "the call's deadline passed before it finished";

fn exceeded() -> Status {
    Status::deadline_exceeded(EXCEEDED)
}

/// The longest `grpc-message` sent, in bytes: an error that quotes a client's 10 KB field must not exceed what
/// clients accept in headers (8 KiB in gRPC's C core), which they would report as RESOURCE_EXHAUSTED instead.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Cuts an over-long `grpc-message` in `headers` (percent-encoded: never inside an escape), marking the cut.
fn bound_message(headers: &mut http::HeaderMap) {
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    let bytes = message.as_bytes();
    if bytes.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let mut end = MAX_MESSAGE_BYTES;
    // Do not split a `%XX` escape.
    if let Some(percent) = bytes[end.saturating_sub(2)..end]
        .iter()
        .rposition(|byte| *byte == b'%')
    {
        end = end - 2 + percent;
    }
    let mut cut = bytes[..end].to_vec();
    cut.extend_from_slice(b"%E2%80%A6 (cut)");
    if let Ok(value) = http::HeaderValue::from_bytes(&cut) {
        headers.insert("grpc-message", value);
    }
}

fn bounded(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    bound_message(response.headers_mut());
    response
}

/// A response body that ends with DEADLINE_EXCEEDED trailers when the deadline passes before it ended, and whose
/// trailers carry a bounded `grpc-message`.
struct DeadlineBody {
    inner: tonic::body::Body,
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            let frame = frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        bound_message(trailers);
                    }
                    frame
                })
            });
            return Poll::Ready(frame);
        }
        let expired = self
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if expired {
            self.done = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert(
                "grpc-status",
                http::HeaderValue::from(tonic::Code::DeadlineExceeded as i32),
            );
            // Printable ASCII without `%`: a valid grpc-message as it stands.
            trailers.insert("grpc-message", http::HeaderValue::from_static(EXCEEDED));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_outside_an_escape() {
        let mut headers = http::HeaderMap::new();
        let long = "%22".repeat(1000);
        headers.insert("grpc-message", http::HeaderValue::from_str(&long).unwrap());
        bound_message(&mut headers);
        let cut = headers["grpc-message"].to_str().unwrap();
        assert!(cut.len() <= MAX_MESSAGE_BYTES + 20, "{}", cut.len());
        assert!(cut.ends_with("%E2%80%A6 (cut)"));
        let before = cut.trim_end_matches("%E2%80%A6 (cut)");
        assert!(
            before.len().is_multiple_of(3) && before.chars().all(|c| c == '%' || c == '2'),
            "{before}"
        );
        let mut short = http::HeaderMap::new();
        short.insert("grpc-message", http::HeaderValue::from_static("fine"));
        bound_message(&mut short);
        assert_eq!(short["grpc-message"], "fine");
    }

    #[test]
    fn timeouts_parse_as_grpc_writes_them() {
        assert_eq!(parse_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("100000000S"), None);
        assert_eq!(parse_timeout("5x"), None);
        assert_eq!(parse_timeout("S"), None);
    }
}
