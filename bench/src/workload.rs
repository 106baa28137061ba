//! The request/response workloads (`put`, `range`, `txn-put`, `lease-keepalive`): each builds
//! one [`ClientOp`] state per client and hands them to the shared driver.

use etcd_api::proto::etcdserverpb as pb;
use etcd_client::{
    GetOptions, KvClient, LeaseClient, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp,
};
use http::Uri;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::grpc::Channel;
use crate::options::{
    ClientLib, Common, Consistency, LeaseOptions, PutOptions, RangeOptions, TxnPutOptions, Workload,
};
use crate::pool::{Pool, target_endpoints};
use crate::report::Report;
use crate::runner::{ClientOp, drive};

/// Runs `workload` against the endpoints in `common` and returns its report.
pub async fn run(common: &Common, workload: &Workload) -> Result<Report> {
    common.validate()?;
    let description = workload.describe(common);
    match workload {
        Workload::Watch(o) => crate::watch::run(common, o, description).await,
        Workload::Connect(o) => {
            let endpoints = target_endpoints(common).await?;
            let tls = common.tls.rustls()?;
            let states = (0..common.clients)
                .map(|i| ConnectClient {
                    endpoint: endpoints[i % endpoints.len()].clone(),
                    tls: tls.clone(),
                    key: o.key.clone().into_bytes(),
                    serializable: o.consistency == Consistency::Serializable,
                })
                .collect();
            drive(common, "connect", description, states).await
        }
        Workload::Put(o) => {
            let kvs = KvPool::connect(common).await?;
            let states = (0..common.clients)
                .map(|i| PutClient::new(kvs.for_client(i), i, o))
                .collect();
            drive(common, "put", description, states).await
        }
        Workload::Range(o) => {
            let kvs = KvPool::connect(common).await?;
            let states = (0..common.clients)
                .map(|i| RangeClient::new(kvs.for_client(i), o))
                .collect();
            drive(common, "range", description, states).await
        }
        Workload::TxnPut(o) => {
            if o.key_space_size < o.txn_ops as u64 || o.txn_ops == 0 {
                return Err(Error::InvalidOptions(
                    "txn-put needs 1 ≤ --txn-ops ≤ --key-space-size".into(),
                ));
            }
            let kvs = KvPool::connect(common).await?;
            let states = (0..common.clients)
                .map(|i| TxnClient::new(kvs.for_client(i), i, o))
                .collect();
            drive(common, "txn-put", description, states).await
        }
        _ => {
            let pool = Pool::connect(common).await?;
            match workload {
                Workload::LeaseKeepalive(o) => {
                    let states = futures::future::try_join_all(
                        (0..common.clients).map(|i| LeaseClientOp::start(&pool, i, o)),
                    )
                    .await?;
                    drive(common, "lease-keepalive", description, states).await
                }
                _ => unreachable!("handled above"),
            }
        }
    }
}

/// The key for number `n`: zero-padded decimal, `size` bytes unless `n` needs more digits.
pub fn key_for(n: u64, size: usize) -> Vec<u8> {
    format!("{n:0size$}").into_bytes()
}

/// A value of `size` random printable bytes (random so that no layer can compress it).
pub fn random_value(size: usize, rng: &mut impl Rng) -> Vec<u8> {
    (0..size).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

/// The connections of a unary workload, in the client library `--client` chose.
enum KvPool {
    H2(Vec<Channel>),
    EtcdClient(Pool),
}

impl KvPool {
    async fn connect(common: &Common) -> Result<Self> {
        match common.client {
            ClientLib::EtcdClient => Ok(Self::EtcdClient(Pool::connect(common).await?)),
            ClientLib::H2 => {
                let endpoints = target_endpoints(common).await?;
                let tls = common.tls.rustls()?;
                let mut conns = Vec::with_capacity(common.conns);
                for i in 0..common.conns {
                    let ep = &endpoints[i % endpoints.len()];
                    conns.push(Channel::connect(ep, tls.as_ref()).await?);
                }
                Ok(Self::H2(conns))
            }
        }
    }

    /// Client `i`'s handle on connection `i mod conns`.
    fn for_client(&self, i: usize) -> Kv {
        match self {
            Self::H2(conns) => {
                let ch = conns[i % conns.len()].clone();
                Kv::H2 {
                    put: ch.uri("/etcdserverpb.KV/Put"),
                    range: ch.uri("/etcdserverpb.KV/Range"),
                    txn: ch.uri("/etcdserverpb.KV/Txn"),
                    ch,
                }
            }
            Self::EtcdClient(pool) => Kv::EtcdClient(pool.for_client(i).kv_client()),
        }
    }
}

/// One client's KV handle.
enum Kv {
    H2 {
        ch: Channel,
        put: Uri,
        range: Uri,
        txn: Uri,
    },
    EtcdClient(KvClient),
}

impl Kv {
    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), etcd_client::Error> {
        match self {
            Self::H2 { ch, put, .. } => {
                let req = pb::PutRequest {
                    key,
                    value,
                    ..Default::default()
                };
                h2_call::<_, pb::PutResponse>(ch, put, &req).await
            }
            Self::EtcdClient(kv) => kv.put(key, value, None).await.map(drop),
        }
    }

    async fn range(
        &mut self,
        key: &[u8],
        prefix: bool,
        serializable: bool,
    ) -> Result<(), etcd_client::Error> {
        match self {
            Self::H2 { ch, range, .. } => {
                let req = pb::RangeRequest {
                    key: key.to_vec(),
                    range_end: if prefix {
                        etcd_api::keys::prefix_end(key)
                    } else {
                        Vec::new()
                    },
                    serializable,
                    ..Default::default()
                };
                h2_call::<_, pb::RangeResponse>(ch, range, &req).await
            }
            Self::EtcdClient(kv) => {
                let mut opts = GetOptions::new();
                if prefix {
                    opts = opts.with_prefix();
                }
                if serializable {
                    opts = opts.with_serializable();
                }
                kv.get(key.to_vec(), Some(opts)).await.map(drop)
            }
        }
    }

    async fn txn_puts(&mut self, puts: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), etcd_client::Error> {
        match self {
            Self::H2 { ch, txn, .. } => {
                let success = puts
                    .into_iter()
                    .map(|(key, value)| pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key,
                            value,
                            ..Default::default()
                        })),
                    })
                    .collect();
                let req = pb::TxnRequest {
                    success,
                    ..Default::default()
                };
                h2_call::<_, pb::TxnResponse>(ch, txn, &req).await
            }
            Self::EtcdClient(kv) => {
                let ops: Vec<TxnOp> = puts
                    .into_iter()
                    .map(|(k, v)| TxnOp::put(k, v, None))
                    .collect();
                kv.txn(Txn::new().and_then(ops)).await.map(drop)
            }
        }
    }
}

/// One call with the bench's own client, its error as the report counts it.
async fn h2_call<Req: prost::Message, Resp: prost::Message + Default>(
    ch: &mut Channel,
    uri: &Uri,
    req: &Req,
) -> Result<(), etcd_client::Error> {
    ch.unary::<Req, Resp>(uri, req)
        .await
        .map(drop)
        .map_err(etcd_client::Error::GRpcStatus)
}

struct PutClient {
    kv: Kv,
    rng: StdRng,
    value: Vec<u8>,
    opts: PutOptions,
}

impl PutClient {
    fn new(kv: Kv, i: usize, opts: &PutOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let value = random_value(opts.val_size, &mut rng);
        Self {
            kv,
            rng,
            value,
            opts: opts.clone(),
        }
    }
}

impl ClientOp for PutClient {
    async fn call(&mut self, index: u64) -> Result<(), etcd_client::Error> {
        let space = self.opts.key_space_size.max(1);
        let n = if self.opts.sequential_keys {
            index % space
        } else {
            self.rng.random_range(0..space)
        };
        let key = key_for(n, self.opts.key_size);
        self.kv.put(key, self.value.clone()).await
    }
}

struct RangeClient {
    kv: Kv,
    key: Vec<u8>,
    prefix: bool,
    serializable: bool,
}

impl RangeClient {
    fn new(kv: Kv, o: &RangeOptions) -> Self {
        Self {
            kv,
            key: o.key.clone().into_bytes(),
            prefix: o.prefix,
            serializable: o.consistency == Consistency::Serializable,
        }
    }
}

impl ClientOp for RangeClient {
    async fn call(&mut self, _index: u64) -> Result<(), etcd_client::Error> {
        self.kv
            .range(&self.key, self.prefix, self.serializable)
            .await
    }
}

struct TxnClient {
    kv: Kv,
    value: Vec<u8>,
    opts: TxnPutOptions,
}

impl TxnClient {
    fn new(kv: Kv, i: usize, opts: &TxnPutOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let value = random_value(opts.val_size, &mut rng);
        Self {
            kv,
            value,
            opts: opts.clone(),
        }
    }
}

impl ClientOp for TxnClient {
    async fn call(&mut self, index: u64) -> Result<(), etcd_client::Error> {
        let ops = self.opts.txn_ops as u64;
        // Consecutive numbers modulo a key space of at least `ops` keys are distinct, so a
        // transaction never names one key twice (etcd would reject it).
        let puts = (0..ops)
            .map(|j| {
                let n = (index * ops + j) % self.opts.key_space_size;
                (key_for(n, self.opts.key_size), self.value.clone())
            })
            .collect();
        self.kv.txn_puts(puts).await
    }
}

struct LeaseClientOp {
    lease: LeaseClient,
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl LeaseClientOp {
    async fn start(pool: &Pool, i: usize, o: &LeaseOptions) -> Result<Self> {
        let mut lease = pool.for_client(i).lease_client();
        let granted = lease
            .grant(o.ttl, None)
            .await
            .map_err(|source| Error::Request {
                action: "grant a lease".into(),
                source,
            })?;
        let id = granted.id();
        let (keeper, stream) = lease
            .keep_alive(id)
            .await
            .map_err(|source| Error::Request {
                action: "open a keep-alive stream".into(),
                source,
            })?;
        Ok(Self {
            lease,
            id,
            keeper,
            stream,
        })
    }
}

impl ClientOp for LeaseClientOp {
    async fn call(&mut self, _index: u64) -> Result<(), etcd_client::Error> {
        self.keeper.keep_alive().await?;
        match self.stream.message().await? {
            Some(r) if r.ttl() > 0 => Ok(()),
            Some(_) => Err(etcd_client::Error::LeaseKeepAliveError(
                "lease not found".into(),
            )),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "stream closed".into(),
            )),
        }
    }

    async fn finish(mut self) {
        // Best effort: an unrevoked lease just expires after its TTL.
        let _ = self.lease.revoke(self.id).await;
    }
}

/// `connect`: one new connection per request, one read over it.
struct ConnectClient {
    endpoint: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    key: Vec<u8>,
    serializable: bool,
}

impl ClientOp for ConnectClient {
    async fn call(&mut self, _index: u64) -> Result<(), etcd_client::Error> {
        let mut ch = Channel::connect(&self.endpoint, self.tls.as_ref())
            .await
            .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
        let req = pb::RangeRequest {
            key: self.key.clone(),
            serializable: self.serializable,
            ..Default::default()
        };
        let uri = ch.uri("/etcdserverpb.KV/Range");
        h2_call::<_, pb::RangeResponse>(&mut ch, &uri, &req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_decimal() {
        assert_eq!(key_for(42, 8), b"00000042");
        assert_eq!(key_for(123_456_789, 4), b"123456789");
    }

    #[test]
    fn values_have_the_requested_size() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(random_value(256, &mut rng).len(), 256);
        assert!(random_value(0, &mut rng).is_empty());
    }
}
