//! One client certificate: a fresh P-256 key pair, a random serial number, and
//! the certificate signed by the CA, all in memory (nothing touches the disk
//! here, so a failure leaves nothing behind).

use std::time::{Duration, SystemTime};

use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::EncodePem;
use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::db::rfc5280::ID_KP_CLIENT_AUTH;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

use crate::ca::Ca;

/// How far back `notBefore` is set, so a relying party whose clock runs a
/// little behind ours does not reject a certificate issued a moment ago.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// An issued certificate and its private key, both PEM.
pub(crate) struct Issued {
    /// `<user>.crt.pem`.
    pub(crate) cert_pem: String,
    /// `<user>.key.pem`: PKCS#8, unencrypted.
    pub(crate) key_pem: String,
    /// The serial number, as lowercase hex, for the log.
    pub(crate) serial: String,
}

/// Issues a clientAuth certificate for `user` (its subject is `CN=<user>`),
/// valid from now (less [`BACKDATE`]) to `not_after`.
pub(crate) fn issue(ca: &Ca, user: &str, not_after: SystemTime) -> Result<Issued, String> {
    let key = SigningKey::try_generate().map_err(|e| format!("no randomness for a key pair: {e}"))?;
    let serial = random_serial()?;
    let serial_hex = hex(serial.as_bytes());
    let subject: Name = format!("CN={user}").parse().map_err(|e| format!("CN={user} is not a valid name: {e}"))?;
    let not_before = SystemTime::now().checked_sub(BACKDATE).unwrap_or(SystemTime::UNIX_EPOCH);
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| format!("a validity time out of range: {e}"));
    let validity = Validity::new(time(not_before)?, time(not_after)?);
    let spki = SubjectPublicKeyInfo::from_key(key.verifying_key()).map_err(|e| e.to_string())?;
    let profile = ClientAuth { issuer: ca.name.clone(), subject, authority_key_id: ca.key_id.clone() };
    let builder = CertificateBuilder::new(profile, serial, validity, spki).map_err(|e| e.to_string())?;
    let cert = builder.build::<_, DerSignature>(&ca.key).map_err(|e| format!("signing failed: {e}"))?;
    let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string();
    Ok(Issued { cert_pem, key_pem, serial: serial_hex })
}

/// A random 128-bit positive serial number: unique without a counter to
/// keep (the CA/Browser Forum asks for at least 64 random bits).
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = <[u8; 16]>::try_generate().map_err(|e| format!("no randomness for a serial number: {e}"))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // and always 16 bytes long: no leading zero to strip
    SerialNumber::new(&bytes).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The extensions of a TLS client certificate: not a CA, digitalSignature
/// only, extendedKeyUsage clientAuth, and key identifiers linking it to its CA.
struct ClientAuth {
    issuer: Name,
    subject: Name,
    authority_key_id: OctetString,
}

impl BuilderProfile for ClientAuth {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut extensions = Vec::new();
        let basic = BasicConstraints { ca: false, path_len_constraint: None };
        extensions.push(basic.to_extension(subject, &extensions)?);
        extensions.push(KeyUsage(KeyUsages::DigitalSignature.into()).to_extension(subject, &extensions)?);
        extensions.push(ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]).to_extension(subject, &extensions)?);
        extensions.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &extensions)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(self.authority_key_id.clone()),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        extensions.push(aki.to_extension(subject, &extensions)?);
        Ok(extensions)
    }
}
