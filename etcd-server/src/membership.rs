//! Member and cluster identity, derived exactly as etcd derives it, and its persistence.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};
use sha1::{Digest, Sha1};

use crate::backend::{Backend, BackendError, MEMBERS, META};

/// IDs of members removed from the cluster (etcd's removed-member record): their messages are
/// refused so that a removed member that missed its own removal finds out.
pub const REMOVED: redb::TableDefinition<u64, ()> = redb::TableDefinition::new("members_removed");

/// What peers tell a removed member.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";
use crate::proto::etcdserverpb::Member;

/// Meta key holding the cluster ID.
pub const META_CLUSTER_ID: &str = "cluster_id";

/// etcd's member ID: the first 8 bytes (big-endian) of SHA-1 over the sorted, concatenated
/// peer URLs, the cluster token and, for runtime additions, the Unix time.
pub fn member_id(peer_urls: &[String], token: &str, now_unix: Option<i64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    if let Some(t) = now_unix {
        b.extend_from_slice(t.to_string().as_bytes());
    }
    first_u64(&Sha1::digest(&b))
}

/// etcd's cluster ID: SHA-1 over the sorted member IDs, each 8 bytes big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&Sha1::digest(&b))
}

fn first_u64(h: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&h[..8]);
    u64::from_be_bytes(a)
}

/// Errors in cluster configuration.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// `--initial-cluster` could not be parsed.
    #[error("failed to parse --initial-cluster {0:?}: expected name=url[,name=url...]")]
    BadInitialCluster(String),
    /// This member's name is missing from `--initial-cluster`.
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NameNotInCluster {
        /// The local member name.
        name: String,
    },
    /// This member's advertised peer URLs differ from its `--initial-cluster` entry.
    #[error(
        "--initial-cluster has {name}={cluster:?} but missing from --initial-advertise-peer-urls={advertised:?}"
    )]
    PeerUrlMismatch {
        /// The local member name.
        name: String,
        /// URLs in `--initial-cluster`.
        cluster: Vec<String>,
        /// URLs in `--initial-advertise-peer-urls`.
        advertised: Vec<String>,
    },
    /// Reading or writing the member table failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The cluster as this member knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// Cluster ID.
    pub id: u64,
    /// Members by ID.
    pub members: BTreeMap<u64, Member>,
    /// Members removed from the cluster.
    pub removed: BTreeSet<u64>,
}

impl Cluster {
    /// Builds the bootstrap cluster from `--initial-cluster` and `--initial-cluster-token`.
    pub fn from_initial(initial: &str, token: &str) -> Result<Self, MembershipError> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in initial.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| MembershipError::BadInitialCluster(initial.to_owned()))?;
            if name.is_empty() || url.is_empty() {
                return Err(MembershipError::BadInitialCluster(initial.to_owned()));
            }
            by_name
                .entry(name.to_owned())
                .or_default()
                .push(url.to_owned());
        }
        if by_name.is_empty() {
            return Err(MembershipError::BadInitialCluster(initial.to_owned()));
        }
        let mut members = BTreeMap::new();
        for (name, mut urls) in by_name {
            urls.sort();
            let id = member_id(&urls, token, None);
            members.insert(
                id,
                Member {
                    id,
                    name,
                    peer_ur_ls: urls,
                    client_ur_ls: vec![],
                    is_learner: false,
                },
            );
        }
        let ids: Vec<u64> = members.keys().copied().collect();
        Ok(Self {
            id: cluster_id(&ids),
            members,
            removed: BTreeSet::new(),
        })
    }

    /// The member named `name`, checking its peer URLs against the advertised ones.
    pub fn local_member(&self, name: &str, advertised: &[String]) -> Result<u64, MembershipError> {
        let m = self
            .members
            .values()
            .find(|m| m.name == name)
            .ok_or_else(|| MembershipError::NameNotInCluster {
                name: name.to_owned(),
            })?;
        let mut adv = advertised.to_vec();
        adv.sort();
        if m.peer_ur_ls != adv {
            return Err(MembershipError::PeerUrlMismatch {
                name: name.to_owned(),
                cluster: m.peer_ur_ls.clone(),
                advertised: adv,
            });
        }
        Ok(m.id)
    }

    /// Voting member IDs.
    pub fn voters(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// Loads the cluster from the backend, if it was ever saved.
    pub fn load(backend: &Backend) -> Result<Option<Self>, MembershipError> {
        let Some(id) = backend.meta(META_CLUSTER_ID)? else {
            return Ok(None);
        };
        let tx = backend.db().begin_read().map_err(BackendError::from)?;
        let t = tx.open_table(MEMBERS).map_err(BackendError::from)?;
        let mut members = BTreeMap::new();
        for item in t.iter().map_err(BackendError::from)? {
            let (k, v) = item.map_err(BackendError::from)?;
            let m = Member::decode(v.value()).map_err(|e| BackendError::Corrupt(e.to_string()))?;
            members.insert(k.value(), m);
        }
        let mut removed = BTreeSet::new();
        match tx.open_table(REMOVED) {
            Ok(t) => {
                for item in t.iter().map_err(BackendError::from)? {
                    removed.insert(item.map_err(BackendError::from)?.0.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(BackendError::from(e).into()),
        }
        Ok(Some(Self {
            id,
            members,
            removed,
        }))
    }

    /// Saves the whole cluster durably.
    pub fn save(&self, backend: &Backend) -> Result<(), MembershipError> {
        let tx = backend.db().begin_write().map_err(BackendError::from)?;
        self.save_in(&tx)?;
        tx.commit().map_err(BackendError::from)?;
        Ok(())
    }

    /// Writes the whole cluster in `tx`.
    pub fn save_in(&self, tx: &redb::WriteTransaction) -> Result<(), BackendError> {
        let mut t = tx.open_table(MEMBERS)?;
        t.retain(|_, _| false)?;
        for (id, m) in &self.members {
            t.insert(*id, m.encode_to_vec().as_slice())?;
        }
        let mut meta = tx.open_table(META)?;
        meta.insert(META_CLUSTER_ID, self.id)?;
        let mut removed = tx.open_table(REMOVED)?;
        for id in &self.removed {
            removed.insert(*id, ())?;
        }
        Ok(())
    }

    /// Applies a committed membership change.
    pub fn apply_change(
        &mut self,
        change: raft::eraftpb::ConfChangeType,
        node_id: u64,
        member: Option<Member>,
    ) {
        use raft::eraftpb::ConfChangeType::*;
        match change {
            AddNode => match self.members.get_mut(&node_id) {
                Some(m) => {
                    m.is_learner = false;
                    if let Some(new) = member
                        && !new.peer_ur_ls.is_empty()
                    {
                        m.peer_ur_ls = new.peer_ur_ls;
                    }
                }
                None => {
                    if let Some(mut m) = member {
                        m.is_learner = false;
                        self.members.insert(node_id, m);
                    }
                }
            },
            AddLearnerNode => {
                if let Some(mut m) = member {
                    m.is_learner = true;
                    self.members.entry(node_id).or_insert(m);
                }
            }
            RemoveNode => {
                self.members.remove(&node_id);
                self.removed.insert(node_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_member_and_cluster_ids_match_etcd() {
        // etcd with no flags: member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let c =
            Cluster::from_initial("default=http://localhost:2380", "etcd-cluster").expect("parse");
        let id = c
            .local_member("default", &["http://localhost:2380".into()])
            .expect("local");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", c.id), "cdf818194e3a8c32");
    }

    #[test]
    fn initial_cluster_errors() {
        assert!(Cluster::from_initial("", "t").is_err());
        assert!(Cluster::from_initial("a", "t").is_err());
        let c = Cluster::from_initial("a=http://1:2380,b=http://2:2380", "t").expect("parse");
        assert_eq!(c.members.len(), 2);
        assert!(matches!(
            c.local_member("c", &[]),
            Err(MembershipError::NameNotInCluster { .. })
        ));
        assert!(matches!(
            c.local_member("a", &["http://9:2380".into()]),
            Err(MembershipError::PeerUrlMismatch { .. })
        ));
    }
}
