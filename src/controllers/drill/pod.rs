//! The drill pod: the operator image running `etcd-pilot verify-backup` on a volume of
//! its own (an emptyDir, gone with the pod), with the backup's S3 credentials and
//! encryption keys as a restored member's seed gets them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::plan::POD_DEADLINE_SECS;
use crate::api::EtcdBackupSchedule;
use crate::seed::SeedSource;

/// Label of drill pods (what the controller watches).
pub const LABEL: &str = "etcdpilot.io/drill";
/// Annotation of a drill pod: the EtcdBackup it restores.
pub const BACKUP_ANNOTATION: &str = "etcdpilot.io/drill-backup";
/// Where the pod restores (its emptyDir).
const DIR: &str = "/drill";
/// The non-root user the pod runs as (the image's "nonroot").
const UID: i64 = 65532;

/// The drill pod of a schedule: one name, so never two drills at once.
pub fn name(schedule: &str) -> String {
    let suffix = "-drill";
    let base: String = schedule.chars().take(253 - suffix.len()).collect();
    format!("{base}{suffix}")
}

pub fn build(s: &EtcdBackupSchedule, backup: &str, source: &SeedSource, image: &str) -> Pod {
    let (mut volumes, key_mounts) = crate::seed::key_volumes(source, "key");
    volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let mounts =
        std::iter::once(VolumeMount { name: "scratch".into(), mount_path: DIR.into(), ..VolumeMount::default() })
            .chain(key_mounts)
            .collect();
    let container = Container {
        name: "drill".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/usr/local/bin/etcd-pilot".into()]),
        args: Some(vec!["verify-backup".into(), format!("--dir={DIR}/work")]),
        env: Some(crate::seed::pod_env(source)),
        volume_mounts: Some(mounts),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        // A crash leaves its log's tail as the message the controller reads.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name(&s.name_any())),
            namespace: s.namespace(),
            labels: Some(BTreeMap::from([(LABEL.to_string(), "true".to_string())])),
            annotations: Some(BTreeMap::from([(BACKUP_ANNOTATION.to_string(), backup.to_string())])),
            owner_references: s.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(POD_DEADLINE_SECS),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            containers: vec![container],
            volumes: Some(volumes),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(UID),
                run_as_group: Some(UID),
                fs_group: Some(UID),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The drill a pod runs, from its annotation.
pub fn backup_of(pod: &Pod) -> String {
    pod.meta().annotations.as_ref().and_then(|a| a.get(BACKUP_ANNOTATION)).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EncryptionKey;

    #[test]
    fn the_pod_reads_the_backup_as_a_seed_does_and_keeps_nothing() {
        let s: EtcdBackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
            "metadata": {"name": "nightly", "namespace": "prod", "uid": "u1"},
            "spec": {"clusterName": "main", "schedule": "@daily", "verify": {"schedule": "@weekly"}},
        }))
        .expect("schedule");
        let source = SeedSource {
            restore: String::new(),
            bucket: "b".into(),
            key: "prod/main/x.db".into(),
            sha256: "ab".into(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            credentials_secret: Some(crate::api::S3CredentialsSecret {
                name: "s3".into(),
                access_key_id_key: "id".into(),
                secret_access_key_key: "secret".into(),
                session_token_key: None,
            }),
            bump_revision: 0,
            replaces: None,
            replay: None,
            encryption_keys: vec![EncryptionKey { secret_name: "k".into(), key: "new".into() }],
        };
        let pod = build(&s, "nightly-1", &source, "etcd-pilot:1");
        assert_eq!(pod.name_any(), "nightly-drill");
        assert_eq!(backup_of(&pod), "nightly-1");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let c = &spec.containers[0];
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["ETCD_PILOT_SEED_SOURCE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        let mounts: Vec<&str> = c.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/drill", "/var/run/etcd-pilot/keys/0"]);
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["key-0", "scratch"]);
        assert!(spec.volumes.iter().flatten().any(|v| v.empty_dir.is_some()), "scratch space goes with the pod");
        assert_eq!(name(&"x".repeat(253)).len(), 253);
    }
}
