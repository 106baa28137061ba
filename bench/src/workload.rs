//! The request/response workloads (`put`, `range`, `txn-put`, `lease-keepalive`): each builds
//! one [`ClientOp`] state per client and hands them to the shared driver.

use etcd_client::{
    GetOptions, KvClient, LeaseClient, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::options::{
    Common, Consistency, LeaseOptions, PutOptions, RangeOptions, TxnPutOptions, Workload,
};
use crate::pool::Pool;
use crate::report::Report;
use crate::runner::{ClientOp, drive};

/// Runs `workload` against the endpoints in `common` and returns its report.
pub async fn run(common: &Common, workload: &Workload) -> Result<Report> {
    common.validate()?;
    let description = workload.describe(common);
    match workload {
        Workload::Watch(o) => crate::watch::run(common, o, description).await,
        _ => {
            let pool = Pool::connect(common).await?;
            match workload {
                Workload::Put(o) => {
                    let states = (0..common.clients)
                        .map(|i| PutClient::new(&pool, i, o))
                        .collect();
                    drive(common, "put", description, states).await
                }
                Workload::Range(o) => {
                    let states = (0..common.clients)
                        .map(|i| RangeClient::new(&pool, i, o))
                        .collect();
                    drive(common, "range", description, states).await
                }
                Workload::TxnPut(o) => {
                    if o.key_space_size < o.txn_ops as u64 || o.txn_ops == 0 {
                        return Err(Error::InvalidOptions(
                            "txn-put needs 1 ≤ --txn-ops ≤ --key-space-size".into(),
                        ));
                    }
                    let states = (0..common.clients)
                        .map(|i| TxnClient::new(&pool, i, o))
                        .collect();
                    drive(common, "txn-put", description, states).await
                }
                Workload::LeaseKeepalive(o) => {
                    let states = futures::future::try_join_all(
                        (0..common.clients).map(|i| LeaseClientOp::start(&pool, i, o)),
                    )
                    .await?;
                    drive(common, "lease-keepalive", description, states).await
                }
                Workload::Watch(_) => unreachable!("handled above"),
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

struct PutClient {
    kv: KvClient,
    rng: StdRng,
    value: Vec<u8>,
    opts: PutOptions,
}

impl PutClient {
    fn new(pool: &Pool, i: usize, opts: &PutOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let value = random_value(opts.val_size, &mut rng);
        Self {
            kv: pool.for_client(i).kv_client(),
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
        self.kv.put(key, self.value.clone(), None).await.map(drop)
    }
}

struct RangeClient {
    kv: KvClient,
    key: Vec<u8>,
    opts: GetOptions,
}

impl RangeClient {
    fn new(pool: &Pool, i: usize, o: &RangeOptions) -> Self {
        let mut opts = GetOptions::new();
        if o.prefix {
            opts = opts.with_prefix();
        }
        if o.consistency == Consistency::Serializable {
            opts = opts.with_serializable();
        }
        Self {
            kv: pool.for_client(i).kv_client(),
            key: o.key.clone().into_bytes(),
            opts,
        }
    }
}

impl ClientOp for RangeClient {
    async fn call(&mut self, _index: u64) -> Result<(), etcd_client::Error> {
        self.kv
            .get(self.key.clone(), Some(self.opts.clone()))
            .await
            .map(drop)
    }
}

struct TxnClient {
    kv: KvClient,
    value: Vec<u8>,
    opts: TxnPutOptions,
}

impl TxnClient {
    fn new(pool: &Pool, i: usize, opts: &TxnPutOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let value = random_value(opts.val_size, &mut rng);
        Self {
            kv: pool.for_client(i).kv_client(),
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
        let puts: Vec<TxnOp> = (0..ops)
            .map(|j| {
                let n = (index * ops + j) % self.opts.key_space_size;
                TxnOp::put(key_for(n, self.opts.key_size), self.value.clone(), None)
            })
            .collect();
        self.kv.txn(Txn::new().and_then(puts)).await.map(drop)
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
