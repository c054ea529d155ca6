use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Certificate, Client, CompactionOptions, ConnectOptions, GetOptions, Identity,
    MemberAddOptions, TlsOptions,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::error::{EtcdError, is_learner_refusal};
use super::types::{AdminConfig, Alarm, AlarmKind, EndpointStatus, Member, Snapshot};

/// How long a cluster-wide read waits for one endpoint before asking the next as well.
pub const READ_HEDGE_AFTER: Duration = Duration::from_secs(1);

/// Administers one etcd cluster through the v3 API. Connections are kept and reused
/// (one per endpoint and deadline, shared by clones), so a controller that keeps one
/// `EtcdAdmin` per cluster pays a TLS handshake once, not on every call; a connection
/// that failed a call is dropped and made anew on the next.
#[derive(Clone, Debug)]
pub struct EtcdAdmin {
    endpoints: Vec<String>,
    config: AdminConfig,
    clients: ClientCache,
}

/// A kept connection's key: endpoint and request deadline.
type ClientKey = (String, Option<Duration>);

/// Kept connections, by endpoint and request deadline.
#[derive(Clone, Default)]
struct ClientCache(Arc<Mutex<HashMap<ClientKey, Client>>>);

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "ClientCache({n} connections)")
    }
}

impl ClientCache {
    fn get(&self, key: &ClientKey) -> Option<Client> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn put(&self, key: ClientKey, client: Client) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key, client);
    }

    fn drop_endpoint(&self, endpoint: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|(ep, _), _| ep != endpoint);
    }
}

/// One MemberList call, answered from what the asked member has applied (etcd 3.4 does
/// not serve it through raft).
async fn members_of(mut c: Client) -> Result<Vec<Member>, etcd_client::Error> {
    let r = c.member_list().await?;
    Ok(r.members().iter().map(Member::from).collect())
}

impl EtcdAdmin {
    /// `endpoints` are client URLs (`http://host:port` or `https://host:port`), ideally of
    /// voting members: cluster-wide calls try them in order.
    pub fn new(endpoints: Vec<String>, config: AdminConfig) -> Self {
        Self { endpoints, config, clients: ClientCache::default() }
    }

    /// An admin for `endpoints` (in that order) with `config`: this one's kept
    /// connections carry over when the config (TLS material, timeouts) is the same, minus
    /// those to endpoints no longer listed.
    pub fn retarget(&self, endpoints: Vec<String>, config: AdminConfig) -> EtcdAdmin {
        if config != self.config {
            return EtcdAdmin::new(endpoints, config);
        }
        self.clients.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|(ep, _), _| endpoints.contains(ep));
        EtcdAdmin { endpoints, config, clients: self.clients.clone() }
    }

    /// Closes every kept connection (the next call makes one again): a cluster that
    /// needs nothing for minutes does not hold a connection, its buffers and its task.
    pub fn disconnect(&self) {
        self.clients.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Connections kept now.
    pub fn kept_connections(&self) -> usize {
        self.clients.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn connect_options(&self, request_timeout: Option<Duration>) -> Result<ConnectOptions, EtcdError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(t) = request_timeout {
            opts = opts.with_timeout(t);
        }
        if let Some(tls) = &self.config.tls {
            let mut t = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(name) = &tls.server_name {
                t = t.domain_name(name.clone());
            }
            opts = opts.with_tls(t);
        }
        Ok(opts)
    }

    /// A client of one endpoint alone.
    async fn connect(&self, endpoint: &str, request_timeout: Option<Duration>) -> Result<Client, EtcdError> {
        let key = (endpoint.to_string(), request_timeout);
        if let Some(c) = self.clients.get(&key) {
            return Ok(c);
        }
        let opts = self.connect_options(request_timeout)?;
        match tokio::time::timeout(self.config.connect_timeout * 2, Client::connect([endpoint], Some(opts))).await {
            Ok(Ok(c)) => {
                self.clients.put(key, c.clone());
                Ok(c)
            }
            Ok(Err(source)) => Err(EtcdError::Connect { endpoint: endpoint.to_string(), source }),
            Err(_) => {
                Err(EtcdError::ConnectTimeout { endpoint: endpoint.to_string(), after: self.config.connect_timeout })
            }
        }
    }

    /// A connection of its own to every endpoint, without a request deadline, for a
    /// long-lived call (a watch): not kept with the others.
    pub async fn dedicated(&self) -> Result<Client, EtcdError> {
        let first = self.endpoints.first().ok_or(EtcdError::NoEndpoints)?.clone();
        let opts = self.connect_options(None)?;
        match tokio::time::timeout(self.config.connect_timeout * 2, Client::connect(self.endpoints.clone(), Some(opts)))
            .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(source)) => Err(EtcdError::Connect { endpoint: first, source }),
            Err(_) => Err(EtcdError::ConnectTimeout { endpoint: first, after: self.config.connect_timeout }),
        }
    }

    /// Runs one request against one endpoint with a deadline.
    async fn call<T, F, Fut>(&self, op: &'static str, endpoint: &str, timeout: Duration, f: F) -> Result<T, EtcdError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.connect(endpoint, Some(timeout)).await?;
        let result = tokio::time::timeout(timeout, f(client)).await;
        if !matches!(result, Ok(Ok(_))) {
            // Whatever failed, the next call starts from a fresh connection.
            self.clients.drop_endpoint(endpoint);
        }
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_learner_refusal(&e) => Err(EtcdError::Learner { op, endpoint: endpoint.to_string() }),
            Ok(Err(source)) => Err(EtcdError::Rpc { op, endpoint: endpoint.to_string(), source }),
            Err(_) => Err(EtcdError::Timeout { op, endpoint: endpoint.to_string(), after: timeout }),
        }
    }

    /// Runs a cluster-wide request on the first endpoint that takes it. A read moves on
    /// after any failure; a write only after failures that prove it was not applied
    /// (refused connection, learner), so a timed-out write is never sent twice.
    async fn any<T, F, Fut>(&self, op: &'static str, write: bool, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.any_of(&self.endpoints, op, write, f).await
    }

    async fn any_of<T, F, Fut>(&self, endpoints: &[String], op: &'static str, write: bool, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        if !write {
            return self.read_any(endpoints, op, f).await;
        }
        let mut errors = Vec::new();
        for ep in endpoints {
            match self.call(op, ep, self.config.request_timeout, &f).await {
                Ok(v) => return Ok(v),
                Err(e) if write && !e.not_applied() => return Err(e),
                Err(e) => errors.push(e),
            }
        }
        Err(EtcdError::AllEndpointsFailed { op, errors })
    }

    /// A read from the first endpoint that answers: endpoints are asked in order, the
    /// next one as soon as the one before failed or after [`READ_HEDGE_AFTER`] without an
    /// answer, so one frozen member (whose connection or handshake hangs until its
    /// timeout) delays a read by that much, not by its timeouts.
    async fn read_any<'a, T, F, Fut>(&'a self, endpoints: &'a [String], op: &'static str, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut waiting = endpoints.iter();
        let mut asked = FuturesUnordered::new();
        let mut errors = Vec::new();
        let f = &f;
        let ask = |ep: &'a String| self.call(op, ep, self.config.request_timeout, f);
        if let Some(ep) = waiting.next() {
            asked.push(ask(ep));
        }
        loop {
            let more = waiting.len() > 0;
            tokio::select! {
                answer = asked.next() => match answer {
                    Some(Ok(v)) => return Ok(v),
                    Some(Err(e)) => {
                        errors.push(e);
                        if let Some(ep) = waiting.next() {
                            asked.push(ask(ep));
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(READ_HEDGE_AFTER), if more => {
                    if let Some(ep) = waiting.next() {
                        asked.push(ask(ep));
                    }
                }
            }
        }
        Err(EtcdError::AllEndpointsFailed { op, errors })
    }

    /// Every member, learners included, as the first member to answer has applied it.
    pub async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        self.any("member list", false, members_of).await
    }

    /// The member list as the member at `endpoint` has applied it.
    pub async fn member_list_at(&self, endpoint: &str) -> Result<Vec<Member>, EtcdError> {
        self.call("member list", endpoint, self.config.request_timeout, members_of).await
    }

    /// Adds a learner with these peer URLs and returns it with the member list etcd
    /// answered with, from which the new member's `--initial-cluster` is built. etcd 3.4
    /// allows one learner at a time.
    pub async fn add_learner(&self, peer_urls: Vec<String>) -> Result<(Member, Vec<Member>), EtcdError> {
        self.any("member add", true, |mut c| {
            let urls = peer_urls.clone();
            async move {
                let r = c.member_add(urls, Some(MemberAddOptions::new().with_is_learner())).await?;
                let added = r
                    .member()
                    .map(Member::from)
                    .ok_or_else(|| etcd_client::Error::InvalidArgs("member add answered without the member".into()))?;
                Ok((added, r.member_list().iter().map(Member::from).collect()))
            }
        })
        .await
    }

    /// Promotes a learner to a voting member. etcd refuses while the learner is behind
    /// (`can only promote a learner member which is in sync with leader`): retry.
    pub async fn promote(&self, id: u64) -> Result<Vec<Member>, EtcdError> {
        self.any("member promote", true, |mut c| async move {
            Ok(c.member_promote(id).await?.members().iter().map(Member::from).collect())
        })
        .await
    }

    /// Removes a member. Move leadership away first if it leads. The request never goes
    /// to the member being removed: it would stop while answering, and the answer would
    /// be an error although the removal was applied.
    pub async fn remove(&self, id: u64) -> Result<Vec<Member>, EtcdError> {
        let victim: Vec<String> = self
            .member_list()
            .await
            .map(|ms| ms.into_iter().filter(|m| m.id == id).flat_map(|m| m.client_urls).collect())
            .unwrap_or_default();
        let others: Vec<String> = self.endpoints.iter().filter(|e| !victim.contains(e)).cloned().collect();
        let endpoints = if others.is_empty() { &self.endpoints } else { &others };
        self.any_of(endpoints, "member remove", true, |mut c| async move {
            Ok(c.member_remove(id).await?.members().iter().map(Member::from).collect())
        })
        .await
    }

    /// Replaces a member's peer URLs.
    pub async fn update_peer_urls(&self, id: u64, peer_urls: Vec<String>) -> Result<Vec<Member>, EtcdError> {
        self.any("member update", true, |mut c| {
            let urls = peer_urls.clone();
            async move { Ok(c.member_update(id, urls).await?.members().iter().map(Member::from).collect()) }
        })
        .await
    }

    /// Status of the member at `endpoint`, from that member.
    pub async fn status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        let ep = endpoint.to_string();
        self.call("status", endpoint, self.config.request_timeout, |mut c| async move {
            let r = c.status().await?;
            Ok(EndpointStatus {
                endpoint: ep,
                member_id: r.header().map(|h| h.member_id()).unwrap_or_default(),
                cluster_id: r.header().map(|h| h.cluster_id()).unwrap_or_default(),
                version: r.version().to_string(),
                db_size: r.db_size(),
                db_size_in_use: r.raft_used_db_size(),
                leader: r.leader(),
                raft_index: r.raft_index(),
                raft_term: r.raft_term(),
                raft_applied_index: r.raft_applied_index(),
                is_learner: r.is_learner(),
                errors: r.errors().to_vec(),
                revision: r.header().map(|h| h.revision()).unwrap_or_default(),
            })
        })
        .await
    }

    /// Status of every endpoint, each from its own member, concurrently.
    pub async fn statuses(&self) -> Vec<(String, Result<EndpointStatus, EtcdError>)> {
        let calls = self.endpoints.iter().map(|ep| async move { (ep.clone(), self.status(ep).await) });
        futures::future::join_all(calls).await
    }

    /// The leader's id and the status that named it, asking endpoints in order.
    pub async fn leader(&self) -> Result<EndpointStatus, EtcdError> {
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            match self.status(ep).await {
                Ok(s) if s.leader != 0 => return Ok(s),
                Ok(_) => errors.push(EtcdError::NoLeader),
                Err(e) => errors.push(e),
            }
        }
        if errors.iter().all(|e| matches!(e, EtcdError::NoLeader)) && !errors.is_empty() {
            return Err(EtcdError::NoLeader);
        }
        Err(EtcdError::AllEndpointsFailed { op: "find leader", errors })
    }

    /// Moves leadership to the voting member `to`. etcd takes this only from the leader,
    /// so the request goes to the leader's own client URL. A no-op when `to` leads.
    pub async fn move_leader(&self, to: u64) -> Result<(), EtcdError> {
        let leader = self.leader().await?.leader;
        if leader == to {
            return Ok(());
        }
        let members = self.member_list().await?;
        let lm = members.iter().find(|m| m.id == leader).ok_or(EtcdError::MemberNotFound { id: leader })?;
        let ep = lm.client_urls.first().ok_or(EtcdError::LeaderUnreachable { id: leader })?;
        self.call(
            "move leader",
            ep,
            self.config.request_timeout,
            |mut c| async move { c.move_leader(to).await.map(|_| ()) },
        )
        .await
    }

    /// Defragments the member at `endpoint` only. Refuses learners (etcd 3.4 does not
    /// serve them this call). Blocks that member while it runs: one member at a time.
    pub async fn defragment(&self, endpoint: &str) -> Result<(), EtcdError> {
        self.refuse_learner("defragment", endpoint).await?;
        self.call("defragment", endpoint, self.config.defrag_timeout, |mut c| async move {
            c.defragment().await.map(|_| ())
        })
        .await
    }

    async fn refuse_learner(&self, op: &'static str, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        let s = self.status(endpoint).await?;
        if s.is_learner {
            return Err(EtcdError::Learner { op, endpoint: endpoint.to_string() });
        }
        Ok(s)
    }

    /// The current revision of the store, as a linearizable read.
    pub async fn revision(&self) -> Result<i64, EtcdError> {
        self.any("get revision", false, |mut c| async move {
            let r = c.get("etcd-pilot/revision-probe", None).await?;
            Ok(r.header().map(|h| h.revision()).unwrap_or_default())
        })
        .await
    }

    /// How many keys the store held at `revision`, counted by the member at `endpoint`.
    pub async fn count_at(&self, endpoint: &str, revision: i64) -> Result<i64, EtcdError> {
        self.call("count keys", endpoint, self.config.defrag_timeout, |mut c| async move {
            count_at(&mut c, revision).await
        })
        .await
    }

    /// `HashKV` of the member at `endpoint` at `revision`: the hash and the compact
    /// revision it starts from (hashes compare only between equal compact revisions).
    pub async fn hash_kv(&self, endpoint: &str, revision: i64) -> Result<(u32, i64), EtcdError> {
        self.call("hash kv", endpoint, self.config.defrag_timeout, |mut c| async move {
            let r = c.hash_kv(revision).await?;
            Ok((r.hash(), r.compact_version()))
        })
        .await
    }

    /// Compacts away revisions older than `current - keep`, physically (the call returns
    /// once every member has removed them). Returns the revision compacted to, or `None`
    /// when there was nothing to compact.
    pub async fn compact_keeping(&self, keep: i64) -> Result<Option<i64>, EtcdError> {
        let target = self.revision().await? - keep.max(0);
        self.compact_to(target).await
    }

    /// Compacts away revisions older than `target`, physically. `None`: nothing to
    /// compact (`target` at most 1). A revision compacted already is success.
    pub async fn compact_to(&self, target: i64) -> Result<Option<i64>, EtcdError> {
        if target <= 1 {
            return Ok(None);
        }
        // A physical compaction of a long history takes longer than an ordinary request.
        let compact = |mut c: Client| async move {
            match c.compact(target, Some(CompactionOptions::new().with_physical())).await {
                Ok(_) => Ok(Some(target)),
                // Compacting to an already compacted revision is success: the goal holds.
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message().contains("required revision has been compacted") =>
                {
                    Ok(Some(target))
                }
                Err(e) => Err(e),
            }
        };
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            match self.call("compact", ep, self.config.defrag_timeout, compact).await {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(e),
            }
        }
        Err(EtcdError::AllEndpointsFailed { op: "compact", errors })
    }

    /// Streams a snapshot of the member at `endpoint`. Refuses learners: etcd 3.4 does
    /// not serve them snapshots, and an etcdctl snapshot against one retries forever.
    pub async fn snapshot(&self, endpoint: &str) -> Result<Snapshot, EtcdError> {
        let status = self.refuse_learner("snapshot", endpoint).await?;
        let ep = endpoint.to_string();
        // No request deadline on the stream itself: a large db takes long. Each chunk has
        // its own idle deadline instead.
        let mut client = self.connect(endpoint, None).await?;
        let streaming = match tokio::time::timeout(self.config.request_timeout, client.snapshot()).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(EtcdError::Rpc { op: "snapshot", endpoint: ep, source }),
            Err(_) => {
                return Err(EtcdError::Timeout { op: "snapshot", endpoint: ep, after: self.config.request_timeout });
            }
        };
        let idle = self.config.snapshot_idle_timeout;
        let stream_ep = ep.clone();
        let stream = futures::stream::unfold(Some((streaming, client)), move |state| {
            let ep = stream_ep.clone();
            async move {
                let (mut s, client) = state?;
                match tokio::time::timeout(idle, s.message()).await {
                    Ok(Ok(Some(msg))) => Some((Ok(Bytes::copy_from_slice(msg.blob())), Some((s, client)))),
                    Ok(Ok(None)) => None,
                    Ok(Err(source)) => Some((Err(EtcdError::Rpc { op: "snapshot", endpoint: ep, source }), None)),
                    Err(_) => Some((Err(EtcdError::Timeout { op: "snapshot", endpoint: ep, after: idle }), None)),
                }
            }
        });
        Ok(Snapshot {
            endpoint: ep.clone(),
            member_id: status.member_id,
            version: status.version,
            stream: Box::pin(super::snapshot::verify_stream(ep, Box::pin(stream))),
        })
    }

    /// Active alarms on any member.
    pub async fn alarms(&self) -> Result<Vec<Alarm>, EtcdError> {
        self.any("alarm list", false, |mut c| async move {
            let r = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
            Ok(r.alarms()
                .iter()
                .filter_map(|a| {
                    let kind = match a.alarm() {
                        AlarmType::Nospace => AlarmKind::NoSpace,
                        AlarmType::Corrupt => AlarmKind::Corrupt,
                        AlarmType::None => return None,
                    };
                    Some(Alarm { member_id: a.member_id(), kind })
                })
                .collect())
        })
        .await
    }

    /// Disarms one alarm. Free space first (compact + defragment), or etcd raises a
    /// NOSPACE alarm again at the next write.
    pub async fn disarm(&self, alarm: &Alarm) -> Result<(), EtcdError> {
        let (member, kind) = (alarm.member_id, alarm.kind.to_pb());
        self.any("alarm disarm", false, |mut c| async move {
            let mut opts = AlarmOptions::new();
            opts.with_member(member);
            c.alarm(AlarmAction::Deactivate, kind, Some(opts)).await.map(|_| ())
        })
        .await
    }

    /// Whether the cluster serves a linearizable read through any endpoint within the
    /// request timeout: the test that it has quorum and a leader.
    pub async fn has_quorum(&self) -> bool {
        self.revision().await.is_ok()
    }
}

/// How many keys `client`'s store held at `revision` (0: the current one), counted
/// without reading a value.
pub async fn count_at(client: &mut Client, revision: i64) -> Result<i64, etcd_client::Error> {
    let options = GetOptions::new().with_from_key().with_count_only().with_revision(revision);
    Ok(client.get(vec![0u8], Some(options)).await?.count())
}
