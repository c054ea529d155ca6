//! What the controllers share, beneath them: the names of a cluster's objects, its
//! certificates' Secrets and the way to its etcd, a snapshot into a store, cron slots.
//! Controllers import from here and from `runtime`, `etcd`, `api`, never from each other.

pub mod cron;
pub mod names;
pub mod secrets;
pub mod snapshot;
