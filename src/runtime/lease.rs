//! The leader-election guard every controller checks before it acts. The election task
//! learns of a lost Lease only when it can reach the API server, while etcd may still
//! be reachable: so a pass re-reads the Lease before it acts, and again (a fence) right
//! before each destructive step, and stops when the manager says leadership is gone.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch;

/// A leader-election Lease, by namespace and name, and who must hold it.
#[derive(Clone, Debug)]
pub struct LeaseRef {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// Is the Lease held by `identity` and not expired by this machine's clock?
pub fn lease_valid(lease: &Lease, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let (Some(holder), Some(renewed), Some(secs)) =
        (spec.holder_identity.as_deref(), spec.renew_time.as_ref(), spec.lease_duration_seconds)
    else {
        return false;
    };
    holder == identity && renewed.0 + jiff::SignedDuration::from_secs(i64::from(secs)) > now
}

/// How long a read of the Lease answers `holds` for every pass (of every cluster) that
/// asks: idle passes of many clusters share one read. Fences never use it.
const SHARED_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether this replica may act.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    lease: Option<LeaseRef>,
    /// The manager's view of leadership: false from the moment the Lease is lost.
    leading: watch::Receiver<bool>,
    /// The last read that found the Lease held: when, and until when it is valid.
    recent: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, jiff::Timestamp)>>>,
}

impl LeaseGuard {
    pub fn new(lease: LeaseRef, leading: watch::Receiver<bool>) -> Self {
        Self { lease: Some(lease), leading, recent: Default::default() }
    }

    /// No Lease: one replica, always acting (tests, single-replica tools).
    pub fn unguarded() -> Self {
        let (tx, rx) = watch::channel(true);
        // The sender may go: the receiver keeps the last value.
        drop(tx);
        Self { lease: None, leading: rx, recent: Default::default() }
    }

    /// The manager still says this replica leads.
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Before a pass acts: the Lease as read at most `SHARED_READ` ago (and still valid
    /// by the local clock for longer than that), else read afresh; and the manager has
    /// not seen it lost.
    pub async fn holds(&self, client: &Client) -> Result<bool, kube::Error> {
        if !self.leading() {
            return Ok(false);
        }
        let now = jiff::Timestamp::now();
        let shared = *self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((read_at, valid_until)) = shared
            && read_at.elapsed() < SHARED_READ
            && valid_until > now + SHARED_READ
        {
            return Ok(true);
        }
        self.holds_fresh(client).await
    }

    /// Reads the Lease afresh (a fence before a destructive step): held by this replica
    /// and unexpired by the local clock, and the manager has not seen it lost.
    pub async fn holds_fresh(&self, client: &Client) -> Result<bool, kube::Error> {
        if !self.leading() {
            return Ok(false);
        }
        let Some(l) = &self.lease else { return Ok(true) };
        let api: Api<Lease> = Api::namespaced(client.clone(), &l.namespace);
        let read_at = std::time::Instant::now();
        let lease = api.get_opt(&l.name).await?;
        let now = jiff::Timestamp::now();
        let held = lease.as_ref().is_some_and(|lease| lease_valid(lease, &l.identity, now));
        let valid_until = lease.and_then(|l| l.spec).and_then(|s| {
            Some(s.renew_time?.0 + jiff::SignedDuration::from_secs(i64::from(s.lease_duration_seconds?)))
        });
        *self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            held.then_some(()).and(valid_until).map(|v| (read_at, v));
        Ok(held)
    }

    /// The Lease's name, for messages.
    pub fn describe(&self) -> String {
        self.lease.as_ref().map_or_else(|| "(none)".into(), |l| format!("{}/{}", l.namespace, l.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn passes_share_a_recent_read_and_fences_never_do() {
        let (tx, rx) = watch::channel(true);
        let lease = LeaseRef { namespace: "ns".into(), name: "l".into(), identity: "me".into() };
        let guard = LeaseGuard::new(lease, rx);
        // An API server that would fail every request: only a shared read avoids it.
        let (mock, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(mock, "ns");
        let valid = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(15);
        *guard.recent.lock().unwrap() = Some((std::time::Instant::now(), valid));
        assert!(guard.holds(&client).await.unwrap(), "a read just now answers");
        // Too close to its expiry: read again (the mock fails the read).
        *guard.recent.lock().unwrap() = Some((std::time::Instant::now(), jiff::Timestamp::now()));
        drop(_handle);
        assert!(guard.holds(&client).await.is_err(), "a Lease about to expire is read again");
        *guard.recent.lock().unwrap() = Some((std::time::Instant::now(), valid));
        assert!(guard.holds_fresh(&client).await.is_err(), "a fence always reads");
        // The manager saw it lost: nothing shared counts.
        tx.send(false).unwrap();
        assert!(!guard.holds(&client).await.unwrap());
    }

    #[test]
    fn a_lease_counts_while_held_and_fresh() {
        let lease = |holder: &str, renewed: i64| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": jiff::Timestamp::from_second(renewed).unwrap().to_string()}}))
            .unwrap()
        };
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        assert!(lease_valid(&lease("me", 990), "me", now));
        assert!(!lease_valid(&lease("me", 980), "me", now), "expired by this clock");
        assert!(!lease_valid(&lease("other", 999), "me", now), "held by another replica");
        assert!(!lease_valid(&serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap(), "me", now));
    }

    #[test]
    fn a_guard_stops_the_moment_the_manager_sees_the_lease_lost() {
        let (tx, rx) = watch::channel(true);
        let g = LeaseGuard::new(LeaseRef { namespace: "n".into(), name: "l".into(), identity: "me".into() }, rx);
        assert!(g.leading());
        tx.send(false).unwrap();
        assert!(!g.leading());
        assert!(LeaseGuard::unguarded().leading());
    }
}
