//! `rollcall console`: a local web server that acts as one operator, for the browser.
//!
//! The console holds the operator's credentials and speaks to the server's question desk
//! over QUIC, as the CLI does; the browser speaks to the console over HTTP on loopback. Every
//! request and stream must carry the token printed at launch (header `x-rollcall-token` or
//! query `token`), so another local user, or another web page in the same browser, cannot
//! drive it. The page's assets are built into the binary.
//!
//! - [`api`]: the JSON routes, each one desk request (the server checks the role of each).
//! - [`live`]: server-sent event streams of a question, the rings and the actions, polled
//!   from the server and sent only when they change (coalesced, whatever the fleet's size).

mod api;
mod live;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use rollcall_runtime::PeerRole;
use rollcall_runtime::identity::Credentials;

use crate::desk_client::{DeskClient, server_pin};

/// The header a request carries its launch token in (or the query parameter `token`).
pub const TOKEN_HEADER: &str = "x-rollcall-token";

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Who the console acts as (from its certificate).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Me {
    /// The operator's name.
    pub name: String,
    /// Their role: `viewer`, `operator` or `admin`.
    pub role: String,
    /// The server's address.
    pub server: String,
}

/// What every route shares.
pub(crate) struct App {
    pub(crate) desk: DeskClient,
    pub(crate) me: Me,
    token: String,
    page: String,
    /// Requests refused for a missing or wrong token.
    refused: AtomicU64,
}

/// A running console.
pub struct Console {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The URL to open (with the launch token).
    pub url: String,
    app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

impl Console {
    /// Connects to the server at `server` as the operator in `cert_dir` and serves the
    /// console at `listen`.
    pub async fn start(server: SocketAddr, cert_dir: &Path, listen: SocketAddr) -> Result<Console> {
        let creds = Credentials::load(cert_dir).context("loading operator credentials")?;
        let role = match creds.identity.role {
            PeerRole::Operator(r) => r.to_string(),
            other => anyhow::bail!(
                "the credentials in {} are a {other:?}'s, not an operator's",
                cert_dir.display()
            ),
        };
        let desk =
            DeskClient::with_creds_pinned(&creds, server, server_pin(cert_dir)?.as_ref()).await?;
        let me = Me {
            name: creds.identity.id.to_string(),
            role,
            server: server.to_string(),
        };
        let mut rng = rand::rng();
        let token = hex::encode(rng.random::<[u8; 24]>());
        let nonce = hex::encode(rng.random::<[u8; 16]>());
        let page = PAGE
            .replace("{{NONCE}}", &nonce)
            .replace("{{STYLE}}", STYLE)
            .replace("{{SCRIPT}}", SCRIPT);
        let app = Arc::new(App {
            desk,
            me,
            token,
            page,
            refused: AtomicU64::new(0),
        });
        let csp = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        let router = routes(app.clone(), csp);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "the console listens beyond loopback: anyone who learns its URL acts as {}",
                app.me.name
            );
        }
        let url = format!("http://{addr}/?token={}", app.token);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("console stopped: {e}");
            }
        });
        Ok(Console {
            addr,
            url,
            app,
            task,
        })
    }

    /// Requests refused so far for a missing or wrong token.
    pub fn refused(&self) -> u64 {
        self.app.refused.load(Ordering::Relaxed)
    }

    /// Who it acts as.
    pub fn me(&self) -> &Me {
        &self.app.me
    }

    /// Serves until the process is stopped.
    pub async fn run(self) -> Result<()> {
        self.task.await.context("console task")?;
        Ok(())
    }
}

fn routes(app: Arc<App>, csp: String) -> Router {
    let api = Router::new()
        .route("/me", get(api::me))
        .route("/search", get(api::search))
        .route("/ask", post(api::ask))
        .route("/questions", get(api::questions))
        .route("/questions/{id}", get(api::question))
        .route("/questions/{id}/stream", get(live::question))
        .route("/questions/{id}/machines", post(api::row_machines))
        .route("/questions/{id}/export.csv", get(api::export_csv))
        .route("/questions/{id}/export.json", get(api::export_json))
        .route("/saved", get(api::saved))
        .route("/rings", get(api::rings))
        .route("/rings/stream", get(live::rings))
        .route("/packages", get(api::packages))
        .route("/actions", get(api::actions).post(api::act))
        .route("/actions/stream", get(live::actions))
        .route("/actions/{id}", get(api::action))
        .route("/actions/{id}/approve", post(api::approve))
        .route("/actions/{id}/deny", post(api::deny))
        .route("/actions/{id}/cancel", post(api::cancel))
        .route("/audit", get(api::audit));
    Router::new()
        .route("/", get(page))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let csp = csp.clone();
                async move {
                    let mut r = next.run(req).await;
                    let h = r.headers_mut();
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    h.insert(
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    );
                    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                    h.insert(
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&csp) {
                        h.insert(header::CONTENT_SECURITY_POLICY, v);
                    }
                    r
                }
            },
        ))
        .with_state(app)
}

/// Refuses (and counts) every request without the launch token.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    let ok = [from_header, from_query]
        .into_iter()
        .flatten()
        .any(|t| constant_time_eq(t.as_bytes(), app.token.as_bytes()));
    if !ok {
        let n = app.refused.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            path = %req.uri().path(),
            refused = n,
            "console request without its launch token refused"
        );
        return (
            StatusCode::UNAUTHORIZED,
            "this console needs the token from the URL it printed at launch\n",
        )
            .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page(State(app): State<Arc<App>>) -> Html<String> {
    Html(app.page.clone())
}
