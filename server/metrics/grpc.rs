//! The gRPC server metrics, under the names Prometheus users know from
//! go-grpc-prometheus: calls started and handled (by `grpc_code`), handling
//! time, and messages received and sent, streaming calls included.
//!
//! A tower layer around every service. A call's status is read where gRPC
//! puts it: in the response headers for a trailers-only answer (every
//! refusal), else in the trailers at the end of the response body, so the
//! body is wrapped; messages are counted from the length-prefixed frames
//! of both bodies. A call whose answer is dropped before its status (the
//! client went away) counts as `Canceled`. Paths the daemon does not serve
//! are counted under `unknown`, so a caller cannot invent label values.
//! Each method's series are registered once, so a call costs a few atomic
//! additions, and nothing at all when metrics are off.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use std::sync::OnceLock;

use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::{Counter, Histogram};
use prost::Message as _;
use tonic::body::Body;

/// The type of a gRPC method, as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcType {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl GrpcType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }
}

/// A served method's series, registered once when the layer is built
/// (after the recorder is installed; without one they are no-ops and cost
/// nothing per call). Its `handled` counter for each code is registered on
/// first use, so the page lists only codes that happened.
struct Series {
    labels: [(&'static str, String); 3],
    started: Counter,
    received: Counter,
    sent: Counter,
    seconds: Histogram,
    handled: [OnceLock<Counter>; 17],
}

impl Series {
    fn new(service: &str, method: &str, kind: &'static str) -> Self {
        let labels = [
            ("grpc_type", kind.to_string()),
            ("grpc_service", service.to_string()),
            ("grpc_method", method.to_string()),
        ];
        Self {
            started: metrics::counter!("grpc_server_started_total", &labels),
            received: metrics::counter!("grpc_server_msg_received_total", &labels),
            sent: metrics::counter!("grpc_server_msg_sent_total", &labels),
            seconds: metrics::histogram!("grpc_server_handling_seconds", &labels),
            handled: std::array::from_fn(|_| OnceLock::new()),
            labels,
        }
    }

    fn unknown() -> Self {
        Self::new("unknown", "unknown", "unknown")
    }

    fn handled(&self, code: i32) -> &Counter {
        let slot = usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2);
        self.handled[slot].get_or_init(|| {
            let mut labels = self.labels.to_vec();
            labels.push(("grpc_code", code_name(slot as i32).to_string()));
            metrics::counter!("grpc_server_handled_total", &labels)
        })
    }
}

/// Every served method by its path (`/baton.v1.Exchange/Upload`), read
/// from encoded file descriptor sets, with its series.
#[derive(Clone)]
pub struct Methods {
    served: Arc<HashMap<String, Arc<Series>>>,
    unknown: Arc<Series>,
}

impl Methods {
    /// The methods of every service in `sets` (encoded
    /// `FileDescriptorSet`s); a set that does not decode is an error.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    for m in service.method {
                        let method = m.name.unwrap_or_default();
                        let path = format!("/{full}/{method}");
                        let kind = match (
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => GrpcType::Unary,
                            (true, false) => GrpcType::ClientStream,
                            (false, true) => GrpcType::ServerStream,
                            (true, true) => GrpcType::BidiStream,
                        };
                        map.insert(path, Arc::new(Series::new(&full, &method, kind.as_str())));
                    }
                }
            }
        }
        Ok(Self {
            served: Arc::new(map),
            unknown: Arc::new(Series::unknown()),
        })
    }

    fn get(&self, path: &str) -> Arc<Series> {
        self.served.get(path).unwrap_or(&self.unknown).clone()
    }
}

/// gRPC status codes as go-grpc-prometheus spells them.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The status code in a `grpc-status` header or trailer, if any.
fn status_in(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse().unwrap_or(2))
}

/// One call being measured: counted as handled exactly once.
struct Call {
    series: Arc<Series>,
    start: Instant,
    handled: AtomicBool,
}

impl Call {
    fn finish(&self, code: i32) {
        if self.handled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.series.handled(code).increment(1);
        self.series
            .seconds
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Neither a status header nor trailers reached the client.
        self.finish(tonic::Code::Cancelled as i32);
    }
}

/// Finds the ends of gRPC messages in a body's bytes: each is a 5-byte
/// prefix (flag, big-endian length) and that many bytes.
#[derive(Debug, Default)]
pub struct Frames {
    prefix: [u8; 5],
    have: usize,
    remaining: u64,
    in_message: bool,
}

impl Frames {
    /// Feeds the next bytes; returns how many messages they completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut done = 0;
        loop {
            if self.in_message {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                if self.remaining > 0 {
                    return done;
                }
                self.in_message = false;
                done += 1;
            }
            if bytes.is_empty() {
                return done;
            }
            let take = (5 - self.have).min(bytes.len());
            self.prefix[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have < 5 {
                return done;
            }
            self.have = 0;
            let [_, a, b, c, d] = self.prefix;
            self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
            self.in_message = true;
        }
    }
}

/// Wraps every service in [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Methods,
}

impl GrpcMetricsLayer {
    /// A layer labelling calls by `methods`.
    pub fn new(methods: Methods) -> Self {
        Self { methods }
    }
}

impl<Inner> tower_layer::Layer<Inner> for GrpcMetricsLayer {
    type Service = GrpcMetrics<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        GrpcMetrics {
            methods: self.methods.clone(),
            inner,
        }
    }
}

/// A service whose calls are measured.
#[derive(Clone)]
pub struct GrpcMetrics<Inner> {
    methods: Methods,
    inner: Inner,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<Inner, B, RB> tower_service::Service<http::Request<B>> for GrpcMetrics<Inner>
where
    Inner: tower_service::Service<http::Request<Body>, Response = http::Response<RB>>,
    Inner::Future: Send + 'static,
    B: HttpBody<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: HttpBody<Data = bytes::Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Inner::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let series = self.methods.get(request.uri().path());
        series.started.increment(1);
        let call = Arc::new(Call {
            series,
            start: Instant::now(),
            handled: AtomicBool::new(false),
        });
        let request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                call: call.clone(),
                frames: Frames::default(),
                sent: false,
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|body| {
                Body::new(Counted {
                    inner: body,
                    call,
                    frames: Frames::default(),
                    sent: true,
                })
            }))
        })
    }
}

/// A body whose messages are counted as received, or as `sent`; a
/// response body also finishes the call with the status in its trailers.
struct Counted<B> {
    inner: B,
    call: Arc<Call>,
    frames: Frames,
    sent: bool,
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = this.frames.feed(data);
                    if n > 0 {
                        let series = &this.call.series;
                        let counter = if this.sent {
                            &series.sent
                        } else {
                            &series.received
                        };
                        counter.increment(n);
                    }
                } else if this.sent
                    && let Some(t) = frame.trailers_ref()
                {
                    this.call.finish(status_in(t).unwrap_or(2));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn frames_are_counted_whatever_the_chunking() {
        let bytes = framed(&[b"hello", b"", &[7u8; 300], b"x"]);
        for split in [1, 2, 3, 5, 6, 7, 64, bytes.len()] {
            let mut f = Frames::default();
            let n: u64 = bytes.chunks(split).map(|c| f.feed(c)).sum();
            assert_eq!(n, 4, "chunks of {split}");
        }
        let mut f = Frames::default();
        assert_eq!(f.feed(&bytes[..bytes.len() - 1]), 3);
        assert_eq!(f.feed(&bytes[bytes.len() - 1..]), 1);
    }

    #[test]
    fn methods_and_types_come_from_the_descriptors() {
        let m = Methods::from_descriptor_sets(&[baton::api::FILE_DESCRIPTOR_SET])
            .expect("the built-in descriptor set decodes");
        let kind = |path: &str| m.get(path).labels[0].1.clone();
        let upload = m.get("/baton.v1.Exchange/Upload");
        assert_eq!(upload.labels[1].1, "baton.v1.Exchange");
        assert_eq!(upload.labels[2].1, "Upload");
        assert_eq!(kind("/baton.v1.Exchange/Upload"), "client_stream");
        assert_eq!(kind("/baton.v1.Exchange/Download"), "server_stream");
        assert_eq!(kind("/baton.v1.Exchange/Acknowledge"), "unary");
        assert_eq!(kind("/made.up/Path"), "unknown");
        assert_eq!(code_name(7), "PermissionDenied");
        assert_eq!(code_name(0), "OK");
    }
}
