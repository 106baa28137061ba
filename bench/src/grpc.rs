//! The load generator's own minimal gRPC client for unary KV calls, straight over HTTP/2 (h2):
//! one request is one HEADERS + DATA frame out and HEADERS + DATA + trailers back, with no
//! per-call task hop, router or middleware. `etcd-client` (tonic) spends about as much CPU
//! per put as the server under test does, and the client shares the machine's cores with the
//! server; the leaner the client, the more of the machine measures the server. Both servers
//! are always measured with the same client (`--client`).

use std::future::poll_fn;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Request, Uri};
use tonic::{Code, Status};

use crate::error::{Error, Result};

/// The gRPC message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;
/// HTTP/2 windows as large as the servers' (responses of a range never wait on credit).
const WINDOW: u32 = 1024 * 1024;

/// One HTTP/2 connection; clones share it (each clone is one client's handle).
#[derive(Clone)]
pub struct Channel {
    send: SendRequest<Bytes>,
    base: String,
}

impl Channel {
    /// Connects to `endpoint` (`host:port`, `http://host:port`, or `https://host:port` with
    /// `tls`); a task drives the connection until every handle is dropped.
    pub async fn connect(endpoint: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Self> {
        let fail = |reason: String| Error::ConnectH2 {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let (addr, secure) = match endpoint.strip_prefix("https://") {
            Some(rest) => (rest, true),
            None => (endpoint.strip_prefix("http://").unwrap_or(endpoint), false),
        };
        let addr = addr.trim_end_matches('/');
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let builder = {
            let mut b = h2::client::Builder::new();
            b.initial_window_size(WINDOW)
                .initial_connection_window_size(WINDOW);
            b
        };
        let send = if secure {
            let Some(config) = tls else {
                return Err(fail("an https endpoint needs --cacert".into()));
            };
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| fail(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake: {e}")))?;
            let (send, conn) = builder
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        } else {
            let (send, conn) = builder
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        };
        let scheme = if secure { "https" } else { "http" };
        Ok(Self {
            send,
            base: format!("{scheme}://{addr}"),
        })
    }

    /// The URI of a method, e.g. `/etcdserverpb.KV/Put` (built once per client, not per call).
    pub fn uri(&self, path: &str) -> Uri {
        format!("{}{path}", self.base)
            .parse()
            .expect("an endpoint and a method path form a URI")
    }

    /// One unary call: `req` to `uri`, the decoded response or the server's gRPC status.
    pub async fn unary<Req, Resp>(&mut self, uri: &Uri, req: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let len = req.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFIX + len);
        buf.put_u8(0);
        buf.put_u32(len as u32);
        req.encode(&mut buf)
            .map_err(|e| Status::internal(format!("failed to encode the request: {e}")))?;
        let mut head = Request::post(uri.clone())
            .body(())
            .map_err(|e| Status::internal(e.to_string()))?;
        let h = head.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (response, mut body_tx) = self.send.send_request(head, false).map_err(transport)?;
        body_tx.send_data(buf.freeze(), true).map_err(transport)?;
        let (parts, mut body) = response.await.map_err(transport)?.into_parts();
        if let Some(status) = status_of(&parts.headers) {
            return Err(status);
        }
        let mut msg = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            msg.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(status_of) {
            Some(status) => return Err(status),
            None if trailers.is_none() => {
                return Err(Status::internal("the response ended without trailers"));
            }
            None => {}
        }
        let mut msg = msg.freeze();
        if msg.len() < PREFIX || msg.get_u8() != 0 || msg.get_u32() as usize != msg.len() {
            return Err(Status::internal("a malformed response message"));
        }
        Resp::decode(msg).map_err(|e| Status::internal(format!("failed to decode: {e}")))
    }
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("transport error: {e}"))
}

/// The gRPC status in response headers or trailers: `None` when absent or OK.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    if code == 0 {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some(Status::new(Code::from_i32(code), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_from_headers() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(Headers, Option<(Code, &str)>)] = &[
            (&[], None),
            (&[("grpc-status", "0")], None),
            (
                &[
                    ("grpc-status", "9"),
                    (
                        "grpc-message",
                        "etcdserver:%20mvcc:%20database%20space%20exceeded",
                    ),
                ],
                Some((
                    Code::FailedPrecondition,
                    "etcdserver: mvcc: database space exceeded",
                )),
            ),
            (&[("grpc-status", "14")], Some((Code::Unavailable, ""))),
            (&[("grpc-status", "x")], None),
        ];
        for (headers, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *headers {
                h.insert(*k, HeaderValue::from_static(v));
            }
            let got = status_of(&h).map(|s| (s.code(), s.message().to_owned()));
            assert_eq!(got, want.map(|(c, m)| (c, m.to_owned())), "{headers:?}");
        }
    }
}
