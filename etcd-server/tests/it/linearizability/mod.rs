//! Linearizability: a Wing & Gong style checker (with Lowe's memoization) for a per-key register
//! with put / get / compare-and-set, its unit tests, and a chaos test that records a concurrent
//! client history against a 3-member cluster while killing leaders and partitioning members.
#![allow(dead_code)]

mod chaos;
mod checker;
mod checker_tests;

// Sections share their helpers.
#[allow(unused_imports)]
use chaos::*;
#[allow(unused_imports)]
use checker::*;
#[allow(unused_imports)]
use checker_tests::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::{FAST, ProxiedCluster, connect};

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// What a client asked for, on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Put(value).
    Put(String),
    /// Linearizable get.
    Get,
    /// Txn: if value == old then put new.
    Cas {
        /// Expected value.
        old: String,
        /// Value to write.
        new: String,
    },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// The put was acknowledged.
    Put,
    /// The get returned this value (`None`: key absent).
    Get(Option<String>),
    /// The txn's `succeeded`.
    Cas(bool),
    /// Error or timeout: a write may have taken effect at any time after invocation, or never.
    Unknown(String),
}

/// One client operation with its invocation and completion times (nanoseconds on one
/// monotonic clock). For `Ret::Unknown`, `complete` is when the client gave up; the checker
/// treats it as never.
#[derive(Debug, Clone)]
pub struct Op {
    /// Client number.
    pub client: usize,
    /// Key.
    pub key: String,
    /// Request.
    pub call: Call,
    /// Response.
    pub ret: Ret,
    /// Invocation time (ns).
    pub invoke: u64,
    /// Completion time (ns).
    pub complete: u64,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::Put(v) => format!("put({v})"),
            Call::Get => "get()".into(),
            Call::Cas { old, new } => format!("cas({old} -> {new})"),
        };
        let ret = match &self.ret {
            Ret::Put => "ok".into(),
            Ret::Get(v) => format!("{v:?}"),
            Ret::Cas(b) => format!("{b}"),
            Ret::Unknown(e) => format!("UNKNOWN ({e})"),
        };
        write!(
            f,
            "c{} {} {call} -> {ret} [{:.3} ms .. {:.3} ms]",
            self.client,
            self.key,
            self.invoke as f64 / 1e6,
            self.complete as f64 / 1e6
        )
    }
}
