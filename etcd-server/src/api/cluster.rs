//! The Cluster service: membership queries and changes (learners, promotion, removal,
//! peer URL updates), with etcd's strict reconfiguration checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response};
use tracing::instrument;

use super::GrpcResult;
use crate::error::EtcdError;
use crate::membership::{Cluster as Members, member_id};
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
    internal_raft_request::Request as Internal,
};
use crate::server::{ApplyResponse, EtcdServer};

/// etcd's `HealthInterval`: a peer counts as active once connected this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// etcd promotes a learner only once it has this share of the leader's log.
const LEARNER_READY: f64 = 0.9;
/// etcd allows one learner at a time.
const MAX_LEARNERS: usize = 1;

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub struct ClusterService {
    server: Arc<EtcdServer>,
}

/// A member counts as started once it has published its name (etcd's `IsStarted`).
fn started(m: &Member) -> bool {
    !m.name.is_empty()
}

fn voters(c: &Members) -> impl Iterator<Item = &Member> {
    c.members.values().filter(|m| !m.is_learner)
}

/// etcd's `IsReadyToAddVotingMember`: after the add, a quorum must be started.
fn ready_to_add_voter(c: &Members) -> bool {
    let members = voters(c).count() + 1;
    let started_n = voters(c).filter(|m| started(m)).count();
    // Adding a member to a one-member cluster (restoring data) is always allowed.
    (started_n == 1 && members == 2) || started_n > members / 2
}

/// etcd's `IsReadyToRemoveVotingMember`.
fn ready_to_remove_voter(c: &Members, id: u64) -> bool {
    let rest = voters(c).filter(|m| m.id != id).count();
    let started_n = voters(c).filter(|m| m.id != id && started(m)).count();
    started_n > rest / 2
}

/// etcd's `IsReadyToPromoteMember`.
fn ready_to_promote(c: &Members, id: u64) -> bool {
    let members = voters(c).count() + 1;
    let learner_started = c.members.get(&id).is_some_and(started);
    let started_n = voters(c).filter(|m| started(m)).count() + usize::from(learner_started);
    started_n > members / 2
}

/// Promotes learner `id` on the leader, which alone knows how far it has caught up. Shared by
/// the Cluster service and the peer service (followers forward promotions, as in etcd).
pub async fn promote_on_leader(server: &EtcdServer, id: u64) -> Result<Vec<Member>, EtcdError> {
    let cluster = server.cluster();
    let m = cluster.members.get(&id).ok_or(EtcdError::MemberNotFound)?;
    if !m.is_learner {
        return Err(EtcdError::MemberNotLearner);
    }
    let progress = server.progress().await?;
    if progress.leader != server.member_id() {
        return Err(EtcdError::NotLeader);
    }
    let matched = |who: u64| {
        progress
            .peers
            .iter()
            .find(|p| p.0 == who)
            .map_or(0, |p| p.1)
    };
    if (matched(id) as f64) < (matched(server.member_id()) as f64) * LEARNER_READY {
        return Err(EtcdError::LearnerNotReady);
    }
    if !ready_to_promote(&cluster, id) {
        return Err(EtcdError::NotEnoughStartedMembers);
    }
    let mut promoted = m.clone();
    promoted.is_learner = false;
    server
        .propose_conf_change(ConfChangeType::AddNode, id, Some(promoted))
        .await
}

impl ClusterService {
    /// Serves Cluster for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }

    /// Whether this member has been connected to every other voter for etcd's health
    /// interval (`isConnectedFullySince`).
    fn connected_to_all_voters(&self, c: &Members) -> bool {
        let active = self.server.transport().active_peers(HEALTH_INTERVAL);
        voters(c).all(|m| m.id == self.server.member_id() || active.contains(&m.id))
    }

    /// Voters this member is connected to (itself included), as etcd's `numConnectedSince`.
    fn active_voters(&self, c: &Members) -> usize {
        let active = self.server.transport().active_peers(HEALTH_INTERVAL);
        voters(c)
            .filter(|m| m.id == self.server.member_id() || active.contains(&m.id))
            .count()
    }

    fn sorted(members: Vec<Member>) -> Vec<Member> {
        let mut m = members;
        m.sort_by_key(|m| m.id);
        m
    }
}

fn check_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls);
    }
    let mut out = Vec::new();
    for u in urls {
        let parsed = url::Url::parse(u).map_err(|_| EtcdError::MemberBadUrls)?;
        let scheme_ok = matches!(parsed.scheme(), "http" | "https");
        if !scheme_ok || parsed.host().is_none() || parsed.port_or_known_default().is_none() {
            return Err(EtcdError::MemberBadUrls);
        }
        out.push(u.clone());
    }
    out.sort();
    Ok(out)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    #[instrument(skip_all)]
    async fn member_add(&self, req: Request<MemberAddRequest>) -> GrpcResult<MemberAddResponse> {
        let r = req.into_inner();
        let urls = check_urls(&r.peer_ur_ls)?;
        let cluster = self.server.cluster();
        if cluster
            .members
            .values()
            .any(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist.into());
        }
        if r.is_learner {
            if cluster.members.values().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners.into());
            }
        } else if !ready_to_add_voter(&cluster) {
            tracing::warn!("rejecting member add: not enough started members");
            return Err(EtcdError::NotEnoughStartedMembers.into());
        }
        // Strict reconfiguration, learners included: connected to every voter for a while.
        if !self.connected_to_all_voters(&cluster) {
            tracing::warn!("rejecting member add: not connected to every voting member");
            return Err(EtcdError::Unhealthy.into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let id = member_id(&urls, "", Some(now));
        if cluster.members.contains_key(&id) {
            return Err(EtcdError::MemberExist.into());
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: urls,
            client_ur_ls: vec![],
            is_learner: r.is_learner,
        };
        let change = if r.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let members = self
            .server
            .propose_conf_change(change, id, Some(member.clone()))
            .await?;
        let mut resp = MemberAddResponse {
            header: None,
            member: Some(member),
            members: Self::sorted(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> GrpcResult<MemberRemoveResponse> {
        let id = req.get_ref().id;
        let cluster = self.server.cluster();
        let target = cluster.members.get(&id).ok_or(EtcdError::MemberNotFound)?;
        if !target.is_learner {
            if !ready_to_remove_voter(&cluster, id) {
                return Err(EtcdError::NotEnoughStartedMembers.into());
            }
            // A member that is down is safe to remove; otherwise the remaining active voters
            // must still be a quorum (etcd's mayRemoveMember).
            let target_up = id == self.server.member_id()
                || self
                    .server
                    .transport()
                    .active_peers(Duration::ZERO)
                    .contains(&id);
            let n = voters(&cluster).count();
            if target_up && self.active_voters(&cluster).saturating_sub(1) < 1 + (n - 1) / 2 {
                tracing::warn!(
                    id = format!("{id:x}"),
                    "rejecting member remove: it breaks the active quorum"
                );
                return Err(EtcdError::Unhealthy.into());
            }
        }
        let members = self
            .server
            .propose_conf_change(ConfChangeType::RemoveNode, id, None)
            .await?;
        let mut resp = MemberRemoveResponse {
            header: None,
            members: Self::sorted(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> GrpcResult<MemberUpdateResponse> {
        let mut r = req.into_inner();
        r.peer_ur_ls = check_urls(&r.peer_ur_ls)?;
        let cluster = self.server.cluster();
        if !cluster.members.contains_key(&r.id) {
            return Err(EtcdError::MemberNotFound.into());
        }
        let taken = cluster
            .members
            .values()
            .any(|m| m.id != r.id && m.peer_ur_ls.iter().any(|u| r.peer_ur_ls.contains(u)));
        if taken {
            return Err(EtcdError::PeerUrlExist.into());
        }
        let members = match self.server.propose(Internal::MemberUpdate(r)).await? {
            ApplyResponse::Members(m) => m,
            other => return Err(EtcdError::Internal(format!("unexpected {other:?}")).into()),
        };
        let mut resp = MemberUpdateResponse {
            header: None,
            members: Self::sorted(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn member_list(&self, req: Request<MemberListRequest>) -> GrpcResult<MemberListResponse> {
        if req.get_ref().linearizable {
            self.server.read_barrier().await?;
        }
        let members = Self::sorted(self.server.cluster().members.into_values().collect());
        let mut resp = MemberListResponse {
            header: None,
            members,
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> GrpcResult<MemberPromoteResponse> {
        let id = req.get_ref().id;
        let members = if self.server.is_leader() {
            promote_on_leader(&self.server, id).await?
        } else {
            let cluster = self.server.cluster();
            let m = cluster.members.get(&id).ok_or(EtcdError::MemberNotFound)?;
            if !m.is_learner {
                return Err(EtcdError::MemberNotLearner.into());
            }
            let mut c = self.server.leader_client().await?;
            c.promote(crate::proto::peerpb::PromoteRequest { id })
                .await?
                .into_inner()
                .members
        };
        let mut resp = MemberPromoteResponse {
            header: None,
            members: Self::sorted(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(members: &[(u64, &str, bool)]) -> Members {
        let members = members
            .iter()
            .map(|(id, name, learner)| {
                let m = Member {
                    id: *id,
                    name: (*name).into(),
                    is_learner: *learner,
                    ..Default::default()
                };
                (*id, m)
            })
            .collect();
        Members {
            id: 1,
            members,
            removed: Default::default(),
        }
    }

    #[test]
    fn readiness_rules_match_etcd() {
        // Three started voters: adding a fourth leaves 3 of 4 started: fine.
        assert!(ready_to_add_voter(&cluster(&[
            (1, "a", false),
            (2, "b", false),
            (3, "c", false)
        ])));
        // Two of three never started: adding a voter would leave 1 of 4.
        assert!(!ready_to_add_voter(&cluster(&[
            (1, "a", false),
            (2, "", false),
            (3, "", false)
        ])));
        // One started member: adding a second is the restore case.
        assert!(ready_to_add_voter(&cluster(&[(1, "a", false)])));
        // Removing 3 leaves a, b started.
        assert!(ready_to_remove_voter(
            &cluster(&[(1, "a", false), (2, "b", false), (3, "", false)]),
            3
        ));
        assert!(!ready_to_remove_voter(
            &cluster(&[(1, "a", false), (2, "", false), (3, "", false)]),
            1
        ));
        // Promoting an unstarted learner into 2 started of 3 voters: 2 of 4 is not a quorum.
        let c = cluster(&[
            (1, "a", false),
            (2, "b", false),
            (3, "", false),
            (4, "", true),
        ]);
        assert!(!ready_to_promote(&c, 4));
        let c = cluster(&[
            (1, "a", false),
            (2, "b", false),
            (3, "", false),
            (4, "d", true),
        ]);
        assert!(ready_to_promote(&c, 4));
    }
}
