//! The bundled `cert-issue` plugin in a real server: a CA made here, natively,
//! granted read-only at `/ca` and an output directory read-write at `/out`;
//! the certificates it writes are checked with `x509-parser` (a parser
//! independent of the `x509-cert` that wrote them) and their signatures with
//! the CA's public key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opal_host::config::{PluginGrants, TypePolicy};
use opal_host::sandbox::grants::DirGrant;
use opal_tests::TestServer;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use x509_cert::builder::{Builder, CertificateBuilder, profile::cabf::Root};
use x509_cert::der::EncodePem;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfo;
use x509_cert::time::Validity;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// A CA directory, an output directory and the CA's key.
struct Dirs {
    ca: PathBuf,
    out: PathBuf,
    key: SigningKey,
}

/// Makes a self-signed P-256 CA (`ca.crt.pem`, `ca.key.pem`) and an empty output directory.
fn setup(dir: &Path) -> Dirs {
    let (ca, out) = (dir.join("ca"), dir.join("out"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let key = SigningKey::try_generate().unwrap();
    let profile = Root::new(false, Name::from_str("CN=Field CA,O=Opal Tests,C=US").unwrap()).unwrap();
    let spki = SubjectPublicKeyInfo::from_key(key.verifying_key()).unwrap();
    let validity = Validity::from_now(Duration::from_secs(10 * 365 * 86_400)).unwrap();
    let builder = CertificateBuilder::new(profile, SerialNumber::from(7u32), validity, spki).unwrap();
    let cert = builder.build::<_, DerSignature>(&key).unwrap();
    std::fs::write(ca.join("ca.crt.pem"), cert.to_pem(LineEnding::LF).unwrap()).unwrap();
    std::fs::write(ca.join("ca.key.pem"), key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    Dirs { ca, out, key }
}

/// A server whose `cert-issue` may read `ca` and write `out` (`None`: no CA grant).
async fn start_server(dir: &Path, ca: Option<&Path>, out: &Path) -> TestServer {
    let mut dirs = vec![DirGrant { host: out.to_owned(), guest: "/out".into(), writable: true }];
    dirs.extend(ca.map(|ca| DirGrant { host: ca.to_owned(), guest: "/ca".into(), writable: false }));
    let grants = PluginGrants { dirs, ..Default::default() };
    TestServer::start_with(dir, |c| {
        c.progress_window = Duration::from_millis(1);
        c.types.insert("cert-issue".into(), TypePolicy { grants, ..Default::default() });
    })
    .await
}

async fn issue(server: &TestServer, target: &str, params: Value) -> (String, Value) {
    let reply =
        server.post("/api/v1/operations", &json!({"type": "cert-issue", "target": target, "params": params})).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let op = server.wait_terminal(&id).await;
    (id, op)
}

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_verifiable_client_certificates_with_progress_per_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = setup(dir.path());
    let server = start_server(dir.path(), Some(&dirs.ca), &dirs.out).await;
    let before = SystemTime::now();
    let (id, op) = issue(&server, "tak-1", json!({"users": USERS, "validity_days": 30})).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["message"], "issued 5 client certificates into /out");
    assert_eq!(op["details"], json!({"completed_certs": 5, "total_certs": 5}));

    // Per certificate, through the server. Log lines are never throttled, so
    // the stored events hold one "issued" line per certificate, in the
    // users' order.
    let events = server.get(&format!("/api/v1/operations/{id}/events")).await.body["events"].clone();
    let events = events.as_array().unwrap();
    let issued_logs: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["event"] == "operation.log")
        .filter_map(|e| Some((e["seq"].as_u64().unwrap(), e["message"].as_str()?)))
        .filter(|(_, line)| line.starts_with("issued /out/"))
        .collect();
    let issued_users: Vec<&str> = issued_logs
        .iter()
        .map(|(_, line)| {
            let rest = line.strip_prefix("issued /out/").unwrap();
            let (user, serial) = rest.split_once(".crt.pem: serial ").unwrap_or_else(|| panic!("{line:?}"));
            assert!(!serial.is_empty(), "{line:?} names the serial");
            user
        })
        .collect();
    assert_eq!(issued_users, USERS, "one log line per certificate, in order: {issued_logs:?}");

    // Progress: seed 000's messages, in order (the throttle may coalesce
    // some, and the last report may travel in the completed event), ending
    // at 100 with every certificate counted.
    let progress: Vec<(u64, String, Value)> = events
        .iter()
        .filter(|e| e["event"] == "operation.progress")
        .map(|e| {
            let op = &e["operation"];
            (e["seq"].as_u64().unwrap(), op["message"].as_str().unwrap().to_owned(), op["details"].clone())
        })
        .collect();
    let mut expected: Vec<String> =
        USERS.iter().enumerate().map(|(i, u)| format!("Issuing certificate {}/5 for {u}", i + 1)).collect();
    expected.push("5 of 5 done".into());
    let mut rest = expected.iter();
    for (_, message, _) in &progress {
        assert!(rest.any(|want| want == message), "{message:?} unexpected or out of order in {progress:?}");
    }
    assert_eq!(op["progress"], 100, "{op}");
    // The counts the stream showed, the terminal event's last: more than one
    // (one coalesced "5 of 5" would not do), never backwards, ending at the
    // total. With a 1 ms window the throttle publishes at the first yield of
    // the run (alice's file writes), while the count is still 0.
    let terminal = events.last().unwrap();
    assert_eq!(terminal["event"], "operation.completed", "{terminal}");
    let mut counted: Vec<u64> = progress.iter().map(|p| p.2["completed_certs"].as_u64().unwrap()).collect();
    counted.push(terminal["operation"]["details"]["completed_certs"].as_u64().unwrap());
    assert!(counted.windows(2).all(|w| w[0] <= w[1]), "completed_certs went backwards: {counted:?}");
    counted.dedup();
    assert!(counted.len() > 1, "progress coalesced into one count: {counted:?} in {progress:?}");
    assert_eq!(counted.last(), Some(&5), "{counted:?}");
    // And each count is told no sooner than the certificates it counts were
    // issued: a progress event saying k done comes after the k-th "issued" line.
    for (seq, message, details) in &progress {
        let done = details["completed_certs"].as_u64().unwrap() as usize;
        let logged = issued_logs.iter().filter(|(at, _)| at < seq).count();
        assert!(logged >= done, "{message:?} (seq {seq}) says {done} done, but only {logged} were logged before it");
    }

    // The files, checked with an independent parser and the CA's key.
    let ca_der = pem_der(&dirs.ca.join("ca.crt.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let ca_key_id = match ca.get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER) {
        Ok(Some(ext)) => match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => id.0.to_vec(),
            other => panic!("{other:?}"),
        },
        other => panic!("the test CA has a subjectKeyIdentifier: {other:?}"),
    };
    // The CA's public key as its certificate states it, read by the independent parser.
    let ca_public = VerifyingKey::from_sec1_bytes(&ca.public_key().subject_public_key.data).unwrap();
    assert_eq!(&ca_public, dirs.key.verifying_key());
    let mut serials = HashSet::new();
    let mut listed = Vec::new();
    for user in USERS {
        listed.extend([format!("{user}.crt.pem"), format!("{user}.key.pem")]);
        let der = pem_der(&dirs.out.join(format!("{user}.crt.pem")));
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cn: Vec<&str> = cert.subject().iter_common_name().map(|cn| cn.as_str().unwrap()).collect();
        assert_eq!(cn, [user], "subject CN");
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw(), "issuer is the CA's subject");
        let (not_before, not_after) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        let (start, now) = (secs(before), secs(SystemTime::now()));
        assert!(not_before <= start && not_before >= start - 3600, "{user}: notBefore {not_before}, start {start}");
        assert!(
            (not_after - (start + 30 * 86_400)).abs() <= (now - start) + 5,
            "{user}: notAfter {not_after} is not 30 days from {start}"
        );
        let eku = cert.extended_key_usage().unwrap().expect("an extendedKeyUsage");
        assert!(eku.value.client_auth && !eku.value.server_auth && !eku.value.any, "{user}: {:?}", eku.value);
        let basic = cert.basic_constraints().unwrap().expect("basicConstraints");
        assert!(!basic.value.ca, "{user} is not a CA");
        assert!(cert.key_usage().unwrap().expect("keyUsage").value.digital_signature());
        match cert.get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER) {
            Ok(Some(ext)) => match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    assert_eq!(aki.key_identifier.as_ref().map(|k| k.0.to_vec()), Some(ca_key_id.clone()))
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{user}: no authorityKeyIdentifier: {other:?}"),
        }
        let signature = DerSignature::from_bytes(&cert.signature_value.data).unwrap();
        ca_public.verify(cert.tbs_certificate.as_ref(), &signature).expect("signed by the CA");
        assert!(serials.insert(cert.raw_serial().to_vec()), "{user}: serial number reused");
        assert!(cert.raw_serial().len() >= 8, "{user}: at least 64 bits of serial");

        // The key file holds the private half of the certificate's key.
        let key = std::fs::read_to_string(dirs.out.join(format!("{user}.key.pem"))).unwrap();
        let key = SigningKey::from_pkcs8_pem(&key).unwrap();
        let spki = key.verifying_key().to_public_key_der().unwrap();
        assert_eq!(spki.as_bytes(), cert.public_key().raw, "{user}: key and certificate belong together");
    }
    listed.sort();
    assert_eq!(files(&dirs.out), listed, "two files per user, nothing else");
    server.stop().await;
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_clear_and_leave_no_files_for_the_failing_user() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = setup(dir.path());
    let server = start_server(dir.path(), Some(&dirs.ca), &dirs.out).await;

    // Bad params: every problem, by field, before anything runs.
    let reply = server
        .post(
            "/api/v1/operations",
            &json!({"type": "cert-issue", "target": "tak-1", "params": {"users": ["ann", "../root", "Ann"]}}),
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let errors: Vec<(&str, &str)> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("params/users/1", "\"../root\" must start with a letter or a digit"),
            ("params/users/2", "\"Ann\" is a duplicate of users/0"),
        ]
    );
    let reply = server
        .post("/api/v1/operations", &json!({"type": "cert-issue", "target": "tak-1", "params": {"users": []}}))
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.body["errors"][0]["field"], "params/users", "{reply:?}");

    // A user whose file is already there: the users before it are issued,
    // its own file is untouched, and nothing half-written is left.
    std::fs::write(dirs.out.join("carol.key.pem"), "an older key").unwrap();
    let (_, op) = issue(&server, "tak-1", json!({"users": ["alice", "bob", "carol", "dave"]})).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "plugin_error");
    assert_eq!(
        op["error"]["message"],
        "carol: /out/carol.key.pem already exists (set overwrite to replace it) (2 of 4 issued before it)"
    );
    assert_eq!(op["details"], json!({"completed_certs": 2, "total_certs": 4}));
    assert_eq!(files(&dirs.out), ["alice.crt.pem", "alice.key.pem", "bob.crt.pem", "bob.key.pem", "carol.key.pem"]);
    assert_eq!(std::fs::read_to_string(dirs.out.join("carol.key.pem")).unwrap(), "an older key");

    // A key that is not the CA certificate's: refused before anything is issued.
    let other = SigningKey::try_generate().unwrap();
    std::fs::write(dirs.ca.join("other.key.pem"), other.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let (_, op) = issue(&server, "tak-2", json!({"users": ["zoe"], "ca_key": "/ca/other.key.pem"})).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(
        op["error"]["message"],
        "the CA key /ca/other.key.pem does not belong to the CA certificate /ca/ca.crt.pem (their public keys differ)"
    );
    assert!(!dirs.out.join("zoe.crt.pem").exists() && !dirs.out.join("zoe.key.pem").exists());
    server.stop().await;

    // No grant for the CA's directory: the plugin cannot see it, and says where to look.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let server = start_server(dir.path(), None, &out).await;
    let (_, op) = issue(&server, "tak-1", json!({"users": ["alice"]})).await;
    assert_eq!(op["status"], "failed", "{op}");
    let message = op["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("cannot read the CA certificate /ca/ca.crt.pem: "), "{message}");
    assert!(message.ends_with("(is its directory granted to cert-issue? see docs/operations.md)"), "{message}");
    assert!(files(&out).is_empty());
    server.stop().await;
}
