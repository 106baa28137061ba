//! The Cluster service: membership queries and changes (learners, promotion, removal,
//! peer URL updates), with etcd's strict reconfiguration checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response};
use tracing::instrument;

use super::GrpcResult;
use crate::error::EtcdError;
use crate::membership::member_id;
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

impl ClusterService {
    /// Serves Cluster for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }

    /// Voting members this member is connected to (itself included), as etcd's
    /// `numConnectedSince` counts them.
    fn active_voters(&self, voters: &[u64]) -> usize {
        let active = self.server.transport().active_peers(HEALTH_INTERVAL);
        voters
            .iter()
            .filter(|id| **id == self.server.member_id() || active.contains(id))
            .count()
    }

    fn members(&self, members: Vec<Member>) -> Vec<Member> {
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
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host().is_none()
            || parsed.port_or_known_default().is_none()
        {
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
        let voters = cluster.voters();
        if r.is_learner {
            if cluster.members.values().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners.into());
            }
        } else {
            // Strict reconfiguration: the new quorum must be reachable right now.
            let quorum = (voters.len() + 1) / 2 + 1;
            if self.active_voters(&voters) < quorum {
                return Err(EtcdError::Unhealthy.into());
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
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
            members: self.members(members),
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
            // A member that is down is safe to remove; otherwise the remaining active voters
            // must still be a quorum (etcd's mayRemoveMember).
            let active = self.server.transport().active_peers(Duration::ZERO);
            let target_up = id == self.server.member_id() || active.contains(&id);
            if target_up {
                let voters = cluster.voters();
                let n = voters.len();
                if self.active_voters(&voters).saturating_sub(1) < 1 + (n - 1) / 2 {
                    return Err(EtcdError::NotEnoughStartedMembers.into());
                }
            }
        }
        let members = self
            .server
            .propose_conf_change(ConfChangeType::RemoveNode, id, None)
            .await?;
        let mut resp = MemberRemoveResponse {
            header: None,
            members: self.members(members),
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
        if cluster
            .members
            .values()
            .any(|m| m.id != r.id && m.peer_ur_ls.iter().any(|u| r.peer_ur_ls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist.into());
        }
        let members = match self.server.propose(Internal::MemberUpdate(r)).await? {
            ApplyResponse::Members(m) => m,
            other => return Err(EtcdError::Internal(format!("unexpected {other:?}")).into()),
        };
        let mut resp = MemberUpdateResponse {
            header: None,
            members: self.members(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn member_list(&self, req: Request<MemberListRequest>) -> GrpcResult<MemberListResponse> {
        if req.get_ref().linearizable {
            self.server.read_barrier().await?;
        }
        let members = self.members(self.server.cluster().members.into_values().collect());
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
        let cluster = self.server.cluster();
        let m = cluster.members.get(&id).ok_or(EtcdError::MemberNotFound)?;
        if !m.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        // Only the leader knows how far the learner has caught up.
        let progress = self.server.progress().await?;
        if progress.leader != self.server.member_id() {
            return Err(EtcdError::NotLeader.into());
        }
        let leader_match = progress
            .peers
            .iter()
            .find(|p| p.0 == self.server.member_id())
            .map_or(0, |p| p.1);
        let learner_match = progress.peers.iter().find(|p| p.0 == id).map_or(0, |p| p.1);
        if (learner_match as f64) < (leader_match as f64) * LEARNER_READY {
            return Err(EtcdError::LearnerNotReady.into());
        }
        let voters = cluster.voters();
        if self.active_voters(&voters) < (voters.len() + 1) / 2 + 1 {
            return Err(EtcdError::Unhealthy.into());
        }
        let mut promoted = m.clone();
        promoted.is_learner = false;
        let members = self
            .server
            .propose_conf_change(ConfChangeType::AddNode, id, Some(promoted))
            .await?;
        let mut resp = MemberPromoteResponse {
            header: None,
            members: self.members(members),
        };
        self.server.fill_header_no_revision(&mut resp.header);
        Ok(Response::new(resp))
    }
}
