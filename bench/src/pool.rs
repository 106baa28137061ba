//! Connections shared by clients, as in etcd's benchmark: `--conns` gRPC connections, and client
//! `i` of `--clients` uses connection `i mod conns`.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::error::{Error, Result};
use crate::options::Common;
use crate::tls::ClientCerts;

/// The connections of one run.
pub struct Pool {
    conns: Vec<Client>,
    endpoints: Vec<String>,
}

impl Pool {
    /// Opens `common.conns` connections: to the leader with `--target-leader`, otherwise spread
    /// round-robin over the endpoints.
    pub async fn connect(common: &Common) -> Result<Self> {
        let endpoints = target_endpoints(common).await?;
        let mut conns = Vec::with_capacity(common.conns);
        for i in 0..common.conns {
            let ep = &endpoints[i % endpoints.len()];
            conns.push(connect_one(ep, common.request_timeout, &common.tls).await?);
        }
        Ok(Self { conns, endpoints })
    }

    /// The connection client `i` uses.
    pub fn for_client(&self, i: usize) -> Client {
        self.conns[i % self.conns.len()].clone()
    }

    /// The endpoints the connections go to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

/// The endpoints a run's connections go to: the leader's alone with `--target-leader`,
/// otherwise all of them (connection `i` to endpoint `i mod n`).
pub async fn target_endpoints(common: &Common) -> Result<Vec<String>> {
    if common.target_leader {
        Ok(vec![find_leader(&common.endpoints, &common.tls).await?])
    } else {
        Ok(common.endpoints.clone())
    }
}

/// One connection (one HTTP/2 connection) to one endpoint, with TLS for `https://`.
pub async fn connect_one(
    endpoint: &str,
    request_timeout: Duration,
    tls: &ClientCerts,
) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(request_timeout);
    if let Some(t) = tls.etcd_client()? {
        opts = opts.with_tls(t);
    }
    Client::connect([endpoint], Some(opts))
        .await
        .map_err(|source| Error::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })
}

/// The endpoint whose member is the Raft leader, asked through Maintenance.Status.
pub async fn find_leader(endpoints: &[String], tls: &ClientCerts) -> Result<String> {
    for ep in endpoints {
        let Ok(mut c) = connect_one(ep, Duration::from_secs(5), tls).await else {
            continue;
        };
        let Ok(status) = c.status().await else {
            continue;
        };
        let member = status.header().map(|h| h.member_id());
        if status.leader() != 0 && member == Some(status.leader()) {
            return Ok(ep.clone());
        }
    }
    Err(Error::NoLeader {
        endpoints: endpoints.to_vec(),
    })
}
