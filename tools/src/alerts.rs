//! The alert listener: detection products POST alerts to `https://LISTEN/alerts` with
//! `Authorization: Bearer TOKEN`; each alert opens a case (its indicators searched across
//! the fleet, now and in history) and, if configured, a response action that still waits
//! for an admin's approval where its package needs one.
//!
//! Off unless `[alerts] listen` is set. A request without the token, or with another, is
//! refused (401) and counted; one that is not an alert is refused (400) and counted; bodies
//! over 1 MiB are refused before they are read whole. `rollcall case list` shows the counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use rollcall_actors::case::OpenCase;
use rollcall_actors::config::AlertSettings;
use rollcall_actors::desk::QuestionDesk;
use rollcall_actors::ioc::alert::{MAX_ALERT_BYTES, parse_alert};
use rollcall_runtime::identity::{Ca, Validity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

/// Connections served at once (more wait to be accepted).
const MAX_CONNECTIONS: usize = 64;

struct Listener {
    desk: Arc<QuestionDesk>,
    token: String,
    respond_with: Option<String>,
}

/// Starts the alert listener `settings` describe (its certificate issued by `ca` unless
/// files are given); returns the address it listens on.
pub async fn serve(
    desk: Arc<QuestionDesk>,
    settings: &AlertSettings,
    ca: &Ca,
) -> Result<Option<SocketAddr>> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let (certs, key) = match &settings.cert {
        Some((c, k)) => (
            CertificateDer::pem_file_iter(c)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading {}", c.display()))?,
            PrivateKeyDer::from_pem_file(k).with_context(|| format!("reading {}", k.display()))?,
        ),
        None => {
            let mut names = vec![listen.ip().to_string()];
            if listen.ip().is_loopback() || listen.ip().is_unspecified() {
                names.push("localhost".into());
            }
            let (cert, key) = ca
                .issue_web_server(&names, Validity::default())
                .context("issuing the alert listener's certificate")?;
            (vec![cert, ca.cert().clone()], key)
        }
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the alert listener's certificate")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening for alerts on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/alerts", post(alert))
        .layer(DefaultBodyLimit::max(MAX_ALERT_BYTES))
        .with_state(Arc::new(Listener {
            desk,
            token: settings.token.clone(),
            respond_with: settings.respond_with.clone(),
        }));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "alert listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "alert listener: TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(60), conn).await {
                    tracing::debug!(%peer, error = %e, "alert listener: connection ended");
                }
            });
        }
    });
    Ok(Some(addr))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn alert(
    State(st): State<Arc<Listener>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let counts = &st.desk.cases().alerts;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| same(t.as_bytes(), st.token.as_bytes())) {
        counts.refused_token.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("an alert without the right bearer token was refused");
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "missing or wrong bearer token" })),
        );
    }
    let a = match parse_alert(&body) {
        Ok(a) => a,
        Err(e) => {
            counts.refused_malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "a malformed alert was refused");
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": e })));
        }
    };
    let req = OpenCase {
        source: format!("alert {} from {}: {}", a.id, a.product, a.title),
        indicators: a.imported.indicators,
        skipped: a.imported.skipped,
        respond: st.respond_with.clone(),
    };
    match st
        .desk
        .open_case(req, &format!("alert:{}", a.product))
        .await
    {
        Ok(c) => {
            counts.accepted.fetch_add(1, Ordering::Relaxed);
            (StatusCode::ACCEPTED, axum::Json(json!({ "case": c.id })))
        }
        Err(e) => {
            counts.refused_malformed.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({ "error": e })),
            )
        }
    }
}
