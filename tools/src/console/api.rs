//! The console's JSON routes: each is one or a few desk requests, sent as the console's
//! operator; the server decides whether that operator's role allows it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rollcall_actors::action::server::ActRequest;
use rollcall_actors::desk::{DeskReply, DeskRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;

/// An error the page shows: the server's words, with a status that says whose fault it is.
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    /// What went wrong, as the page shows it.
    pub(crate) fn message(self) -> String {
        self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// One desk request; the desk's refusals become errors (403 for a role the certificate
/// lacks, 404 for what is not there, 400 for the rest).
pub(crate) async fn call(app: &App, req: DeskRequest) -> Result<DeskReply, ApiError> {
    match app.desk.call(req).await {
        Ok(DeskReply::Error(e)) => {
            let status = if e.starts_with("this needs the ") {
                StatusCode::FORBIDDEN
            } else if e.starts_with("no ") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(ApiError(status, e))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}"))),
    }
}

fn unexpected(r: DeskReply) -> ApiError {
    ApiError(
        StatusCode::BAD_GATEWAY,
        format!("the server answered with {r:?}"),
    )
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(crate) async fn me(State(app): State<Arc<App>>) -> ApiResult {
    to_json(&app.me)
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: String,
}

pub(crate) async fn search(State(app): State<Arc<App>>, Query(q): Query<SearchQuery>) -> ApiResult {
    if q.q.trim().is_empty() {
        return Ok(Json(json!([])));
    }
    match call(&app, DeskRequest::Search { text: q.q }).await? {
        DeskReply::Suggestions(s) => to_json(&s),
        r => Err(unexpected(r)),
    }
}

#[derive(Deserialize)]
pub(crate) struct AskBody {
    text: String,
    ttl_secs: Option<u64>,
}

pub(crate) async fn ask(State(app): State<Arc<App>>, Json(b): Json<AskBody>) -> ApiResult {
    let req = DeskRequest::Ask {
        text: b.text,
        ttl_ms: b.ttl_secs.map(|s| s.saturating_mul(1000)),
    };
    match call(&app, req).await? {
        DeskReply::Asked {
            id,
            expected,
            canonical,
        } => Ok(Json(
            json!({ "id": id, "expected": expected, "canonical": canonical }),
        )),
        r => Err(unexpected(r)),
    }
}

pub(crate) async fn questions(State(app): State<Arc<App>>) -> ApiResult {
    match call(&app, DeskRequest::List).await? {
        DeskReply::List(l) => to_json(&l),
        r => Err(unexpected(r)),
    }
}

/// Question `id` with every row.
pub(crate) async fn progress(
    app: &App,
    id: u64,
) -> Result<rollcall_cluster::questions::Progress, ApiError> {
    app.desk.progress_all_rows(id).await.map_err(|e| {
        let e = format!("{e:#}");
        let status = if e.starts_with("no question") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiError(status, e)
    })
}

pub(crate) async fn question(State(app): State<Arc<App>>, Path(id): Path<u64>) -> ApiResult {
    to_json(&progress(&app, id).await?)
}

#[derive(Deserialize)]
pub(crate) struct RowBody {
    cells: Vec<String>,
    #[serde(default)]
    from: usize,
}

/// The machines that gave one row (a page; the reply says how many in all).
pub(crate) async fn row_machines(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
    Json(b): Json<RowBody>,
) -> ApiResult {
    let req = DeskRequest::RowMachines {
        id,
        cells: b.cells,
        from: b.from,
    };
    match call(&app, req).await? {
        DeskReply::Machines { machines, total } => {
            let list: Vec<Value> = machines
                .into_iter()
                .map(|(id, host)| json!({ "id": id, "host": host }))
                .collect();
            Ok(Json(json!({ "machines": list, "total": total })))
        }
        r => Err(unexpected(r)),
    }
}

/// The grid as CSV: the question's columns, then the count and share of machines.
pub(crate) async fn export_csv(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let p = progress(&app, id).await?;
    let mut out = String::new();
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut head: Vec<String> = p.columns.iter().map(|c| field(c)).collect();
    head.extend(["Count".to_string(), "Share".to_string()]);
    out.push_str(&head.join(","));
    out.push_str("\r\n");
    for r in &p.rows {
        let mut line: Vec<String> = r.cells.iter().map(|c| field(c)).collect();
        line.push(r.count.to_string());
        line.push(format!("{:.4}", share(r.count, p.answered)));
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"question-{id}.csv\""),
            ),
        ],
        out,
    )
        .into_response())
}

/// The grid as JSON: the question, its progress and its rows with their share.
pub(crate) async fn export_json(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let p = progress(&app, id).await?;
    let rows: Vec<Value> = p
        .rows
        .iter()
        .map(|r| {
            let cells: serde_json::Map<String, Value> = p
                .columns
                .iter()
                .cloned()
                .zip(r.cells.iter().map(|c| Value::String(c.clone())))
                .collect();
            json!({ "cells": cells, "count": r.count, "share": share(r.count, p.answered) })
        })
        .collect();
    let body = json!({
        "id": p.id, "question": p.text, "answered": p.answered, "expected": p.expected,
        "matched": p.matched, "columns": p.columns, "rows": rows,
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"question-{id}.json\""),
            ),
        ],
        body.to_string(),
    )
        .into_response())
}

fn share(count: u64, answered: usize) -> f64 {
    if answered == 0 {
        0.0
    } else {
        count as f64 / answered as f64
    }
}

/// The saved questions, each with its last run's figures when the server still holds one.
pub(crate) async fn saved(State(app): State<Arc<App>>) -> ApiResult {
    let saved = match call(&app, DeskRequest::Saved).await? {
        DeskReply::Saved(s) => s,
        r => return Err(unexpected(r)),
    };
    let list = match call(&app, DeskRequest::List).await? {
        DeskReply::List(l) => l,
        r => return Err(unexpected(r)),
    };
    let mut out = Vec::new();
    for s in saved {
        // The list is newest first.
        let last = list.iter().find(|q| q.text == s.text);
        let mut entry = json!({ "name": s.name, "text": s.text, "every_secs": s.every_secs });
        if let Some(q) = last {
            let top = match app.desk.progress(q.id).await {
                Ok(p) => p
                    .rows
                    .iter()
                    .take(3)
                    .map(|r| json!({ "cells": r.cells, "count": r.count }))
                    .collect::<Vec<_>>(),
                Err(_) => Vec::new(),
            };
            entry["last"] = json!({
                "id": q.id, "answered": q.answered, "expected": q.expected, "top": top,
            });
        }
        out.push(entry);
    }
    Ok(Json(Value::Array(out)))
}

pub(crate) async fn rings(State(app): State<Arc<App>>) -> ApiResult {
    let r = app
        .desk
        .rings()
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    to_json(&r)
}

pub(crate) async fn packages(State(app): State<Arc<App>>) -> ApiResult {
    match call(&app, DeskRequest::Packages).await? {
        DeskReply::Packages(p) => {
            let list: Vec<Value> = p
                .into_iter()
                .map(|(name, what)| json!({ "name": name, "what": what }))
                .collect();
            Ok(Json(Value::Array(list)))
        }
        r => Err(unexpected(r)),
    }
}

pub(crate) async fn actions(State(app): State<Arc<App>>) -> ApiResult {
    match call(&app, DeskRequest::Actions).await? {
        DeskReply::Actions(a) => to_json(&a),
        r => Err(unexpected(r)),
    }
}

pub(crate) async fn action(State(app): State<Arc<App>>, Path(id): Path<u64>) -> ApiResult {
    let req = DeskRequest::ActionStatus {
        id,
        failed_only: false,
    };
    match call(&app, req).await? {
        DeskReply::Action(a) => to_json(&a),
        r => Err(unexpected(r)),
    }
}

/// An action as the page's deploy form sends it.
#[derive(Deserialize)]
pub(crate) struct ActBody {
    package: String,
    #[serde(default)]
    params: Vec<String>,
    filter: Option<String>,
    from_question: Option<u64>,
    machines: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
    script: Option<String>,
}

pub(crate) async fn act(State(app): State<Arc<App>>, Json(b): Json<ActBody>) -> ApiResult {
    let req = DeskRequest::Act(ActRequest {
        package: b.package,
        params: b.params,
        filter: b.filter.filter(|f| !f.trim().is_empty()),
        from_question: b.from_question,
        all: b.all,
        dry_run: b.dry_run,
        expire_secs: None,
        spread_secs: 0,
        purge: false,
        script: b.script,
        machines: b.machines.filter(|m| !m.is_empty()),
    });
    match call(&app, req).await? {
        DeskReply::Action(a) => to_json(&a),
        r => Err(unexpected(r)),
    }
}

async fn done(app: &App, req: DeskRequest) -> ApiResult {
    match call(app, req).await? {
        DeskReply::Done(s) => Ok(Json(json!({ "done": s }))),
        r => Err(unexpected(r)),
    }
}

pub(crate) async fn approve(State(app): State<Arc<App>>, Path(id): Path<u64>) -> ApiResult {
    done(&app, DeskRequest::Approve { id }).await
}

pub(crate) async fn deny(State(app): State<Arc<App>>, Path(id): Path<u64>) -> ApiResult {
    done(&app, DeskRequest::Deny { id }).await
}

pub(crate) async fn cancel(State(app): State<Arc<App>>, Path(id): Path<u64>) -> ApiResult {
    done(&app, DeskRequest::Cancel { id }).await
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    last: Option<usize>,
}

pub(crate) async fn audit(State(app): State<Arc<App>>, Query(q): Query<AuditQuery>) -> ApiResult {
    let last = q.last.unwrap_or(500).min(10_000);
    match call(&app, DeskRequest::Audit { last }).await? {
        DeskReply::Audit { entries, chain } => {
            let chain = match chain {
                Ok(n) => json!({ "intact": true, "entries": n }),
                Err(e) => json!({ "intact": false, "broken": e }),
            };
            Ok(Json(json!({ "entries": entries, "chain": chain })))
        }
        r => Err(unexpected(r)),
    }
}
