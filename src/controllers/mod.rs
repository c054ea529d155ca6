//! One folder per controller, each in the same shape: observe -> pure plan -> act ->
//! status, with one error enum whose variants name the step. What they share (client,
//! Lease guard, Events, apply helpers, metrics, the per-cluster operation slot) is in
//! [`crate::runtime`].

pub mod backup;
pub mod cluster;
pub mod drill;
pub mod restore;
pub mod schedule;
pub mod stream;
pub mod wiring;
