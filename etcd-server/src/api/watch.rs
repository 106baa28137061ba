//! The Watch service: one bidirectional stream carries many watchers.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::GrpcResult;
use crate::apply;
use crate::config::GRPC_OVERHEAD_BYTES;
use crate::proto::etcdserverpb::{
    WatchRequest, WatchResponse, watch_request::RequestUnion, watch_server::Watch,
};
use crate::server::EtcdServer;
use crate::watch::Outgoing;

/// The Watch service of one member.
#[derive(Debug, Clone)]
pub struct WatchService {
    server: Arc<EtcdServer>,
}

impl WatchService {
    /// Serves Watch for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// Splits `resp` into fragments below `limit` bytes, as etcd's `sendFragments` does: only
/// when it is at least `limit` and holds two or more events; every part but the last has
/// `fragment` set.
pub fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut out = Vec::new();
    let mut template = resp.clone();
    template.events.clear();
    template.fragment = true;
    let mut cur = template.clone();
    for ev in resp.events {
        cur.events.push(ev);
        if cur.events.len() > 1 && cur.encoded_len() >= limit {
            let ev = cur.events.pop().expect("just pushed");
            out.push(std::mem::replace(&mut cur, template.clone()));
            cur.events.push(ev);
        }
    }
    cur.fragment = false;
    out.push(cur);
    out
}

async fn forward(
    server: Arc<EtcdServer>,
    mut rx: mpsc::Receiver<Outgoing>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    let limit = server.config().max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    while let Some(out) = rx.recv().await {
        let mut resp = out.resp;
        if out.prev_kv
            && !resp.events.is_empty()
            && let Ok(view) = server.store().read()
        {
            apply::fill_prev_kvs(&view, &mut resp.events);
        }
        if out.no_revision {
            // etcd leaves the revision out of a compaction notice.
            server.fill_header_no_revision(&mut resp.header);
        } else {
            server.fill_header(&mut resp.header);
        }
        let parts = if out.fragment {
            fragments(resp, limit)
        } else {
            vec![resp]
        };
        for part in parts {
            if tx.send(Ok(part)).await.is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    #[instrument(skip_all)]
    async fn watch(&self, req: Request<Streaming<WatchRequest>>) -> GrpcResult<Self::WatchStream> {
        let mut incoming = req.into_inner();
        let (mut stream, events) = self.server.hub().open_stream();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward(self.server.clone(), events, tx));
        tokio::spawn(async move {
            while let Some(Ok(msg)) = incoming.next().await {
                match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => stream.create(c).await,
                    Some(RequestUnion::CancelRequest(c)) => stream.cancel(c.watch_id).await,
                    Some(RequestUnion::ProgressRequest(_)) => stream.request_progress().await,
                    None => {}
                }
            }
            // Dropping `stream` removes its watchers and ends the response stream.
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::{Event, KeyValue};

    #[test]
    fn fragments_split_only_large_multi_event_replies() {
        let ev = |n: usize| Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: vec![b'x'; n],
                ..Default::default()
            }),
            ..Default::default()
        };
        let small = WatchResponse {
            events: vec![ev(10), ev(10)],
            ..Default::default()
        };
        assert_eq!(fragments(small, 1000).len(), 1);
        let single = WatchResponse {
            events: vec![ev(5000)],
            ..Default::default()
        };
        assert_eq!(fragments(single, 1000).len(), 1);
        let big = WatchResponse {
            watch_id: 3,
            events: (0..10).map(|_| ev(400)).collect(),
            ..Default::default()
        };
        let parts = fragments(big, 1000);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(
            parts[..parts.len() - 1]
                .iter()
                .all(|p| p.fragment && p.watch_id == 3)
        );
        assert!(!parts.last().expect("parts").fragment);
        assert!(
            parts
                .iter()
                .all(|p| p.encoded_len() < 1000 || p.events.len() == 1)
        );
    }
}
