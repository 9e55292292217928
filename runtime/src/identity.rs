//! Node identity: the cluster CA, certificates that carry a role, join tokens and node secrets.
//!
//! Every certificate rollcall issues names its holder in the subject common name (a node id
//! for servers and endpoints, a person's name for operators) and its role in the subject
//! organisational unit (`server`, `endpoint`, `operator/viewer`, `operator/operator`,
//! `operator/admin`). Node certificates also carry the DNS name [`NODE_SERVER_NAME`], so any
//! node can accept connections; operator certificates do not, so they can only dial.

use compact_str::CompactString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use crate::join_tokens::constant_time_eq;
pub use crate::join_tokens::{JoinToken, TokenInfo, TokenPolicy, TokenRefusal};

/// The DNS name every node certificate carries and every dialer verifies.
pub const NODE_SERVER_NAME: &str = "rollcall.node";

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
pub(crate) const JOIN_TOKENS_FILE: &str = "join-tokens";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node.key";
const NODE_SECRET_FILE: &str = "node.secret";

/// Errors from creating, loading or reading identities.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// PEM text could not be parsed.
    #[error("{path}: not a valid PEM file: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Certificate generation or signing failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A certificate does not name a rollcall identity.
    #[error("certificate does not carry a rollcall identity: {0}")]
    NotRollcall(String),
    /// A join token is malformed.
    #[error("malformed join token (expected rc1.<secret>.<ca-fingerprint>)")]
    BadJoinToken,
    /// Something already exists where we would create it.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

/// A node's stable identifier: 16 hex digits derived from its public key. Held inline (up
/// to 24 bytes without an allocation): ids are copied into every message, view and map, and
/// compared on every hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub CompactString);

impl NodeId {
    /// An id from any string.
    pub fn new(id: impl Into<CompactString>) -> NodeId {
        NodeId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the node holding `public_key_der` (a SubjectPublicKeyInfo).
    pub fn from_public_key(public_key_der: &[u8]) -> NodeId {
        let digest = Sha256::digest(public_key_der);
        NodeId(hex::encode(&digest[..8]).into())
    }
}

// Its `Eq`, `Ord` and `Hash` are the string's, so maps keyed by it can be searched by `&str`.
impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operator certificate allows, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperatorRole {
    /// May read results and status.
    Viewer,
    /// May also ask questions and deploy actions.
    Operator,
    /// May also manage the cluster and run chaos commands.
    Admin,
}

impl OperatorRole {
    fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Operator => "operator",
            OperatorRole::Admin => "admin",
        }
    }
}

impl FromStr for OperatorRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(OperatorRole::Viewer),
            "operator" => Ok(OperatorRole::Operator),
            "admin" => Ok(OperatorRole::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected viewer, operator or admin)"
            )),
        }
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of peer a certificate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerRole {
    /// A rollcall server.
    Server,
    /// An endpoint agent.
    Endpoint,
    /// A person (or script) using the CLI, with their role.
    Operator(OperatorRole),
}

/// The certificate roles a route accepts: the node refuses (and counts) an envelope from any
/// other role before the route's actor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// The server.
    pub const SERVER: Roles = Roles(1);
    /// Endpoint agents.
    pub const ENDPOINT: Roles = Roles(2);
    /// Operators with the viewer role.
    pub const VIEWER: Roles = Roles(4);
    /// Operators with the operator role.
    pub const OPERATOR: Roles = Roles(8);
    /// Operators with the admin role.
    pub const ADMIN: Roles = Roles(16);
    /// Every operator, whatever their role (the route checks what each request needs).
    pub const OPERATORS: Roles = Roles(4 | 8 | 16);
    /// Anyone holding a certificate of the cluster's CA.
    pub const ANY: Roles = Roles(31);

    /// These roles and `other`'s.
    pub const fn or(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    /// Whether `role` is among them.
    pub fn allows(self, role: PeerRole) -> bool {
        let bit = match role {
            PeerRole::Server => Roles::SERVER,
            PeerRole::Endpoint => Roles::ENDPOINT,
            PeerRole::Operator(OperatorRole::Viewer) => Roles::VIEWER,
            PeerRole::Operator(OperatorRole::Operator) => Roles::OPERATOR,
            PeerRole::Operator(OperatorRole::Admin) => Roles::ADMIN,
        };
        self.0 & bit.0 != 0
    }
}

impl PeerRole {
    fn tag(self) -> String {
        match self {
            PeerRole::Server => "server".into(),
            PeerRole::Endpoint => "endpoint".into(),
            PeerRole::Operator(r) => format!("operator/{r}"),
        }
    }

    fn from_tag(tag: &str) -> Option<PeerRole> {
        match tag {
            "server" => Some(PeerRole::Server),
            "endpoint" => Some(PeerRole::Endpoint),
            _ => tag
                .strip_prefix("operator/")
                .and_then(|r| r.parse().ok())
                .map(PeerRole::Operator),
        }
    }

    /// Whether this peer may do what `needed` allows. Servers may do anything.
    pub fn allows(self, needed: OperatorRole) -> bool {
        match self {
            PeerRole::Server => true,
            PeerRole::Endpoint => false,
            PeerRole::Operator(have) => have >= needed,
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag())
    }
}

/// Who is on the other end of a connection, as read from their verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// Node id, or the operator's name.
    pub id: NodeId,
    /// What kind of peer it is.
    pub role: PeerRole,
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate (already verified by TLS).
    pub fn from_cert_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::NotRollcall(format!("unparseable certificate: {e}")))?;
        let subject = cert.subject();
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(|| IdentityError::NotRollcall("no common name".into()))?;
        let ou = subject
            .iter_organizational_unit()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(|| IdentityError::NotRollcall("no role".into()))?;
        let role = PeerRole::from_tag(ou)
            .ok_or_else(|| IdentityError::NotRollcall(format!("unknown role {ou:?}")))?;
        Ok(PeerIdentity {
            id: NodeId::new(cn),
            role,
        })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.role)
    }
}

/// A persistent per-node secret. QUIC's stateless-reset key and connection-id key derive from
/// it, so a node that restarts can tell its old peers at once that their connection is gone.
#[derive(Clone)]
pub struct NodeSecret([u8; 32]);

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

impl NodeSecret {
    /// A fresh random secret.
    pub fn generate() -> NodeSecret {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        NodeSecret(b)
    }

    /// A secret from fixed bytes (seeded tests and simulations).
    pub fn from_bytes(b: [u8; 32]) -> NodeSecret {
        NodeSecret(b)
    }

    /// 32 bytes derived from the secret for one purpose.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"rollcall-node-secret-v1\0");
        h.update(label.as_bytes());
        h.update(self.0);
        h.finalize().into()
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn from_hex(s: &str) -> Option<NodeSecret> {
        let v = hex::decode(s.trim()).ok()?;
        Some(NodeSecret(v.try_into().ok()?))
    }
}

/// A node's or operator's certificate, key and the CA it trusts.
#[derive(Debug)]
pub struct Credentials {
    /// Who the certificate names.
    pub identity: PeerIdentity,
    /// The leaf certificate.
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            identity: self.identity.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl Credentials {
    /// Writes `node.pem`, `node.key` and `ca.pem` into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        create_dir(dir)?;
        write_file(
            &dir.join(NODE_CERT_FILE),
            &pem("CERTIFICATE", &self.cert),
            false,
        )?;
        write_file(
            &dir.join(NODE_KEY_FILE),
            &pem("PRIVATE KEY", self.key.secret_der()),
            true,
        )?;
        write_file(
            &dir.join(CA_CERT_FILE),
            &pem("CERTIFICATE", &self.ca),
            false,
        )?;
        Ok(())
    }

    /// Loads credentials written by [`Credentials::save`].
    pub fn load(dir: &Path) -> Result<Credentials, IdentityError> {
        let cert = read_cert(&dir.join(NODE_CERT_FILE))?;
        let key_path = dir.join(NODE_KEY_FILE);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| IdentityError::Pem {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let ca = read_cert(&dir.join(CA_CERT_FILE))?;
        let identity = PeerIdentity::from_cert_der(&cert)?;
        Ok(Credentials {
            identity,
            cert,
            key,
            ca,
        })
    }

    /// Whether `dir` holds saved credentials.
    pub fn exist_in(dir: &Path) -> bool {
        dir.join(NODE_CERT_FILE).exists() && dir.join(NODE_KEY_FILE).exists()
    }
}

/// Loads the node secret in `dir`, creating it on first use.
pub fn load_or_create_secret(dir: &Path) -> Result<NodeSecret, IdentityError> {
    let path = dir.join(NODE_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeSecret::from_hex(&text).ok_or(IdentityError::Pem {
            path,
            reason: "node secret is not 64 hex digits".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir(dir)?;
            let s = NodeSecret::generate();
            write_file(&path, &s.to_hex(), true)?;
            Ok(s)
        }
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// SHA-256 of a certificate, hex.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

/// Validity of an issued certificate, in seconds relative to now.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start, relative to now (negative: in the past).
    pub not_before_secs: i64,
    /// End, relative to now.
    pub not_after_secs: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            not_before_secs: -3600,
            not_after_secs: 365 * 24 * 3600,
        }
    }
}

/// The cluster certificate authority. The server holds it and signs every node's and
/// operator's certificate with it.
pub struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pub(crate) dir: Option<PathBuf>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ca({})", self.fingerprint())
    }
}

impl Ca {
    /// A new CA named `name`, kept in memory.
    pub fn generate(name: &str) -> Result<Ca, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "rollcall");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(
            &mut params,
            Validity {
                not_before_secs: -3600,
                not_after_secs: 10 * 365 * 24 * 3600,
            },
        );
        let cert = params.self_signed(&key)?.der().clone();
        let issuer = Issuer::new(params, key);
        Ok(Ca {
            cert,
            issuer,
            dir: None,
        })
    }

    /// Creates a CA in `dir` (`ca.pem`, `ca.key`), refusing to overwrite an existing one.
    pub fn init(dir: &Path, name: &str) -> Result<Ca, IdentityError> {
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() {
            return Err(IdentityError::Exists(cert_path));
        }
        let mut ca = Ca::generate(name)?;
        create_dir(dir)?;
        write_file(&cert_path, &pem("CERTIFICATE", &ca.cert), false)?;
        write_file(
            &dir.join(CA_KEY_FILE),
            &ca.issuer.key().serialize_pem(),
            true,
        )?;
        ca.dir = Some(dir.to_path_buf());
        Ok(ca)
    }

    /// Loads the CA kept in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, IdentityError> {
        let cert = read_cert(&dir.join(CA_CERT_FILE))?;
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = std::fs::read_to_string(&key_path).map_err(|source| IdentityError::Io {
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Ca {
            cert,
            issuer,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// SHA-256 of the CA certificate, hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// Issues credentials for a new key held by the caller's process (servers, operators,
    /// simulated endpoints).
    pub fn issue(
        &self,
        role: PeerRole,
        name: Option<&str>,
        validity: Validity,
    ) -> Result<Credentials, IdentityError> {
        let key = KeyPair::generate()?;
        let id = match name {
            Some(n) => NodeId::new(n),
            None => NodeId::from_public_key(&rcgen::PublicKeyData::subject_public_key_info(&key)),
        };
        let params = leaf_params(&id, role, validity)?;
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| IdentityError::NotRollcall(e.to_string()))?;
        Ok(Credentials {
            identity: PeerIdentity { id, role },
            cert,
            key: key_der,
            ca: self.cert.clone(),
        })
    }

    /// Issues a TLS server certificate for a web listener (the alert listener) reached at
    /// `names` (IP addresses or DNS names): clients that trust this CA's certificate
    /// (`ca.pem`) can check it. Returns the certificate and its key.
    pub fn issue_web_server(
        &self,
        names: &[String],
        validity: Validity,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "rollcall".into()),
        );
        dn.push(DnType::OrganizationName, "rollcall");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.as_str().try_into()?),
                });
        }
        let mut serial = [0u8; 16];
        rand::rng().fill_bytes(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| IdentityError::NotRollcall(e.to_string()))?;
        Ok((cert, key_der))
    }

    /// Signs an endpoint's certificate request. The identity is the server's decision: the
    /// node id derives from the requested public key, whatever subject the request names.
    pub fn sign_endpoint_request(
        &self,
        csr_der: &[u8],
    ) -> Result<(NodeId, CertificateDer<'static>), IdentityError> {
        let csr = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut req = CertificateSigningRequestParams::from_der(&csr)?;
        let id = NodeId::from_public_key(&rcgen::PublicKeyData::subject_public_key_info(
            &req.public_key,
        ));
        req.params = leaf_params(
            &id,
            PeerRole::Endpoint,
            Validity {
                not_after_secs: crate::renewal::ENDPOINT_VALIDITY.as_secs() as i64,
                ..Validity::default()
            },
        )?;
        let cert = req.signed_by(&self.issuer)?.der().clone();
        Ok((id, cert))
    }
}

/// A fresh key pair and a certificate request for it, made by an enrolling endpoint.
pub fn new_certificate_request(hostname: &str) -> Result<(KeyPair, Vec<u8>), IdentityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, hostname.to_string());
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// Assembles endpoint credentials from an enrolment answer.
pub fn endpoint_credentials(
    key: &KeyPair,
    cert: Vec<u8>,
    ca: Vec<u8>,
) -> Result<Credentials, IdentityError> {
    let cert = CertificateDer::from(cert);
    let identity = PeerIdentity::from_cert_der(&cert)?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| IdentityError::NotRollcall(e.to_string()))?;
    Ok(Credentials {
        identity,
        cert,
        key,
        ca: CertificateDer::from(ca),
    })
}

fn leaf_params(
    id: &NodeId,
    role: PeerRole,
    validity: Validity,
) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.0.clone());
    dn.push(DnType::OrganizationName, "rollcall");
    dn.push(DnType::OrganizationalUnitName, role.tag());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if !matches!(role, PeerRole::Operator(_)) {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = vec![SanType::DnsName(NODE_SERVER_NAME.try_into()?)];
    }
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    set_validity(&mut params, validity);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, v: Validity) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::seconds(v.not_before_secs);
    params.not_after = now + time::Duration::seconds(v.not_after_secs);
}

pub(crate) fn pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(source) => IdentityError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => IdentityError::Pem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

pub(crate) fn write_file(path: &Path, text: &str, private: bool) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    // A private file is made readable by its owner alone from the start, not after its
    // secret is already written.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(io)?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its mode on open: narrow it too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(text.as_bytes()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips_through_a_certificate() {
        let ca = Ca::generate("test").expect("ca");
        for role in [
            PeerRole::Server,
            PeerRole::Endpoint,
            PeerRole::Operator(OperatorRole::Viewer),
            PeerRole::Operator(OperatorRole::Operator),
            PeerRole::Operator(OperatorRole::Admin),
        ] {
            let creds = ca
                .issue(role, Some("alice"), Validity::default())
                .expect("issue");
            let back = PeerIdentity::from_cert_der(&creds.cert).expect("identity");
            assert_eq!(
                back,
                PeerIdentity {
                    id: NodeId("alice".into()),
                    role
                }
            );
        }
    }

    #[test]
    fn endpoint_id_is_derived_from_the_requested_key() {
        let ca = Ca::generate("test").expect("ca");
        let (key, csr) = new_certificate_request("host-a").expect("csr");
        let (id, cert) = ca.sign_endpoint_request(&csr).expect("sign");
        assert_eq!(
            id,
            NodeId::from_public_key(&rcgen::PublicKeyData::subject_public_key_info(&key))
        );
        let creds = endpoint_credentials(&key, cert.to_vec(), ca.cert().to_vec()).expect("creds");
        assert_eq!(
            creds.identity,
            PeerIdentity {
                id,
                role: PeerRole::Endpoint
            }
        );
    }

    #[test]
    fn join_token_parses_what_it_prints_and_rejects_junk() {
        let t = JoinToken {
            secret: "ab".repeat(16),
            ca_fingerprint: "cd".repeat(32),
        };
        assert_eq!(t.to_string().parse::<JoinToken>().expect("parse"), t);
        for bad in [
            "",
            "rc1",
            "rc1.zz.zz",
            "rc2.abababababababababababababababab.x",
            "rc1.ab.cd.ef",
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn credentials_and_ca_survive_save_and_load() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Ca::init(&dir.path().join("ca"), "test").expect("init");
        assert!(matches!(
            Ca::init(&dir.path().join("ca"), "test"),
            Err(IdentityError::Exists(_))
        ));
        let token = ca.new_join_token().expect("token");
        let loaded = Ca::load(&dir.path().join("ca")).expect("load");
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.join_secrets(), vec![token.secret]);
        let creds = loaded
            .issue(PeerRole::Server, None, Validity::default())
            .expect("issue");
        creds.save(&dir.path().join("node")).expect("save");
        let back = Credentials::load(&dir.path().join("node")).expect("load creds");
        assert_eq!(back.identity, creds.identity);
        assert_eq!(back.cert, creds.cert);
        let s1 = load_or_create_secret(&dir.path().join("node")).expect("secret");
        let s2 = load_or_create_secret(&dir.path().join("node")).expect("secret again");
        assert_eq!(s1.derive("x"), s2.derive("x"));
    }
}
