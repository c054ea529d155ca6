//! The one controller runner: every controller's watches run through [`run`], which
//! lets a pass start only while this replica holds the Lease; its passes count their
//! failures through [`metered`], and its errors implement [`PassError`], so each
//! controller writes only its observe -> plan -> act -> status.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryFuture, TryFutureExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// What a failed pass failed on, beneath its step: the metric's `category` label and
/// the reason of the condition that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// The Kubernetes API (a read or write refused, timed out, or the Lease unreadable).
    Kubernetes,
    /// etcd itself.
    Etcd,
    /// The backup store (S3).
    ObjectStore,
    /// Certificates could not be made or read.
    Certificates,
    /// The user's input cannot be acted on.
    InvalidInput,
}

impl Category {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Category::Kubernetes => "kubernetes",
            Category::Etcd => "etcd",
            Category::ObjectStore => "object-store",
            Category::Certificates => "certificates",
            Category::InvalidInput => "invalid-input",
        }
    }

    /// The reason of a condition reporting a failed pass (`Reconciled=False`).
    pub fn reason(self) -> &'static str {
        match self {
            Category::Kubernetes => "KubernetesError",
            Category::Etcd => "EtcdError",
            Category::ObjectStore => "ObjectStoreError",
            Category::Certificates => "CertificateError",
            Category::InvalidInput => "InvalidInput",
        }
    }
}

/// The error of one controller's pass: its variants name the step that failed.
pub trait PassError: std::error::Error + Send + Sync + 'static {
    /// The step (`observe`, `act`, `status`, ...): the metric's `step` label.
    fn step(&self) -> &'static str;
    /// What the step failed on.
    fn category(&self) -> Category;
    /// The Lease could not be read before the pass (the step `lease`).
    fn lease(error: kube::Error) -> Self
    where
        Self: Sized;
}

/// Which read of the Lease a controller's passes start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRead {
    /// A read shared by the passes of the last moments (see `LeaseGuard::holds`): for
    /// controllers whose destructive steps read it afresh again (their fences).
    Shared,
    /// Read afresh before every pass: for controllers whose passes write data (a
    /// snapshot into the store, a restore's steps) with no later fence.
    Fresh,
}

/// How long a replica that does not hold the Lease waits before it looks again.
pub const NOT_LEADING_RETRY: Duration = Duration::from_secs(5);

/// How long a controller waits before it tries a failed pass again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The controller of `api`'s objects (every change, any resource version), whose cache
/// keeps them without `metadata.managedFields`: no pass reads them, and they are most
/// of a status-heavy object's memory (every field manager's field set, as JSON values),
/// once per cached object and controller (benchmarks.md, cost per cluster).
pub fn controller<K>(api: Api<K>) -> Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Debug + Eq + Hash + Clone + Unpin,
{
    let (reader, writer) = reflector::store();
    let objects = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(objects, reader)
}

/// Runs `controller` with `reconcile` until `shutdown` resolves. One Lease guard (a pass
/// starts only while this replica holds the Lease, read as `lease` says; a replica that
/// does not looks again after [`NOT_LEADING_RETRY`]) and one error policy (log the step
/// and category, try again after [`RETRY_AFTER`]) for every controller.
pub async fn run<K, Ctx, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Ctx>,
    (rt, lease): (Arc<Runtime>, LeaseRead),
    mut reconcile: F,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Eq + Hash + Clone + Unpin,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: TryFuture<Ok = Action> + Send + 'static,
    Fut::Error: PassError,
{
    let guarded = move |obj: Arc<K>, ctx: Arc<Ctx>| {
        let rt = rt.clone();
        let (namespace, object) = (obj.namespace().unwrap_or_default(), obj.name_any());
        // Not polled unless the Lease is found held.
        let pass = TryFutureExt::into_future(reconcile(obj, ctx));
        async move { guarded(&rt, lease, name, (&namespace, &object), pass).await }
    };
    let error_policy = move |obj: Arc<K>, error: &Fut::Error, _: Arc<Ctx>| {
        tracing::warn!(
            controller = name,
            object = %obj.name_any(),
            namespace = ?obj.namespace(),
            step = error.step(),
            category = error.category().label(),
            %error,
            "pass failed; retrying"
        );
        Action::requeue(RETRY_AFTER)
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(guarded, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
}

/// One pass, run only if this replica holds the Lease (read as `lease` says): else a
/// look again after [`NOT_LEADING_RETRY`], or the step `lease` failed.
pub async fn guarded<E: PassError>(
    rt: &Runtime,
    lease: LeaseRead,
    controller: &'static str,
    (namespace, object): (&str, &str),
    pass: impl std::future::Future<Output = Result<Action, E>>,
) -> Result<Action, E> {
    match held(rt, lease).await {
        Ok(true) => pass.await,
        Ok(false) => {
            tracing::debug!(controller, object, namespace, "not holding the leader-election Lease: not acting");
            Ok(Action::requeue(NOT_LEADING_RETRY))
        }
        Err(e) => {
            rt.metrics.count_error(namespace, object, controller, "lease", Category::Kubernetes.label());
            Err(E::lease(e))
        }
    }
}

/// Whether this replica holds the Lease, read as `lease` says.
pub async fn held(rt: &Runtime, lease: LeaseRead) -> Result<bool, kube::Error> {
    match lease {
        LeaseRead::Shared => rt.lease.holds(&rt.client).await,
        LeaseRead::Fresh => rt.lease.holds_fresh(&rt.client).await,
    }
}

/// Runs one pass and counts its failure by controller, step and category.
pub async fn metered<E: PassError>(
    metrics: &Metrics,
    controller: &'static str,
    namespace: &str,
    cluster: &str,
    pass: impl std::future::Future<Output = Result<Action, E>>,
) -> Result<Action, E> {
    let result = pass.await;
    if let Err(e) = &result {
        metrics.count_error(namespace, cluster, controller, e.step(), e.category().label());
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::runtime::fake_api::{self, NS};
    use crate::runtime::lease::{LeaseGuard, LeaseRef};

    #[derive(Debug, thiserror::Error)]
    #[error("test")]
    struct TestError;

    impl PassError for TestError {
        fn step(&self) -> &'static str {
            "test"
        }
        fn category(&self) -> Category {
            Category::Kubernetes
        }
        fn lease(_: kube::Error) -> Self {
            TestError
        }
    }

    fn lease(holder: &str) -> serde_json::Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "etcd-pilot", "namespace": NS},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "renewTime": jiff::Timestamp::now().to_string()}})
    }

    /// Whether the pass ran, and what the guard answered, for each Lease read.
    async fn run_guarded(holder: &str, leading: bool, read: LeaseRead) -> (bool, Result<Action, TestError>) {
        let (client, _store) = fake_api::client(vec![("leases", "etcd-pilot", lease(holder))]);
        let (_tx, rx) = tokio::sync::watch::channel(leading);
        let guard =
            LeaseGuard::new(LeaseRef { namespace: NS.into(), name: "etcd-pilot".into(), identity: "me".into() }, rx);
        let rt = Runtime::new(client, Arc::new(Metrics::default()), "me".into(), guard);
        let ran = AtomicBool::new(false);
        let pass = async {
            ran.store(true, Ordering::SeqCst);
            Ok(Action::await_change())
        };
        let answer = guarded(&rt, read, "test", (NS, "main"), pass).await;
        (ran.load(Ordering::SeqCst), answer)
    }

    #[tokio::test]
    async fn a_pass_runs_only_while_this_replica_holds_the_lease() {
        let table = [
            // holder, the manager says leading, read: pass runs
            ("me", true, LeaseRead::Shared, true),
            ("me", true, LeaseRead::Fresh, true),
            ("other", true, LeaseRead::Shared, false),
            ("other", true, LeaseRead::Fresh, false),
            // The manager has seen the Lease lost: no read can make it held.
            ("me", false, LeaseRead::Shared, false),
            ("me", false, LeaseRead::Fresh, false),
        ];
        for (holder, leading, read, runs) in table {
            let (ran, answer) = run_guarded(holder, leading, read).await;
            assert_eq!(ran, runs, "holder {holder}, leading {leading}, {read:?}");
            let answer = answer.expect("the Lease is readable");
            let wanted = if runs { Action::await_change() } else { Action::requeue(NOT_LEADING_RETRY) };
            assert_eq!(answer, wanted, "holder {holder}, leading {leading}, {read:?}");
        }
    }
}
