//! Certificate renewal over an endpoint's link to the server.
//!
//! Endpoint certificates are short-lived ([`ENDPOINT_VALIDITY`]). Once a third of its
//! certificate's life is left ([`due`]), an endpoint sends the server a certificate request
//! for the key it already holds, on an ordinary mTLS connection to the pinned server
//! ([`renew`]); the server ([`CaRenewal`], route [`RENEW`], endpoints only) signs it if the
//! request's key is the one the sender's current certificate names — the node id derives
//! from the key, so the identity cannot change — and the sender is not revoked (a revoked
//! peer's messages never reach the route). The endpoint stores the new certificate and
//! presents it from the next connection on ([`QuicTransport::renew`]).
//!
//! [`QuicTransport::renew`]: crate::transport::quic::QuicTransport::renew

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::identity::{Ca, Credentials, IdentityError, NodeId, PeerIdentity, PeerRole};
use crate::node::{CallError, Deliver, DestinationGone, Incoming, Node};

/// The server route that renews endpoint certificates.
pub const RENEW: &str = "ca.renew";

/// How long an endpoint certificate is valid (renewed when a third is left).
pub const ENDPOINT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A renewal request: a PKCS#10 request for the sender's own key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The request (DER).
    #[serde(with = "serde_bytes")]
    pub csr: Vec<u8>,
}

/// The server's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RenewReply {
    /// The new certificate (DER).
    Renewed(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Why not.
    Refused(String),
}

/// Errors of renewing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The server could not be asked.
    #[error("could not ask the server: {0}")]
    Call(#[from] CallError),
    /// The server refused.
    #[error("the server refused renewal: {0}")]
    Refused(String),
    /// The request could not be made or the answer is not a certificate for this node.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Serves [`RENEW`] from the CA.
pub struct CaRenewal {
    ca: Arc<Ca>,
}

impl CaRenewal {
    /// Serves renewals on `node` (endpoints only).
    pub fn install(node: &Node, ca: Arc<Ca>) {
        node.router()
            .register(RENEW, crate::Roles::ENDPOINT, Arc::new(CaRenewal { ca }));
    }
}

impl Deliver for CaRenewal {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let Ok(req) = incoming.decode::<RenewRequest>() else {
            incoming.refuse();
            return Ok(());
        };
        let reply = match self.ca.sign_endpoint_request(&req.csr) {
            Ok((id, cert)) if id == incoming.from.id => {
                incoming.stats().incr(|s| &s.renewals);
                tracing::info!(node = %id, "endpoint certificate renewed");
                RenewReply::Renewed(cert.to_vec())
            }
            Ok((id, _)) => {
                incoming.stats().incr(|s| &s.renewals_refused);
                tracing::warn!(node = %incoming.from.id, requested = %id, "refused to renew a certificate for another key");
                RenewReply::Refused("the request is not for this endpoint's key".into())
            }
            Err(e) => {
                incoming.stats().incr(|s| &s.renewals_refused);
                tracing::warn!(node = %incoming.from.id, error = %e, "refused a malformed renewal");
                RenewReply::Refused(format!("bad certificate request: {e}"))
            }
        };
        let _ = incoming.answer(&reply);
        Ok(())
    }
}

/// Seconds since the Unix epoch of `cert`'s validity start and end.
pub fn validity(cert: &[u8]) -> Result<(i64, i64), IdentityError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(cert)
        .map_err(|e| IdentityError::NotRollcall(format!("unparseable certificate: {e}")))?;
    Ok((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// Whether `cert` has a third of its life or less left at `now_unix_secs`.
pub fn due(cert: &[u8], now_unix_secs: i64) -> Result<bool, IdentityError> {
    let (from, to) = validity(cert)?;
    Ok(to - now_unix_secs <= (to - from) / 3)
}

/// Asks the server at `server` (which must be `pinned`, if given) to renew `creds`; returns
/// the renewed credentials (same key and identity, new certificate).
pub async fn renew(
    node: &Node,
    server: SocketAddr,
    pinned: Option<&NodeId>,
    creds: &Credentials,
    timeout: Duration,
) -> Result<Credentials, RenewError> {
    let key = KeyPair::try_from(creds.key.secret_der()).map_err(IdentityError::from)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(IdentityError::from)?;
    let link = node.connect_once(server, timeout).await?;
    let r = async {
        link.require_peer(PeerRole::Server, pinned)?;
        link.call::<_, RenewReply>(
            RENEW,
            &RenewRequest {
                csr: csr.der().to_vec(),
            },
            timeout,
        )
        .await
    }
    .await;
    link.close();
    let cert = match r? {
        RenewReply::Renewed(cert) => CertificateDer::from(cert),
        RenewReply::Refused(why) => return Err(RenewError::Refused(why)),
    };
    let identity = PeerIdentity::from_cert_der(&cert)?;
    if identity != creds.identity {
        return Err(IdentityError::NotRollcall(format!(
            "the renewed certificate names {identity}, not {}",
            creds.identity
        ))
        .into());
    }
    Ok(Credentials {
        identity,
        cert,
        key: creds.key.clone_key(),
        ca: creds.ca.clone(),
    })
}

/// How often a running endpoint looks at its certificate's age.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(3600);

/// Renews `creds` if [`due`] at `now_unix_secs`: asks the server, stores the new certificate
/// in `state_dir` and has `transport` present it. Returns the credentials in use afterwards.
pub async fn renew_if_due(
    node: &Node,
    transport: &crate::transport::quic::QuicTransport,
    state_dir: &std::path::Path,
    (server, pinned): (SocketAddr, Option<&NodeId>),
    creds: Credentials,
    now_unix_secs: i64,
) -> Result<Credentials, RenewError> {
    if !due(&creds.cert, now_unix_secs)? {
        return Ok(creds);
    }
    let renewed = renew(node, server, pinned, &creds, Duration::from_secs(30)).await?;
    renewed.save(state_dir)?;
    transport
        .renew(&renewed)
        .map_err(|e| IdentityError::NotRollcall(e.to_string()))?;
    Ok(renewed)
}

/// Keeps an endpoint's certificate renewed while `node` runs, looking every
/// [`RENEWAL_CHECK`]; a failed attempt is logged and tried again at the next look.
pub fn keep_renewed(
    node: Node,
    transport: Arc<crate::transport::quic::QuicTransport>,
    state_dir: std::path::PathBuf,
    server: SocketAddr,
    pinned: Option<NodeId>,
    creds: Credentials,
) {
    tokio::spawn(async move {
        let mut creds = creds;
        let mut tick = tokio::time::interval(RENEWAL_CHECK);
        while !node.is_shut_down() {
            tick.tick().await;
            let now = crate::signing::unix_ms() as i64 / 1000;
            let held = creds.clone();
            match renew_if_due(
                &node,
                &transport,
                &state_dir,
                (server, pinned.as_ref()),
                held,
                now,
            )
            .await
            {
                Ok(c) => creds = c,
                Err(e) => tracing::warn!(error = %e, "could not renew this endpoint's certificate"),
            }
        }
    });
}
