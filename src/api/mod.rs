//! The `etcdpilot.io/v1alpha1` API: four kinds designed as one whole.
//!
//! Doc comments on fields are the `kubectl explain` text users read, so they say what a
//! field does and what its default is. What a schema cannot express (a version jump, a
//! live topology change) is checked in [`validation`] and enforced by the reconcilers.

pub mod backup;
pub mod cluster;
pub mod common;
pub mod restore;
pub mod schedule;
pub mod validation;

pub use backup::{EtcdBackup, EtcdBackupSpec, EtcdBackupStatus};
pub use cluster::{EtcdCluster, EtcdClusterSpec, EtcdClusterStatus};
pub use common::*;
pub use restore::{EtcdRestore, EtcdRestoreSpec, EtcdRestoreStatus};
pub use schedule::{EtcdBackupSchedule, EtcdBackupScheduleSpec, EtcdBackupScheduleStatus};

/// The API group of every etcd-pilot kind.
pub const GROUP: &str = "etcdpilot.io";
/// The only served (and stored) version.
pub const VERSION: &str = "v1alpha1";
