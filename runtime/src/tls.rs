//! TLS 1.3 with mutual authentication for QUIC, on rustls with the `ring` provider only.
//!
//! Three configurations: the node server side (client certificate required, or optional on a
//! server that takes enrolments), the node/operator client side (presents its certificate,
//! verifies the peer against the cluster CA), and the enrolment client (no certificate yet;
//! verifies the server against the CA fingerprint carried in the join token).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::identity::{Credentials, fingerprint};

/// ALPN of ordinary node-to-node and operator connections.
pub const ALPN_NODE: &[u8] = b"rollcall/1";
/// ALPN of enrolment connections (the client has no certificate yet).
pub const ALPN_ENROL: &[u8] = b"rollcall-enrol/1";

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration.
    #[error("quic crypto: {0}")]
    Quic(String),
    /// A timeout is out of QUIC's range.
    #[error("idle timeout out of range")]
    IdleTimeout,
}

/// Keep-alive and idle timeouts of every link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTimeouts {
    /// A keep-alive is sent after this long without traffic. Must be below `idle_timeout_ms`.
    pub keep_alive_ms: u64,
    /// A connection with no traffic for this long is closed (the lower of both sides' wins).
    pub idle_timeout_ms: u64,
    /// The round-trip time a new connection assumes until it has measured one. A lost
    /// handshake packet is sent again after about three times this: at QUIC's usual 333 ms,
    /// a dial under packet loss waited about 1 s, longer than the ring's and the server's dial
    /// timeouts on a LAN; too low only costs a handshake packet sent twice on a slow path.
    pub initial_rtt_ms: u64,
    /// How long the peer may hold back an acknowledgement (asked of it with QUIC's ACK
    /// frequency extension). A packet lost with nothing sent after it is found lost one probe
    /// timeout later: about the RTT plus this. At QUIC's usual 25 ms a lost request on a
    /// loopback link cost up to ~28 ms, and a chain's answer crosses two hundred hops in turn.
    pub max_ack_delay_ms: u64,
}

impl Default for LinkTimeouts {
    fn default() -> Self {
        LinkTimeouts {
            // Twice the ring's 2 s probe interval, so a ring link's probes keep it alive
            // with no keep-alive packets of its own (at 2 s, probe and keep-alive raced and
            // an idle agent sent both: 0.060 % of a core against 0.046-0.051 %); below half
            // the idle timeout, so one lost keep-alive does not close a leader's link.
            keep_alive_ms: 4_000,
            idle_timeout_ms: 10_000,
            initial_rtt_ms: DEFAULT_INITIAL_RTT_MS,
            max_ack_delay_ms: DEFAULT_MAX_ACK_DELAY_MS,
        }
    }
}

/// See [`LinkTimeouts::initial_rtt_ms`]: a lost handshake packet is sent again after about
/// 300 ms (a WAN link to the server measures its own RTT after the first exchange).
pub const DEFAULT_INITIAL_RTT_MS: u64 = 100;

/// See [`LinkTimeouts::max_ack_delay_ms`]. QUIC clamps it to at least the peer's smallest
/// delay (1 ms here) and at most the larger of the RTT and 25 ms.
pub const DEFAULT_MAX_ACK_DELAY_MS: u64 = 2;

impl LinkTimeouts {
    pub(crate) fn transport_config(&self) -> Result<quinn::TransportConfig, TlsError> {
        let mut tc = quinn::TransportConfig::default();
        tc.keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)));
        tc.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms))
                .map_err(|_| TlsError::IdleTimeout)?,
        ));
        tc.initial_rtt(Duration::from_millis(self.initial_rtt_ms.max(1)));
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(Duration::from_millis(self.max_ack_delay_ms.max(1))));
        tc.ack_frequency_config(Some(ack));
        Ok(tc)
    }
}

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

/// The server side of a node. With `accept_enrolment`, clients without a certificate get
/// through the handshake, and the transport then serves them enrolment only.
pub fn server_config(
    creds: &Credentials,
    timeouts: LinkTimeouts,
    accept_enrolment: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots(&creds.ca)?, provider());
    let verifier = if accept_enrolment {
        builder.allow_unauthenticated().build()?
    } else {
        builder.build()?
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![creds.cert.clone(), creds.ca.clone()],
            creds.key.clone_key(),
        )?;
    cfg.alpn_protocols = vec![ALPN_NODE.to_vec()];
    if accept_enrolment {
        cfg.alpn_protocols.push(ALPN_ENROL.to_vec());
    }
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(Arc::new(timeouts.transport_config()?));
    Ok(sc)
}

/// The client side of a node or operator: presents `creds`, trusts only the cluster CA.
pub fn client_config(
    creds: &Credentials,
    timeouts: LinkTimeouts,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&creds.ca)?)
        .with_client_auth_cert(vec![creds.cert.clone()], creds.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN_NODE.to_vec()];
    quic_client(cfg, timeouts)
}

/// The client side of an enrolling endpoint: no certificate; the server must present a chain
/// whose CA has `ca_fingerprint`.
pub fn enrol_client_config(
    ca_fingerprint: &str,
    timeouts: LinkTimeouts,
) -> Result<quinn::ClientConfig, TlsError> {
    let verifier = PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider(),
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_ENROL.to_vec()];
    quic_client(cfg, timeouts)
}

fn quic_client(
    cfg: rustls::ClientConfig,
    timeouts: LinkTimeouts,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(Arc::new(timeouts.transport_config()?));
    Ok(cc)
}

/// Verifies a server chain against the CA whose fingerprint a join token carries: the CA must
/// be among the certificates the server sent, and the leaf must verify against it as usual.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match the join token's fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
