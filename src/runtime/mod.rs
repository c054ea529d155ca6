//! What every controller shares: one Kubernetes client, one metrics registry, one
//! leader-election guard, Events, server-side apply helpers, and the per-cluster
//! operation slot. The manager builds one [`Runtime`] and hands it to each controller;
//! a controller keeps only its own memory and settings beside it.

pub mod events;
#[cfg(test)]
pub mod fake_api;
pub mod kube_ops;
pub mod lease;
pub mod operation;
pub mod runner;
pub mod s3;

use std::sync::Arc;

use kube::Client;

use crate::metrics::Metrics;
pub use events::EventType;
pub use lease::{LeaseGuard, LeaseRef};

/// Shared by every controller of one manager.
pub struct Runtime {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// This replica, as the `reportingInstance` of Events and the holder of operations.
    pub instance: String,
    /// The Lease this replica must hold to act; `None` in tests that run one replica.
    pub lease: LeaseGuard,
}

impl Runtime {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: String, lease: LeaseGuard) -> Self {
        Self { client, metrics, instance, lease }
    }
}
