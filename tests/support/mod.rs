//! Real servers for integration tests: etcd from Debian's packages, an S3-compatible
//! store. Each gets free ports and a temp dir; each is killed when its handle drops,
//! including when a test panics.
#![allow(dead_code)]

pub mod etcd;
pub mod ports;
pub mod s3;
