//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas can run
//! and only one reconciles. kube 5 has no helper for it; this follows client-go's
//! leaderelection: whoever holds an unexpired Lease renews it, anyone may take an expired one,
//! and every write carries the `resourceVersion` it read, so concurrent candidates conflict
//! (409) instead of both winning.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why a Lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused a read or write (other than a conflict).
    #[error("failed to {op} lease {name}: {source}")]
    Api {
        /// What was attempted.
        op: &'static str,
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the operator's).
    pub namespace: String,
    /// This candidate's identity (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and candidates retry.
    pub retry_period: Duration,
}

/// What a candidate should do with the Lease as read at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// It is free or expired: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides what to do with `lease` (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
            match renewed {
                Some(t) if t + duration > now => Decision::Wait,
                _ => Decision::Take,
            }
        }
    }
}

/// A candidate for leadership.
pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
}

impl LeaderElector {
    /// A candidate with `config`.
    pub fn new(client: Client, config: Config) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew; `true` when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let name = &self.config.name;
        let err = |op| {
            move |source| Error::Api {
                op,
                name: name.clone(),
                source,
            }
        };
        let now = Timestamp::now();
        let lease = self.api.get_opt(name).await.map_err(err("read"))?;
        let written = match decide(lease.as_ref(), &self.config.identity, now) {
            Decision::Wait => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            decision => {
                let mut lease = lease.unwrap_or_default();
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    self.spec(now, old.acquire_time, transitions)
                } else {
                    self.spec(now, None, transitions + 1)
                });
                // `lease.metadata.resourceVersion` is the one we read: a concurrent write wins.
                self.api.replace(name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(source) => Err(Error::Api {
                op: "write",
                name: name.clone(),
                source,
            }),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting for leadership");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.config.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keeps renewing the Lease in the background. The returned receiver turns `true` once
    /// leadership is lost: a renewal did not succeed within the lease duration, so another
    /// replica may have taken over and this one must stop reconciling.
    pub fn keep(self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(self.config.retry_period).await;
                match self.try_acquire_or_renew().await {
                    Ok(true) => last = tokio::time::Instant::now(),
                    Ok(false) => {
                        warn!(lease = %self.config.name, "another replica holds the lease");
                        let _ = tx.send(true);
                        return;
                    }
                    Err(error) => warn!(%error, "failed to renew the lease"),
                }
                // Stop before the lease can expire (a margin of one retry period).
                if last.elapsed() + self.config.retry_period >= self.config.lease_duration {
                    let _ = tx.send(true);
                    return;
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 1, now)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 1, now)), "a", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 20, now)), "a", now),
            Decision::Take
        );
        assert_eq!(decide(Some(&lease(None, 1, now)), "a", now), Decision::Take);
    }
}
