//! The one controller runner: every controller's watches run through [`run`], its passes
//! through [`metered`], and its errors implement [`PassError`], so each controller
//! writes only its observe -> plan -> act -> status.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryFuture};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

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
}

/// How long a controller waits before it tries a failed pass again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs `controller` with `reconcile` until `shutdown` resolves: one error policy (log the
/// step and category, try again after [`RETRY_AFTER`]) for every controller.
pub async fn run<K, Ctx, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Ctx>,
    reconcile: F,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Eq + Hash + Clone + Unpin,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: TryFuture<Ok = Action> + Send + 'static,
    Fut::Error: PassError,
{
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
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
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
