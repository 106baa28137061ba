//! Fault injection: a TCP proxy in front of every member's peer port that can cut links between
//! members (network partitions), a `ProxiedCluster` built on it, and partition tests (an
//! isolated leader gives no false successes; a returning member does not disrupt the leader).
#![allow(dead_code)]

mod flapping_links;
mod partitions;
mod proxied_cluster;
mod proxy;

// Sections share their helpers.
#[allow(unused_imports)]
use flapping_links::*;
#[allow(unused_imports)]
use partitions::*;
#[allow(unused_imports)]
pub use proxied_cluster::*;
#[allow(unused_imports)]
pub use proxy::*;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Kind, Proc, Spec};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Faster Raft timing for fault tests.
pub const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

/// The loopback address member `i` listens on (peers and clients): `127.0.0.{10+i}`.
pub fn member_ip(i: usize) -> Ipv4Addr {
    assert!(i < 100, "member index out of range");
    Ipv4Addr::new(127, 0, 0, 10 + i as u8)
}

/// Which member a connection comes from, by its source address.
fn member_of(ip: IpAddr, n: usize) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 127 && o[1] == 0 && o[2] == 0 && o[3] >= 10 && usize::from(o[3] - 10) < n)
                .then(|| usize::from(o[3] - 10))
        }
        IpAddr::V6(_) => None,
    }
}

pub use crate::harness::free_port_on;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
