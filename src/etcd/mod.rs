//! Everything etcd-pilot asks of etcd, through the v3 API (`etcd-client`).
//!
//! Cluster-wide calls (member list and changes, compaction, alarms) go to the first
//! endpoint that answers; calls about one member (status, defragment, snapshot, health)
//! go through a client of that member's endpoint alone, because etcd answers them for
//! the member it reaches, and a balancing client would pick one at random.

mod admin;
pub mod bbolt;
mod error;
pub mod probe;
pub mod snapshot;
mod types;

pub use admin::{EtcdAdmin, count_at};
pub use error::{EtcdError, Refusal};
pub use types::{AdminConfig, Alarm, AlarmKind, EndpointStatus, Member, Snapshot, TlsMaterial};

/// Formats a member id the way etcdctl prints it.
pub fn member_id_hex(id: u64) -> String {
    format!("{id:x}")
}
