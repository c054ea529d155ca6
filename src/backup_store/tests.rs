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

mod server_side_encryption {
    use std::sync::{Arc, Mutex};

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::api::{ServerSideEncryption, SseType};

    /// One request as the store sent it: what, and its server-side encryption headers.
    #[derive(Clone, Debug, PartialEq)]
    struct Sent {
        op: &'static str,
        sse: Option<String>,
        kms: Option<String>,
    }

    /// An S3 endpoint that records every request and answers as S3 would, just enough.
    #[derive(Clone, Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<Sent>>>);

    impl HttpConnector for Recorder {
        fn call(&self, req: HttpRequest) -> HttpConnectorFuture {
            let uri = req.uri().to_string();
            let header = |h: &str| req.headers().get(h).map(str::to_string);
            let op = match (req.method(), uri.contains("uploads"), uri.contains("uploadId")) {
                ("POST", true, _) => "CreateMultipartUpload",
                ("POST", _, true) => "CompleteMultipartUpload",
                ("PUT", _, true) => "UploadPart",
                ("PUT", _, _) => "PutObject",
                _ => "other",
            };
            let sent = Sent {
                op,
                sse: header("x-amz-server-side-encryption"),
                kms: header("x-amz-server-side-encryption-aws-kms-key-id"),
            };
            self.0.lock().expect("recorder").push(sent);
            let body = match op {
                "CreateMultipartUpload" => {
                    "<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
                }
                "CompleteMultipartUpload" => "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>",
                _ => "",
            };
            let mut resp = HttpResponse::new(200u16.try_into().expect("status"), SdkBody::from(body));
            resp.headers_mut().insert("ETag", "\"e\"");
            HttpConnectorFuture::ready(Ok(resp))
        }
    }

    impl HttpClient for Recorder {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    /// What the store sends for a small object (one PUT) and a large one (multipart), with
    /// `sse` asked for.
    async fn sent(sse: Option<ServerSideEncryption>) -> Vec<Sent> {
        let recorder = Recorder::default();
        let config = StoreConfig {
            part_size: MIN_PART_SIZE,
            sse,
            ..StoreConfig::s3_compatible("http://s3.test", "bkt", "ak", "sk")
        };
        let store = BackupStore::with_http(config, recorder.clone()).await.expect("store");
        for size in [1024, MIN_PART_SIZE + 1024] {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size]))]);
            store.upload(&format!("o-{size}.db"), body, HashMap::new()).await.expect("upload");
        }
        recorder.0.lock().map(|sent| sent.clone()).expect("recorder")
    }

    #[tokio::test]
    async fn every_object_written_asks_for_it_and_parts_do_not() {
        let none = |op| Sent { op, sse: None, kms: None };
        let with = |op, sse: &str, kms: Option<&str>| Sent { op, sse: Some(sse.into()), kms: kms.map(Into::into) };
        let cases: Vec<(Option<ServerSideEncryption>, Vec<Sent>)> = vec![
            (
                None,
                vec![
                    none("PutObject"),
                    none("PutObject"),
                    none("CreateMultipartUpload"),
                    none("UploadPart"),
                    none("UploadPart"),
                    none("CompleteMultipartUpload"),
                    none("PutObject"),
                ],
            ),
            (
                Some(ServerSideEncryption { kind: SseType::Aes256, kms_key_id: None }),
                vec![
                    with("PutObject", "AES256", None),
                    with("PutObject", "AES256", None),
                    with("CreateMultipartUpload", "AES256", None),
                    none("UploadPart"),
                    none("UploadPart"),
                    none("CompleteMultipartUpload"),
                    with("PutObject", "AES256", None),
                ],
            ),
            (
                Some(ServerSideEncryption { kind: SseType::AwsKms, kms_key_id: Some("alias/etcd".into()) }),
                vec![
                    with("PutObject", "aws:kms", Some("alias/etcd")),
                    with("PutObject", "aws:kms", Some("alias/etcd")),
                    with("CreateMultipartUpload", "aws:kms", Some("alias/etcd")),
                    none("UploadPart"),
                    none("UploadPart"),
                    none("CompleteMultipartUpload"),
                    with("PutObject", "aws:kms", Some("alias/etcd")),
                ],
            ),
            (
                // The bucket's default KMS key.
                Some(ServerSideEncryption { kind: SseType::AwsKms, kms_key_id: None }),
                vec![
                    with("PutObject", "aws:kms", None),
                    with("PutObject", "aws:kms", None),
                    with("CreateMultipartUpload", "aws:kms", None),
                    none("UploadPart"),
                    none("UploadPart"),
                    none("CompleteMultipartUpload"),
                    with("PutObject", "aws:kms", None),
                ],
            ),
        ];
        for (sse, want) in cases {
            assert_eq!(sent(sse.clone()).await, want, "{sse:?}");
        }
    }

    #[test]
    fn a_kms_key_with_aes256_is_refused() {
        let s = ServerSideEncryption { kind: SseType::Aes256, kms_key_id: Some("k".into()) };
        assert!(s.problem().expect("refused").contains("aws:kms"));
        assert_eq!(ServerSideEncryption { kind: SseType::AwsKms, kms_key_id: Some("k".into()) }.problem(), None);
        let json = r#"{"type": "aws:kms", "kmsKeyId": "alias/etcd"}"#;
        let parsed: ServerSideEncryption = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed.kind, SseType::AwsKms);
    }
}
