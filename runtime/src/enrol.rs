//! Enrolment: an endpoint with a join token gets its certificate from the server.
//!
//! The endpoint generates its key pair locally and sends only a certificate request and the
//! token's secret, over QUIC on the enrolment ALPN, without a client certificate. It verifies
//! the server against the CA fingerprint in the token. The server checks the secret, derives
//! the node id from the requested key, and signs. Its answer carries the server's public
//! signing key, and the endpoint pins it with the server's node id (from the server's
//! certificate on that connection): from then on it acts only on what that key signed, and
//! talks to no other server. Nothing else is served to a connection without a certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::identity::{
    self, Ca, Credentials, IdentityError, JoinToken, NODE_SERVER_NAME, PeerRole,
};
use crate::identity::{TokenRefusal, constant_time_eq};
use crate::signing::{ServerKey, ServerTrust};
use crate::stats::WireStats;
use crate::tls::{self, LinkTimeouts};
use crate::transport::quic::EnrolService;
use crate::wire;

/// Largest enrolment request or answer.
const MAX_ENROL_FRAME: usize = 64 * 1024;
/// How long the server waits for an enrolling client.
const SERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an enrolling endpoint sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// The join token's secret.
    pub token_secret: String,
    /// A PKCS#10 certificate request (DER).
    #[serde(with = "serde_bytes")]
    pub csr: Vec<u8>,
    /// The endpoint's host name, for logs.
    pub hostname: String,
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EnrolResponse {
    /// The signed certificate and the CA certificate.
    Accepted {
        /// The endpoint's certificate (DER).
        #[serde(with = "serde_bytes")]
        cert: Vec<u8>,
        /// The CA certificate (DER).
        #[serde(with = "serde_bytes")]
        ca: Vec<u8>,
        /// The server's public signing key.
        signing_key: ServerKey,
    },
    /// Why not.
    Refused(String),
}

/// Errors of enrolling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolError {
    /// The server could not be reached or failed verification.
    #[error("could not reach the server at {addr}: {reason}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server refused the request.
    #[error("the server refused enrolment: {0}")]
    Refused(String),
    /// The exchange failed midway.
    #[error("enrolment exchange failed: {0}")]
    Exchange(String),
    /// Keys or certificates could not be made, read or stored.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Serves enrolment from a CA and a set of accepted join-token secrets.
pub struct CaEnroller {
    ca: Arc<Ca>,
    signing_key: ServerKey,
    /// Fixed secrets, or `None` to read the CA directory's token list at each request (so
    /// tokens made while the server runs are accepted at once).
    secrets: Option<Vec<String>>,
}

impl std::fmt::Debug for CaEnroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaEnroller({:?})", self.secrets.as_ref().map(Vec::len))
    }
}

impl CaEnroller {
    /// An enroller that accepts `secrets`, for a server signing with `signing_key`.
    pub fn new(ca: Arc<Ca>, secrets: Vec<String>, signing_key: ServerKey) -> CaEnroller {
        CaEnroller {
            ca,
            signing_key,
            secrets: Some(secrets),
        }
    }

    /// An enroller that accepts the tokens listed in the CA's directory at request time.
    pub fn from_ca_dir(ca: Arc<Ca>, signing_key: ServerKey) -> CaEnroller {
        CaEnroller {
            ca,
            signing_key,
            secrets: None,
        }
    }

    /// Decides one request, counting the outcome in `stats`.
    pub fn decide(&self, req: &EnrolRequest, stats: &WireStats) -> EnrolResponse {
        let accepted = match &self.secrets {
            Some(secrets) => {
                let known = secrets
                    .iter()
                    .any(|s| constant_time_eq(s.as_bytes(), req.token_secret.as_bytes()));
                if known {
                    Ok(())
                } else {
                    Err(TokenRefusal::Unknown)
                }
            }
            // Tokens on file carry an expiry and a use count: one use is spent here.
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.ca.spend_join_token(&req.token_secret, now)
            }
        };
        if let Err(why) = accepted {
            stats.incr(|s| &s.enrolments_refused);
            tracing::warn!(hostname = ?req.hostname, "enrolment refused: {why}");
            return EnrolResponse::Refused(why.to_string());
        }
        match self.ca.sign_endpoint_request(&req.csr) {
            Ok((id, cert)) => {
                stats.incr(|s| &s.enrolments);
                tracing::info!(node = %id, hostname = ?req.hostname, "endpoint enrolled");
                EnrolResponse::Accepted {
                    cert: cert.to_vec(),
                    ca: self.ca.cert().to_vec(),
                    signing_key: self.signing_key,
                }
            }
            Err(e) => {
                stats.incr(|s| &s.enrolments_refused);
                tracing::warn!(hostname = ?req.hostname, error = %e, "enrolment refused: bad request");
                EnrolResponse::Refused(format!("bad certificate request: {e}"))
            }
        }
    }
}

#[async_trait]
impl EnrolService for CaEnroller {
    async fn serve(&self, conn: quinn::Connection, stats: &WireStats) {
        let exchange = async {
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let mut len = [0u8; 4];
            recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_ENROL_FRAME {
                return Err(format!("enrolment request of {len} bytes is too large"));
            }
            let mut buf = vec![0u8; len];
            recv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            let answer = match wire::decode_body::<EnrolRequest>(&buf) {
                Ok(req) => self.decide(&req, stats),
                Err(e) => {
                    stats.incr(|s| &s.enrolments_refused);
                    EnrolResponse::Refused(format!("malformed request: {e}"))
                }
            };
            let body = wire::encode_body(&answer).map_err(|e| e.to_string())?;
            let frame = wire::frame(&body, MAX_ENROL_FRAME).map_err(|e| e.to_string())?;
            send.write_all(&frame).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            // Let the client read the answer and close.
            let _ = conn.closed().await;
            Ok::<(), String>(())
        };
        match tokio::time::timeout(SERVE_TIMEOUT, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stats.incr(|s| &s.enrolments_refused);
                tracing::warn!(remote = %conn.remote_address(), error = %e, "enrolment failed");
            }
            Err(_) => tracing::warn!(remote = %conn.remote_address(), "enrolment timed out"),
        }
    }
}

/// An enrolled endpoint's credentials and the server it pinned.
#[derive(Debug)]
pub struct Enrolled {
    /// Its certificate and key.
    pub creds: Credentials,
    /// The server's node id and signing key.
    pub trust: ServerTrust,
}

/// Enrols with the server at `server` using `token`, from a client socket bound at `bind`.
pub async fn enrol(
    server: SocketAddr,
    token: &JoinToken,
    hostname: &str,
    bind: SocketAddr,
) -> Result<Enrolled, EnrolError> {
    let connect_err = |reason: String| EnrolError::Connect {
        addr: server,
        reason,
    };
    let (key, csr) = identity::new_certificate_request(hostname)?;
    let cfg = tls::enrol_client_config(&token.ca_fingerprint, LinkTimeouts::default())
        .map_err(|e| connect_err(e.to_string()))?;
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
    let conn = endpoint
        .connect_with(cfg, server, NODE_SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    // The CA fingerprint in the token verified the chain; the leaf must be the server's.
    let server_id = conn
        .peer_identity()
        .and_then(|p| {
            p.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| {
            certs
                .first()
                .and_then(|c| identity::PeerIdentity::from_cert_der(c).ok())
        })
        .filter(|p| p.role == PeerRole::Server)
        .map(|p| p.id)
        .ok_or_else(|| connect_err("the peer's certificate is not a server's".into()))?;
    let exchange = async {
        let x = |e: &dyn std::fmt::Display| EnrolError::Exchange(e.to_string());
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| x(&e))?;
        let req = EnrolRequest {
            token_secret: token.secret.clone(),
            csr,
            hostname: hostname.to_string(),
        };
        let body = wire::encode_body(&req).map_err(|e| x(&e))?;
        send.write_all(&wire::frame(&body, MAX_ENROL_FRAME).map_err(|e| x(&e))?)
            .await
            .map_err(|e| x(&e))?;
        send.finish().map_err(|e| x(&e))?;
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await.map_err(|e| x(&e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ENROL_FRAME {
            return Err(EnrolError::Exchange(format!(
                "answer of {len} bytes is too large"
            )));
        }
        let mut buf = vec![0u8; len];
        recv.read_exact(&mut buf).await.map_err(|e| x(&e))?;
        wire::decode_body::<EnrolResponse>(&buf).map_err(|e| x(&e))
    };
    let answer = tokio::time::timeout(SERVE_TIMEOUT, exchange)
        .await
        .map_err(|_| EnrolError::Exchange("timed out".into()))?;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    match answer? {
        EnrolResponse::Accepted {
            cert,
            ca,
            signing_key,
        } => {
            if identity::fingerprint(&ca) != token.ca_fingerprint {
                return Err(EnrolError::Exchange(
                    "the CA certificate returned does not match the join token".into(),
                ));
            }
            let creds = identity::endpoint_credentials(&key, cert, ca)?;
            if creds.identity.role != PeerRole::Endpoint {
                return Err(EnrolError::Exchange(
                    "issued certificate is not an endpoint's".into(),
                ));
            }
            Ok(Enrolled {
                creds,
                trust: ServerTrust::new(Some(server_id), signing_key),
            })
        }
        EnrolResponse::Refused(why) => Err(EnrolError::Refused(why)),
    }
}

/// Loads the credentials and the server pin in `state_dir`, or enrols and stores them there
/// on first start.
pub async fn load_or_enrol(
    state_dir: &Path,
    server: SocketAddr,
    token: Option<&JoinToken>,
    hostname: &str,
    bind: SocketAddr,
) -> Result<Enrolled, EnrolError> {
    if Credentials::exist_in(state_dir) {
        if !ServerTrust::exists_in(state_dir) {
            return Err(EnrolError::Refused(format!(
                "{} holds credentials but no server pin ({}): enrol this endpoint again with a new state directory",
                state_dir.display(),
                crate::signing::TRUST_FILE
            )));
        }
        return Ok(Enrolled {
            creds: Credentials::load(state_dir)?,
            trust: ServerTrust::load(state_dir)?,
        });
    }
    let token = token.ok_or_else(|| {
        EnrolError::Refused(format!(
            "{} holds no credentials and no join token was given",
            state_dir.display()
        ))
    })?;
    let enrolled = enrol(server, token, hostname, bind).await?;
    enrolled.creds.save(state_dir)?;
    enrolled.trust.save(state_dir)?;
    Ok(enrolled)
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use std::sync::Mutex;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            crate::sync::lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_host_name_sent_before_authentication_cannot_forge_a_log_line() {
        // Attack 6 of the trust model: a newline and ANSI escapes in the host name wrote a
        // forged "endpoint enrolled" line into the server's log.
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let ca = Arc::new(Ca::generate("test").expect("ca"));
        let enroller = CaEnroller::new(
            ca,
            vec!["good".into()],
            crate::signing::ServerSigner::generate()
                .expect("key")
                .public_key(),
        );
        let req = EnrolRequest {
            token_secret: "bad".into(),
            csr: Vec::new(),
            hostname: "evil\n2026-12-06T00:00:00Z  INFO endpoint enrolled node=0\x1b[0m".into(),
        };
        let stats = WireStats::default();
        tracing::subscriber::with_default(subscriber, || {
            let _ = enroller.decide(&req, &stats);
        });
        let out = String::from_utf8(crate::sync::lock(&sink.0).clone()).expect("utf-8");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("enrolment refused: unknown join token"),
            "{out}"
        );
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("evil\\n2026"), "{out}");
        assert_eq!(stats.snapshot().enrolments_refused, 1);
    }
}
