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

/// Whether this replica may act.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    lease: Option<LeaseRef>,
    /// The manager's view of leadership: false from the moment the Lease is lost.
    leading: watch::Receiver<bool>,
}

impl LeaseGuard {
    pub fn new(lease: LeaseRef, leading: watch::Receiver<bool>) -> Self {
        Self { lease: Some(lease), leading }
    }

    /// No Lease: one replica, always acting (tests, single-replica tools).
    pub fn unguarded() -> Self {
        let (tx, rx) = watch::channel(true);
        // The sender may go: the receiver keeps the last value.
        drop(tx);
        Self { lease: None, leading: rx }
    }

    /// The manager still says this replica leads.
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Reads the Lease afresh: held by this replica and unexpired by the local clock,
    /// and the manager has not seen it lost.
    pub async fn holds(&self, client: &Client) -> Result<bool, kube::Error> {
        if !self.leading() {
            return Ok(false);
        }
        let Some(l) = &self.lease else { return Ok(true) };
        let api: Api<Lease> = Api::namespaced(client.clone(), &l.namespace);
        let lease = api.get_opt(&l.name).await?;
        Ok(lease.is_some_and(|lease| lease_valid(&lease, &l.identity, jiff::Timestamp::now())))
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
