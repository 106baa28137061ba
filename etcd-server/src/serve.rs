//! Client connections: HTTP/1.1 and HTTP/2 on one port. Unary KV calls are answered inside the
//! connection's own task; every other request goes through the tonic/axum router.
//!
//! Why not hand every request to the generic stack: under a put load from many clients the
//! server's CPU went mostly to that stack (a task spawned per request, the request and its
//! future moved and boxed through hyper, tonic's router, axum's router and middleware, then
//! tonic's codec) and to `writev`s of one response each. Here a KV call is read, decoded,
//! handled and answered by the task that owns the HTTP/2 connection, so every response that
//! is ready when the task runs leaves in one write, and a request costs one boxed future.
//! The direct path keeps the router's contract: the same handlers, etcd's learner rule, the
//! `grpc_server_*` metrics, grpc-go's error for oversized messages, and `grpc-timeout`.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use prometheus::{Histogram, IntCounter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Code, Status};

use crate::api::kv::KvService;
use crate::authority::AuthorityFix;
use crate::metrics;
use crate::server::EtcdServer;

/// HTTP/2 settings, as hyper (under tonic) used them before: 1 MiB windows, 16 KiB frames,
/// 400 KiB of send buffer per stream, 16 KiB of headers; streams are not limited (etcd's
/// `--max-concurrent-streams` defaults to 2^32 − 1).
const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_SEND_BUF: usize = 400 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Bytes of a gRPC message's prefix: a compression flag and a big-endian length.
const GRPC_PREFIX: usize = 5;

type Router = hyper_util::service::TowerToHyperService<axum::Router>;
type Handler = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct ClientService {
    router: Router,
    kv: KvService,
    server: Arc<EtcdServer>,
    max_message: usize,
}

impl ClientService {
    /// Serves `router` (all gRPC services and the HTTP endpoints, behind their middleware),
    /// with KV calls taken directly; requests above `max_message` bytes are refused.
    pub fn new(router: axum::Router, server: Arc<EtcdServer>, max_message: usize) -> Self {
        Self {
            router: hyper_util::service::TowerToHyperService::new(router),
            kv: KvService::new(server.clone()),
            server,
            max_message,
        }
    }
}

/// Accepts connections on `listener` until `stop` turns true; connections still open then
/// are asked to finish (HTTP/2 GOAWAY) and are closed when this future is dropped.
pub async fn serve(
    listener: TcpListener,
    service: ClientService,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<crate::tls::ReloadingTls>>,
    schemes: crate::Schemes,
) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    let conn_stop = stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let (service, stop, tls) = (service.clone(), conn_stop.clone(), tls.clone());
                    // The handshake runs on the connection's task, with the material in use
                    // right now (a reload affects only later connections).
                    conns.spawn(async move {
                        let tls = match (tls, schemes) {
                            (Some(tls), crate::Schemes::Both) => {
                                let opens = crate::tls::opens_with_handshake(
                                    &tcp,
                                    crate::tls::HANDSHAKE_TIMEOUT,
                                );
                                match opens.await {
                                    Some(true) => Some(tls),
                                    Some(false) => None,
                                    None => return,
                                }
                            }
                            (tls, _) => tls,
                        };
                        let Some(tls) = tls else {
                            return connection(tcp, service, stop).await;
                        };
                        let shake = tokio::time::timeout(
                            crate::tls::HANDSHAKE_TIMEOUT,
                            tls.acceptor().accept(tcp),
                        );
                        match shake.await {
                            Ok(Ok(stream)) => connection(stream, service, stop).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a client connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// One client connection: HTTP/2 when it opens with the HTTP/2 preface, HTTP/1.1 otherwise.
async fn connection<T>(mut tcp: T, service: ClientService, stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = Vec::with_capacity(3);
    while head.len() < 3 {
        let mut b = [0u8; 3];
        match tcp.read(&mut b[..3 - head.len()]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    let io = Prefixed {
        head: Bytes::from(head),
        inner: tcp,
    };
    if io.head.as_ref() == b"PRI" {
        if let Err(e) = http2(AuthorityFix::new(io), service, stop).await {
            tracing::debug!(error = %e, "client HTTP/2 connection ended");
        }
    } else {
        http1(io, service.router, stop).await;
    }
}

async fn http1<T>(io: T, router: Router, mut stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), router);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn http2<T>(
    io: T,
    service: ClientService,
    mut stop: watch::Receiver<bool>,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUF)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io)
        .await?;
    let mut handlers: FuturesUnordered<Handler> = FuturesUnordered::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        // Run every handler that can make progress before polling the connection, so that
        // all responses they produce go out in the connection's next write.
        let next = poll_fn(|cx| {
            while let Poll::Ready(Some(())) = handlers.poll_next_unpin(cx) {}
            if !stopping && stopped.as_mut().poll(cx).is_ready() {
                stopping = true;
                conn.graceful_shutdown();
            }
            conn.poll_accept(cx)
        })
        .await;
        match next {
            Some(Ok((req, respond))) => {
                if let Some(h) = direct(&service, req, respond) {
                    handlers.push(h);
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// The KV methods answered directly, with their metric handles (the metrics are global).
static METHODS: LazyLock<Methods> = LazyLock::new(Methods::new);

struct Methods {
    range: Method,
    put: Method,
    delete_range: Method,
    txn: Method,
    compact: Method,
}

impl Methods {
    fn new() -> Self {
        Self {
            range: Method::new("Range", true),
            put: Method::new("Put", false),
            delete_range: Method::new("DeleteRange", false),
            txn: Method::new("Txn", false),
            compact: Method::new("Compact", false),
        }
    }
}

/// One direct method: its metric handles (resolved once, not per request) and whether a
/// learner serves it.
struct Method {
    name: &'static str,
    learner_serves: bool,
    started: IntCounter,
    handled_ok: IntCounter,
    seconds: Histogram,
}

const KV_SERVICE: &str = "etcdserverpb.KV";

impl Method {
    fn new(name: &'static str, learner_serves: bool) -> Self {
        Self {
            name,
            learner_serves,
            started: metrics::GRPC_STARTED.with_label_values(&["unary", KV_SERVICE, name]),
            handled_ok: metrics::GRPC_HANDLED.with_label_values(&["unary", KV_SERVICE, name, "OK"]),
            seconds: metrics::GRPC_SECONDS.with_label_values(&["unary", KV_SERVICE, name]),
        }
    }

    fn handled(&self, code: Code, start: Instant) {
        if code == Code::Ok {
            self.handled_ok.inc();
        } else {
            metrics::GRPC_HANDLED
                .with_label_values(&["unary", KV_SERVICE, self.name, metrics::code_name(code)])
                .inc();
        }
        self.seconds.observe(start.elapsed().as_secs_f64());
    }
}

/// Takes a KV call directly and returns its handler, or hands any other request to the
/// router on a task of its own (streams may live long) and returns `None`.
fn direct(
    service: &ClientService,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> Option<Handler> {
    let direct = req.method() == http::Method::POST && is_plain_grpc(req.headers());
    let m = &*METHODS;
    let handler = match req.uri().path().strip_prefix("/etcdserverpb.KV/") {
        Some("Range") if direct => call(service, &m.range, req, respond, |kv, r| async move {
            kv.handle_range(r).await
        }),
        Some("Put") if direct => call(service, &m.put, req, respond, |kv, r| async move {
            kv.handle_put(r).await
        }),
        Some("DeleteRange") if direct => {
            call(service, &m.delete_range, req, respond, |kv, r| async move {
                kv.handle_delete_range(r).await
            })
        }
        Some("Txn") if direct => call(service, &m.txn, req, respond, |kv, r| async move {
            kv.handle_txn(r).await
        }),
        Some("Compact") if direct => call(service, &m.compact, req, respond, |kv, r| async move {
            kv.handle_compact(r).await
        }),
        _ => {
            tokio::spawn(routed(service.router.clone(), req, respond));
            return None;
        }
    };
    Some(handler)
}

/// The handler of one direct call of `method`, answered by `f`.
fn call<Req, Resp, F, Fut>(
    service: &ClientService,
    method: &'static Method,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    f: F,
) -> Handler
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: FnOnce(KvService, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    // Only methods a learner does not serve need to ask (the check takes a lock).
    let refuse = !method.learner_serves && service.server.is_learner();
    let kv = service.kv.clone();
    let max = service.max_message;
    Box::pin(unary(req, respond, method, max, refuse, move |r| f(kv, r)))
}

/// A gRPC request this path can read: `application/grpc[+proto]`, not compressed.
fn is_plain_grpc(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    let grpc = matches!(
        content_type,
        Some(b"application/grpc") | Some(b"application/grpc+proto")
    );
    let identity = headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity");
    grpc && identity
}

/// One unary call: read and decode the request, run `call`, write the response and trailers
/// (or a trailers-only error), and count it.
async fn unary<Req, Resp, F, Fut>(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    method: &'static Method,
    max: usize,
    refuse: bool,
    call: F,
) where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let start = Instant::now();
    method.started.inc();
    let deadline = grpc_timeout(req.headers());
    let body = req.into_body();
    let work = async move {
        if refuse {
            return Err(crate::error::EtcdError::NotSupportedForLearner.into());
        }
        let msg = read_message::<Req>(body, max).await?;
        call(msg).await
    };
    let work = async move {
        match deadline {
            None => work.await,
            // What tonic's server answered for an expired `grpc-timeout`.
            Some(d) => tokio::time::timeout(d, work)
                .await
                .unwrap_or_else(|_| Err(Status::cancelled("Timeout expired"))),
        }
    };
    tokio::pin!(work);
    // A client that resets the stream (it gave up) drops the call, as the router would.
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(r) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let code = match outcome {
        None => Code::Cancelled,
        Some(Ok(resp)) => {
            write_ok(respond, &resp);
            Code::Ok
        }
        Some(Err(status)) => {
            let code = status.code();
            let _ = respond.send_response(status.into_http::<()>(), true);
            code
        }
    };
    method.handled(code, start);
}

fn write_ok<M: prost::Message>(mut respond: SendResponse<Bytes>, resp: &M) {
    let len = resp.encoded_len();
    let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    if resp.encode(&mut buf).is_err() {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    let mut head = Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let Ok(mut stream) = respond.send_response(head, false) else {
        return;
    };
    if stream.send_data(buf.freeze(), false).is_err() {
        return;
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// Reads the one message of a unary request, refusing one above `max` bytes the way grpc-go
/// does (clients match on its text).
async fn read_message<M: prost::Message + Default>(
    mut body: RecvStream,
    max: usize,
) -> Result<M, Status> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Status::cancelled(format!("failed to read request: {e}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() >= GRPC_PREFIX {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > max {
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {max})"
                )));
            }
            if buf.len() > GRPC_PREFIX + len {
                return Err(Status::internal(
                    "grpc: more than one message in a unary request",
                ));
            }
        }
    }
    if buf.len() < GRPC_PREFIX {
        return Err(Status::internal(
            "grpc: the request ended before its message",
        ));
    }
    let mut all = buf.freeze();
    let compressed = all.get_u8();
    let len = all.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal(
            "grpc: compressed message but no grpc-encoding was specified",
        ));
    }
    if all.len() != len {
        return Err(Status::internal(
            "grpc: the request ended before its message",
        ));
    }
    M::decode(all).map_err(|e| Status::internal(format!("grpc: error unmarshalling request: {e}")))
}

/// The `grpc-timeout` header (digits and a unit, gRPC over HTTP/2), if present and valid.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Any other request: the router (gRPC services behind their middleware, HTTP endpoints),
/// its response streamed back with HTTP/2 flow control respected.
async fn routed(router: Router, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    use hyper::service::Service;
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(
        parts,
        axum::body::Body::new(RequestBody {
            recv: body,
            data_done: false,
        }),
    );
    let resp = match router.call(req).await {
        Ok(resp) => resp,
        Err(infallible) => match infallible {},
    };
    let (parts, mut body) = resp.into_parts();
    let end = body.is_end_stream();
    let Ok(mut stream) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        pipe(&mut body, &mut stream).await;
    }
}

/// Copies a response body into an HTTP/2 stream, waiting for send capacity before taking
/// each frame (a slow watcher must not make the server buffer without bound). Returns when
/// the body ends or the client resets the stream (which drops the body: a watch ends).
async fn pipe(body: &mut axum::body::Body, stream: &mut SendStream<Bytes>) {
    loop {
        let frame = poll_fn(|cx| {
            stream.reserve_capacity(1);
            if stream.capacity() == 0 {
                loop {
                    match ready!(stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(_)) | None => return Poll::Ready(None),
                    }
                }
            } else if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut *body).poll_frame(cx).map(Some)
        })
        .await;
        let Some(frame) = frame else {
            return;
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if stream.send_data(data, end).is_err() || end {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

/// An HTTP/2 request body as an `http_body::Body`, giving back flow-control credit as the
/// router consumes it.
struct RequestBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A connection whose first bytes were already read (to tell HTTP/2 from HTTP/1.1): reads
/// return them first.
struct Prefixed<T> {
    head: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.head.is_empty() {
            let n = this.head.len().min(buf.remaining());
            buf.put_slice(&this.head.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_like_the_spec_says() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5S", Some(Duration::from_secs(5))),
            ("100m", Some(Duration::from_millis(100))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("S", None),
            ("5x", None),
            ("123456789S", None),
            ("-1S", None),
        ];
        for (v, want) in cases {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(grpc_timeout(&h), *want, "{v}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn only_uncompressed_grpc_takes_the_direct_path() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("content-type", "application/grpc")], true),
            (&[("content-type", "application/grpc+proto")], true),
            (
                &[
                    ("content-type", "application/grpc"),
                    ("grpc-encoding", "identity"),
                ],
                true,
            ),
            (
                &[
                    ("content-type", "application/grpc"),
                    ("grpc-encoding", "gzip"),
                ],
                false,
            ),
            (&[("content-type", "application/grpc-web")], false),
            (&[("content-type", "application/json")], false),
            (&[], false),
        ];
        for (headers, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *headers {
                h.insert(*k, HeaderValue::from_static(v));
            }
            assert_eq!(is_plain_grpc(&h), *want, "{headers:?}");
        }
    }
}
