use super::*;
use crate::api::S3CredentialsSecret;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

#[test]
fn keys_have_no_empty_segments() {
    assert_eq!(
        object_key(Some("/prod/etcd/"), "ns", "main", "20261122T101500Z", "b1"),
        "prod/etcd/ns/main/20261122T101500Z-b1.db"
    );
    assert_eq!(object_key(None, "ns", "main", "s", "b"), "ns/main/s-b.db");
    assert_eq!(object_key(Some(""), "ns", "main", "s", "b"), "ns/main/s-b.db");
}

#[test]
fn hash_objects_are_read_as_sha256sum_writes_them() {
    let h = "ab".repeat(32);
    assert_eq!(parse_hash_line(format!("{h}  x.db\n").as_bytes()), Some(h.clone()));
    assert_eq!(parse_hash_line(h.to_uppercase().as_bytes()), Some(h.clone()));
    assert_eq!(parse_hash_line(b"not a hash  x.db\n"), None);
    assert_eq!(parse_hash_line(format!("{}  x.db", &h[..63]).as_bytes()), None);
    assert_eq!(parse_hash_line(b""), None);
    assert_eq!(hash_key("ns/main/s-b.db"), "ns/main/s-b.db.sha256");
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

#[test]
fn credentials_come_from_the_named_keys() {
    let r = S3CredentialsSecret {
        name: "s3".into(),
        access_key_id_key: "AWS_ACCESS_KEY_ID".into(),
        secret_access_key_key: "AWS_SECRET_ACCESS_KEY".into(),
        session_token_key: None,
    };
    let c = Credentials::from_secret(&secret(&[("AWS_ACCESS_KEY_ID", "ak\n"), ("AWS_SECRET_ACCESS_KEY", "sk")]), &r)
        .unwrap();
    match c {
        Credentials::Static { access_key_id, secret_access_key, session_token } => {
            assert_eq!((access_key_id.as_str(), secret_access_key.as_str(), session_token), ("ak", "sk", None));
        }
        Credentials::DefaultChain => panic!("static expected"),
    }
    let err = Credentials::from_secret(&secret(&[("AWS_ACCESS_KEY_ID", "ak")]), &r).unwrap_err();
    assert_eq!(err.to_string(), "S3 credentials Secret \"s3\" lacks key \"AWS_SECRET_ACCESS_KEY\"");
    let with_token = S3CredentialsSecret { session_token_key: Some("TOKEN".into()), ..r };
    assert!(
        Credentials::from_secret(&secret(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")]), &with_token)
            .is_err()
    );
}

#[test]
fn debug_never_prints_secrets() {
    let c = Credentials::Static { access_key_id: "AK".into(), secret_access_key: "SECRET".into(), session_token: None };
    assert!(!format!("{c:?}").contains("SECRET"));
}
