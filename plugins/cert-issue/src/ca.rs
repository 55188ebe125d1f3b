//! The issuing CA: its certificate and private key, read from PEM files in a
//! granted directory and checked before anything is issued, so a wrong file
//! fails the operation up front instead of after half the users.
//!
//! Only ECDSA P-256 CAs are supported: that is what the pure-Rust signer here
//! does (see the crate's top comment for why this stack).

use std::path::Path;
use std::time::SystemTime;

use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use x509_cert::Certificate;
use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::spki::SubjectPublicKeyInfo;

/// `id-ecPublicKey` (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1`, a.k.a. P-256 (RFC 5480).
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// A CA ready to sign: its name, key, key identifier and expiry.
pub(crate) struct Ca {
    /// The issuer name every issued certificate carries: the CA's subject.
    pub(crate) name: Name,
    /// The CA's private key.
    pub(crate) key: SigningKey,
    /// What the issued certificates' authorityKeyIdentifier says: the CA's
    /// own subjectKeyIdentifier when it has one, so verifiers that chain by
    /// key identifier (OpenSSL does) find it, else the RFC 5280 SHA-1 of its key.
    pub(crate) key_id: OctetString,
    /// When the CA certificate expires; nothing it issues may outlive it.
    pub(crate) not_after: SystemTime,
}

impl Ca {
    /// Reads and checks the CA certificate at `cert_path` and its key at `key_path`.
    pub(crate) fn load(cert_path: &str, key_path: &str) -> Result<Ca, String> {
        let cert_pem = read(cert_path, "CA certificate")?;
        let key_pem = read(key_path, "CA key")?;
        let cert = Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| format!("the CA certificate {cert_path} is not a PEM X.509 certificate: {e}"))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != EC_PUBLIC_KEY || curve != Some(SECP256R1) {
            return Err(format!(
                "the CA certificate {cert_path} has a {} key; cert-issue signs with ECDSA P-256 CAs only",
                key_kind(spki.algorithm.oid, curve)
            ));
        }
        match tbs.get_extension::<BasicConstraints>() {
            Ok(Some((_, constraints))) if constraints.ca => {}
            _ => return Err(format!("the certificate {cert_path} is not a CA: its basicConstraints lack cA=true")),
        }
        if let Ok(Some((_, KeyUsage(usage)))) = tbs.get_extension::<KeyUsage>()
            && !usage.contains(KeyUsages::KeyCertSign)
        {
            return Err(format!(
                "the CA certificate {cert_path} may not sign certificates: its keyUsage lacks keyCertSign"
            ));
        }
        let key = parse_key(&key_pem).map_err(|e| format!("the CA key {key_path}: {e}"))?;
        let ours = SubjectPublicKeyInfo::from_key(key.verifying_key()).map_err(|e| e.to_string())?;
        if ours.to_der().ok() != spki.to_der().ok() {
            return Err(format!(
                "the CA key {key_path} does not belong to the CA certificate {cert_path} (their public keys differ)"
            ));
        }
        let not_after = tbs.validity().not_after.to_system_time();
        if not_after <= SystemTime::now() {
            return Err(format!("the CA certificate {cert_path} expired at {}", tbs.validity().not_after));
        }
        let key_id = match tbs.get_extension::<SubjectKeyIdentifier>() {
            Ok(Some((_, SubjectKeyIdentifier(id)))) => id,
            _ => SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(|e| e.to_string())?.0,
        };
        Ok(Ca { name: tbs.subject().clone(), key, key_id, not_after })
    }
}

/// Reads a PEM file, saying which file and what it is for when it cannot.
fn read(path: &str, what: &str) -> Result<String, String> {
    std::fs::read_to_string(Path::new(path)).map_err(|e| {
        format!("cannot read the {what} {path}: {e} (is its directory granted to cert-issue? see docs/operations.md)")
    })
}

/// Parses a P-256 private key in PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) PEM.
fn parse_key(pem: &str) -> Result<SigningKey, String> {
    let label = pem.lines().find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"));
    match label {
        Some("PRIVATE KEY") => SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| format!("not a P-256 PKCS#8 key ({e}); cert-issue signs with ECDSA P-256 CAs only")),
        Some("EC PRIVATE KEY") => p256::SecretKey::from_sec1_pem(pem)
            .map(SigningKey::from)
            .map_err(|e| format!("not a P-256 SEC1 key ({e}); cert-issue signs with ECDSA P-256 CAs only")),
        Some("ENCRYPTED PRIVATE KEY") => {
            Err("the key is encrypted; give cert-issue an unencrypted copy in a directory only it can read".into())
        }
        Some(other) => Err(format!("a {other:?} PEM block is not a P-256 private key")),
        None => Err("not a PEM file (no -----BEGIN line)".into()),
    }
}

/// Names a certificate's key type for an error message.
fn key_kind(algorithm: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> String {
    match (algorithm.to_string().as_str(), curve) {
        ("1.2.840.113549.1.1.1", _) => "RSA".into(),
        ("1.3.101.112", _) => "Ed25519".into(),
        ("1.2.840.10045.2.1", Some(curve)) => format!("EC ({curve})"),
        (other, _) => other.to_owned(),
    }
}
