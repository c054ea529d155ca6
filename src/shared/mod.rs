//! What the controllers share, beneath them: the names of a cluster's objects, its
//! certificates' Secrets and the way to its etcd, a snapshot into a store, cron slots,
//! and the continuous backup's segments and their index (the window a restore reaches).
//! Controllers import from here and from `runtime`, `etcd`, `api`, never from each other.

pub mod cron;
pub mod names;
pub mod secrets;
pub mod segment;
pub mod snapshot;
pub mod stream;
pub mod window;
