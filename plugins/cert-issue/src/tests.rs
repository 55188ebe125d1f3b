//! Native tests through `opal_sdk::testing`: real files in a temp directory,
//! a real CA made here, no wasm runtime. The end-to-end test in
//! `tests/cert_issue.rs` runs the same plugin in a server and checks the
//! certificates with an independent X.509 parser.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use opal_sdk::serde_json::{Value, json};
use opal_sdk::testing::{self, Harness};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, profile::cabf::Root};
use x509_cert::der::{DecodePem, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfo;
use x509_cert::time::Validity;

use super::*;

const CA_NAME: &str = "CN=Opal Test CA,O=Opal Tests,C=US";

/// Writes a self-signed P-256 CA valid for `days` into `dir` as ca.crt.pem and
/// ca.key.pem (the key from `key`, or a fresh one).
fn make_ca(dir: &Path, days: u64, key: Option<&SigningKey>) -> SigningKey {
    let key = key.cloned().unwrap_or_else(|| SigningKey::try_generate().unwrap());
    let profile = Root::new(false, Name::from_str(CA_NAME).unwrap()).unwrap();
    let spki = SubjectPublicKeyInfo::from_key(key.verifying_key()).unwrap();
    let validity = Validity::from_now(Duration::from_secs(days * 86_400)).unwrap();
    let builder = CertificateBuilder::new(profile, SerialNumber::from(1u32), validity, spki).unwrap();
    let cert = builder.build::<_, DerSignature>(&key).unwrap();
    std::fs::write(dir.join("ca.crt.pem"), cert.to_pem(LineEnding::LF).unwrap()).unwrap();
    std::fs::write(dir.join("ca.key.pem"), key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    key
}

fn params(dir: &Path, users: &[&str]) -> Value {
    let path = |name: &str| dir.join(name).display().to_string();
    json!({"users": users, "ca_cert": path("ca.crt.pem"), "ca_key": path("ca.key.pem"), "out_dir": path("out")})
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    make_ca(dir.path(), 3650, None);
    dir
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir.join("out")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn issues_one_certificate_per_user_with_progress_per_certificate() {
    let dir = setup();
    let run = testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice", "bob", "carol"]));
    assert_eq!(
        run.completed().message,
        format!("issued 3 client certificates into {}", dir.path().join("out").display())
    );
    assert_eq!(
        run.progress(),
        [
            (0, "Issuing certificate 1/3 for alice"),
            (33, "Issuing certificate 2/3 for bob"),
            (66, "Issuing certificate 3/3 for carol"),
            (100, "3 of 3 done"),
        ]
    );
    let counts: Vec<_> =
        run.all_details().iter().map(|d| (d["completed_certs"].clone(), d["total_certs"].clone())).collect();
    assert_eq!(counts, [(json!(0), json!(3)), (json!(1), json!(3)), (json!(2), json!(3)), (json!(3), json!(3))]);
    assert_eq!(
        files(dir.path()),
        ["alice.crt.pem", "alice.key.pem", "bob.crt.pem", "bob.key.pem", "carol.crt.pem", "carol.key.pem"]
    );
    let pem = std::fs::read(dir.path().join("out/bob.crt.pem")).unwrap();
    let cert = Certificate::from_pem(&pem).unwrap();
    assert_eq!(cert.tbs_certificate().subject().to_string(), "CN=bob");
    assert_eq!(cert.tbs_certificate().issuer().to_string(), CA_NAME);
    let key = std::fs::read_to_string(dir.path().join("out/bob.key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    assert_eq!(run.logs().len(), 4, "one line to start, one per certificate: {run}");
}

#[test]
fn a_cancel_stops_between_certificates() {
    let dir = setup();
    let run = Harness::new()
        .cancel_after_progress(2)
        .run::<CertIssue>("tak-1", params(dir.path(), &["alice", "bob", "carol", "dave"]));
    run.assert_cancelled();
    assert_eq!(files(dir.path()), ["alice.crt.pem", "alice.key.pem"], "bob was never started");
    assert_eq!(run.details(), Some(&json!({"completed_certs": 1, "total_certs": 4})));
    assert!(run.logs().contains(&(Level::Warn, "cancelled after issuing 1 of 4 certificates")), "{run}");
}

#[test]
fn an_existing_file_fails_that_user_and_leaves_it_alone() {
    let dir = setup();
    std::fs::write(dir.path().join("out/carol.crt.pem"), "keep me").unwrap();
    let run = testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice", "bob", "carol", "dave"]));
    let out = dir.path().join("out");
    assert_eq!(
        run.failed(),
        format!(
            "carol: {} already exists (set overwrite to replace it) (2 of 4 issued before it)",
            out.join("carol.crt.pem").display()
        )
    );
    assert_eq!(files(dir.path()), ["alice.crt.pem", "alice.key.pem", "bob.crt.pem", "bob.key.pem", "carol.crt.pem"]);
    assert_eq!(std::fs::read_to_string(out.join("carol.crt.pem")).unwrap(), "keep me");
    assert_eq!(run.details(), Some(&json!({"completed_certs": 2, "total_certs": 4})));

    let mut again = params(dir.path(), &["carol"]);
    again["overwrite"] = json!(true);
    testing::run::<CertIssue>("tak-1", again).completed();
    assert!(std::fs::read_to_string(out.join("carol.crt.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn a_key_that_does_not_match_the_ca_fails_before_issuing() {
    let dir = setup();
    let other = SigningKey::try_generate().unwrap();
    std::fs::write(dir.path().join("ca.key.pem"), other.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let run = testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice"]));
    assert!(run.failed().contains("does not belong to the CA certificate"), "{run}");
    assert!(files(dir.path()).is_empty());
    assert!(run.progress().is_empty(), "nothing was issued: {run}");
}

#[test]
fn a_sec1_ca_key_works_too() {
    let dir = setup();
    let key = make_ca(dir.path(), 3650, None);
    let sec1 = p256::SecretKey::from(key.as_nonzero_scalar()).to_sec1_pem(LineEnding::LF).unwrap();
    std::fs::write(dir.path().join("ca.key.pem"), sec1.as_bytes()).unwrap();
    testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice"])).completed();
}

#[test]
fn unreadable_or_unusable_ca_files_fail_clearly() {
    let dir = setup();
    let mut p = params(dir.path(), &["alice"]);
    p["ca_cert"] = json!(dir.path().join("missing.pem").display().to_string());
    let run = testing::run::<CertIssue>("tak-1", p);
    assert!(run.failed().starts_with("cannot read the CA certificate"), "{run}");
    assert!(run.failed().contains("is its directory granted to cert-issue?"), "{run}");

    std::fs::write(dir.path().join("ca.key.pem"), "-----BEGIN ENCRYPTED PRIVATE KEY-----\n").unwrap();
    let run = testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice"]));
    assert!(run.failed().contains("the key is encrypted"), "{run}");

    std::fs::write(dir.path().join("ca.crt.pem"), "not a certificate").unwrap();
    let run = testing::run::<CertIssue>("tak-1", params(dir.path(), &["alice"]));
    assert!(run.failed().contains("is not a PEM X.509 certificate"), "{run}");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn certificates_may_not_outlive_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    make_ca(dir.path(), 30, None);
    let mut p = params(dir.path(), &["alice"]);
    p["validity_days"] = json!(365);
    let run = testing::run::<CertIssue>("tak-1", p);
    let errors = run.invalid_params();
    assert_eq!(errors[0].field, "validity_days");
    assert!(errors[0].message.contains("would outlive the CA certificate"), "{errors:?}");
}

#[test]
fn params_are_checked_field_by_field() {
    let run = testing::run::<CertIssue>(
        "tak-1",
        json!({"users": ["ok", "a/b", "OK"], "validity_days": 0, "ca_cert": "ca.pem", "out_dir": "out"}),
    );
    let fields: Vec<&str> = run.invalid_params().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["users/1", "users/2", "validity_days", "ca_cert", "out_dir"]);
    let run = testing::run::<CertIssue>("tak-1", json!({"users": []}));
    assert_eq!(run.invalid_params(), [FieldError::new("users", "at least one user is needed")]);
    let run = testing::run::<CertIssue>("tak-1", json!({"users": ["a"], "colour": "red"}));
    assert!(run.invalid_params()[0].message.contains("unknown field `colour`"), "{run}");
    let schema = testing::schema::<CertIssue>();
    assert_eq!(schema["properties"]["users"]["minItems"], 1);
    assert_eq!(schema["properties"]["validity_days"]["maximum"], 3650);
    assert_eq!(schema["required"], json!(["users"]));
}
