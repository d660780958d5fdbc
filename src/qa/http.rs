//! The QA web server: the queue page, the case page and the JSON API under `/api/`.
//!
//! Every route except `/login` needs the token from the token file, either as
//! `Authorization: Bearer TOKEN` or through the session cookie that a login sets (HttpOnly,
//! SameSite=Strict). Without it, `/api/` requests get 401 with a JSON error and pages get 401 with
//! the login form.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use ndarray::Axis;
use serde::Deserialize;
use serde_json::json;

use super::files::{self, MapKind, MaskKind, RleMask};
use super::i18n::{self, Language};
use super::store::{Action, CaseId, CaseRecord, CaseState, Decision, QaStore};
use super::{read_token, QaConfig, QaError};

const SESSION_COOKIE: &str = "penumbra_qa_session";
const LANGUAGE_COOKIE: &str = "penumbra_qa_lang";
const MAX_SESSIONS: usize = 1000;
/// How long a sign-in lasts: one long shift.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Request body limit: a worst-case RLE mask of a 512 x 512 slice (alternating labels) is about 4 MiB.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const STYLE: &str = include_str!("ui/style.css");
const APP_JS: &str = include_str!("ui/app.js");
const LOCAL_TIME_JS: &str = include_str!("ui/local-time.js");

/// Called after a reviewer decides a case (accept, accept_threshold, correct or reject), for
/// example to re-export the study with the final labels. Runs on a blocking thread.
pub trait DecisionHook: Send + Sync {
    fn on_decision(&self, case: &CaseRecord, decision: &Decision);
}

/// Shared state of the QA server.
#[derive(Clone)]
pub struct QaState {
    store: Arc<dyn QaStore>,
    token: Arc<str>,
    languages: Arc<[Language]>,
    /// Session id to reviewer name and sign-in time. Sessions live in memory, so a restart signs
    /// everyone out.
    sessions: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    hook: Option<Arc<dyn DecisionHook>>,
}

impl QaState {
    /// Builds the state. `languages` are codes from `en` and `cs`. Unknown codes are skipped, and an
    /// empty list means English only.
    pub fn new(store: Arc<dyn QaStore>, token: String, languages: &[String]) -> Self {
        let mut offered: Vec<Language> = languages.iter().filter_map(|l| Language::parse(l)).collect();
        if offered.is_empty() {
            offered.push(Language::En);
        }
        Self {
            store,
            token: token.into(),
            languages: offered.into(),
            sessions: Arc::default(),
            hook: None,
        }
    }

    /// Builds the state from the `qa` settings, reading the token file.
    pub fn from_config(config: &QaConfig, store: Arc<dyn QaStore>) -> Result<Self, QaError> {
        let token = read_token(&config.token_file)?;
        Ok(Self::new(store, token, &config.languages))
    }

    /// Adds the hook called after each decision.
    pub fn with_decision_hook(mut self, hook: Arc<dyn DecisionHook>) -> Self {
        self.hook = Some(hook);
        self
    }
}

/// Builds the router with every page and API route.
pub fn router(state: QaState) -> Router {
    let protected = Router::new()
        .route("/", get(queue_page))
        .route("/case/{id}", get(case_page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/local-time.js", get(local_time_js))
        .route("/logout", post(logout))
        .route("/api/cases", get(api_list))
        .route("/api/cases/{id}", get(api_get))
        .route("/api/cases/{id}/decision", post(api_decide))
        .route("/api/cases/{id}/mask/{slice}", put(api_put_mask))
        .route("/api/cases/{id}/labels/{slice}", get(api_labels))
        .route("/api/cases/{id}/image/{map}/{slice}", get(api_image))
        .route("/api/cases/{id}/audit", get(api_audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));

    Router::new()
        .route("/login", get(login_page).post(login))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the QA page on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: QaState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    if address.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(address = ?address, "QA server listens beyond loopback: put it behind a TLS proxy");
    }
    tracing::info!(address = ?address, "QA server started");
    let result = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await;
    tracing::info!(address = ?address, "QA server stopped");
    result
}

/// The reviewer behind a request: the login name, or `None` for bearer-token clients.
#[derive(Clone)]
struct Reviewer(Option<String>);

async fn require_auth(State(state): State<QaState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);

    let reviewer = if bearer.is_some_and(|token| constant_time_eq(token, &state.token)) {
        Some(Reviewer(None))
    } else {
        cookie(headers, SESSION_COOKIE).and_then(|session| {
            let sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .get(session)
                .filter(|(_, signed_in)| signed_in.elapsed() < SESSION_LIFETIME)
                .map(|(name, _)| Reviewer(Some(name.clone())))
        })
    };

    match reviewer {
        Some(reviewer) => {
            request.extensions_mut().insert(reviewer);
            next.run(request).await
        }
        None if request.uri().path().starts_with("/api/") => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "missing or invalid token: send Authorization: Bearer TOKEN or sign in at /login"})),
        )
            .into_response(),
        None => {
            let language = pick_language(&state, request.headers(), None);
            let next_path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
            let body = login_form(language, &next_path, language.strings().login_required);
            (StatusCode::UNAUTHORIZED, Html(body)).into_response()
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Picks the language: `?lang=`, then the language cookie, then `Accept-Language`, then the
/// first offered language.
fn pick_language(state: &QaState, headers: &HeaderMap, query: Option<&str>) -> Language {
    let offered = |l: &Language| state.languages.contains(l);
    query
        .and_then(Language::parse)
        .filter(offered)
        .or_else(|| cookie(headers, LANGUAGE_COOKIE).and_then(Language::parse).filter(offered))
        .or_else(|| {
            let header = headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
            i18n::from_accept_language(header, &state.languages)
        })
        .unwrap_or(state.languages[0])
}

/// Returns a `Set-Cookie` header that remembers the language when `?lang=` chose it.
fn language_cookie(query: Option<&str>, language: Language) -> Option<(header::HeaderName, HeaderValue)> {
    query.and_then(Language::parse).filter(|l| *l == language).map(|l| {
        let value = format!("{LANGUAGE_COOKIE}={}; Path=/; SameSite=Strict; Max-Age=31536000", l.code());
        (header::SET_COOKIE, HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")))
    })
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    lang: Option<String>,
    all: Option<String>,
    next: Option<String>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(language: Language, title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        lang = language.code(),
        title = escape(title),
    )
}

fn language_switch(language: Language, state: &QaState, base: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    let links: Vec<String> = state
        .languages
        .iter()
        .map(|l| {
            let class = if *l == language { " class=\"current\"" } else { "" };
            format!("<a{class} href=\"{}{separator}lang={code}\">{code}</a>", escape(base), code = l.code())
        })
        .collect();
    format!("<nav class=\"lang\" aria-label=\"{}\">{}</nav>", language.strings().language, links.join(" "))
}

fn login_form(language: Language, next: &str, message: &str) -> String {
    let s = language.strings();
    let body = format!(
        "<main class=\"login\"><h1>{title}</h1><p class=\"message\">{message}</p>\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <input type=\"hidden\" name=\"lang\" value=\"{lang}\">\
         <label>{token_label}<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label>\
         <label>{name_label}<input type=\"text\" name=\"name\" id=\"name\" autocomplete=\"name\"></label>\
         <button type=\"submit\" id=\"login\">{submit}</button></form></main>",
        title = s.login_title,
        message = escape(message),
        next = escape(next),
        lang = language.code(),
        token_label = s.login_token,
        name_label = s.login_name,
        submit = s.login_submit,
    );
    page(language, s.login_title, &body)
}

async fn login_page(State(state): State<QaState>, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    let language = pick_language(&state, &headers, query.lang.as_deref());
    let next = safe_next(query.next.as_deref());
    let mut response = Html(login_form(language, next, "")).into_response();
    if let Some((name, value)) = language_cookie(query.lang.as_deref(), language) {
        response.headers_mut().append(name, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    lang: String,
}

/// Allows only same-site paths as a redirect target after login.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path,
        _ => "/",
    }
}

async fn login(State(state): State<QaState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let language = pick_language(&state, &headers, Some(form.lang.as_str()).filter(|l| !l.is_empty()));
    let next = safe_next(Some(form.next.as_str())).to_owned();
    if !constant_time_eq(form.token.trim(), &state.token) {
        tracing::warn!("QA login failed: wrong token");
        let body = login_form(language, &next, language.strings().login_failed);
        return (StatusCode::UNAUTHORIZED, Html(body)).into_response();
    }

    let name: String = form.name.trim().chars().filter(|c| !c.is_control()).take(80).collect();
    let name = if name.is_empty() { "reviewer".to_owned() } else { name };
    let session = uuid::Uuid::new_v4().simple().to_string();
    {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, (_, signed_in)| signed_in.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            tracing::warn!(sessions = sessions.len(), "Too many QA sessions: signing everyone out");
            sessions.clear();
        }
        sessions.insert(session.clone(), (name.clone(), Instant::now()));
    }
    tracing::info!(reviewer = %name, "QA reviewer signed in");

    let max_age = SESSION_LIFETIME.as_secs();
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<QaState>, headers: HeaderMap) -> Response {
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(session);
    }
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// An error as the API returns it: a status and `{"error": message}`.
struct ApiError(StatusCode, String);

impl From<QaError> for ApiError {
    fn from(error: QaError) -> Self {
        let status = match &error {
            QaError::NotFound(_) => StatusCode::NOT_FOUND,
            QaError::IllegalTransition { .. } | QaError::NoCorrection(_) => StatusCode::CONFLICT,
            QaError::InvalidMask(_) | QaError::InvalidCase(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => {
                tracing::error!(error = %error, "QA request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Unwraps path parameters, turning a malformed one (such as a case id that is not a number)
/// into a 400 JSON error.
fn path_value<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid path parameter: {}", e.body_text())))
}

/// Answers unknown paths: JSON under `/api/`, plain text elsewhere.
async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/api/") {
        ApiError(StatusCode::NOT_FOUND, format!("no api route {path}: see /api/cases")).into_response()
    } else {
        (StatusCode::NOT_FOUND, "page not found").into_response()
    }
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, QaError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(error) => {
            tracing::error!(error = %error, "QA store task failed");
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("store task failed: {error}")))
        }
    }
}

fn case_json(case: &CaseRecord) -> serde_json::Value {
    json!({
        "id": case.id,
        "study_uid": case.study_uid,
        "arrival": case.arrival,
        "urgency": case.urgency,
        "state": case.state,
        "confidence": case.confidence,
        "volumes": case.volumes,
        "model_version": case.model_version,
        "slices": case.shape[0],
        "height": case.shape[1],
        "width": case.shape[2],
        "has_correction": case.has_correction,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Comma-separated state names. Without it, every state is listed.
    state: Option<String>,
}

fn parse_states(text: Option<&str>) -> Result<Vec<CaseState>, ApiError> {
    let Some(text) = text else { return Ok(Vec::new()) };
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            CaseState::parse(s).ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("unknown state {s:?}: use pending, in_review, accepted, corrected, rejected or accepted_threshold"),
                )
            })
        })
        .collect()
}

async fn api_list(State(state): State<QaState>, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    let states = parse_states(query.state.as_deref())?;
    let store = state.store.clone();
    let cases = blocking(move || store.list(&states)).await?;
    let cases: Vec<_> = cases.iter().map(case_json).collect();
    Ok(Json(json!({"cases": cases})).into_response())
}

async fn api_get(State(state): State<QaState>, id: Result<Path<CaseId>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_value(id)?;
    let store = state.store.clone();
    let case = blocking(move || store.get(id)).await?;
    Ok(Json(case_json(&case)).into_response())
}

#[derive(Debug, Deserialize)]
struct DecisionBody {
    action: Action,
    #[serde(default)]
    reviewer: Option<String>,
    #[serde(default)]
    note: String,
}

async fn api_decide(
    State(state): State<QaState>,
    Extension(reviewer): Extension<Reviewer>,
    id: Result<Path<CaseId>, PathRejection>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = path_value(id)?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid decision body: {e}; send {{\"action\": \"accept\", \"note\": \"...\"}}"),
        )
    })?;
    let who = reviewer.0.or(body.reviewer).unwrap_or_else(|| "api".to_owned());
    let decision = Decision { action: body.action, reviewer: who, note: body.note };

    let store = state.store.clone();
    let hook = state.hook.clone();
    let case = blocking(move || {
        let case = store.decide(id, &decision)?;
        if let (Some(hook), true) = (hook, case.state.is_final()) {
            hook.on_decision(&case, &decision);
        }
        Ok(case)
    })
    .await?;
    Ok(Json(case_json(&case)).into_response())
}

async fn api_put_mask(
    State(state): State<QaState>,
    Extension(reviewer): Extension<Reviewer>,
    path: Result<Path<(CaseId, usize)>, PathRejection>,
    body: Result<Json<RleMask>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, slice) = path_value(path)?;
    let Json(mask) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid mask body: {e}; send {{\"width\": W, \"height\": H, \"runs\": [[label, count], ...]}}"),
        )
    })?;
    let values = mask.decode()?;
    let who = reviewer.0.unwrap_or_else(|| "api".to_owned());

    let store = state.store.clone();
    blocking(move || store.save_mask_slice(id, slice, values.view(), &who)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn api_labels(
    State(state): State<QaState>,
    path: Result<Path<(CaseId, usize)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, slice) = path_value(path)?;
    let store = state.store.clone();
    let slices = blocking(move || {
        let case = store.get(id)?;
        if slice >= case.shape[0] {
            return Err(QaError::InvalidMask(format!("slice {slice} is out of range 0..{}", case.shape[0])));
        }
        let encode = |kind: MaskKind| -> Result<Option<RleMask>, QaError> {
            let volume = files::read_mask(&case.dir, kind)?;
            Ok(volume.map(|v| RleMask::encode(v.index_axis(Axis(0), slice))))
        };
        Ok((encode(MaskKind::Unet)?, encode(MaskKind::Threshold)?, encode(MaskKind::Corrected)?))
    })
    .await?;
    Ok(Json(json!({"unet": slices.0, "threshold": slices.1, "corrected": slices.2})).into_response())
}

async fn api_image(
    State(state): State<QaState>,
    path: Result<Path<(CaseId, String, usize)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, map, slice) = path_value(path)?;
    let kind = MapKind::parse(&map)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown map {map:?}: use cbf or tmax")))?;
    let store = state.store.clone();
    let bytes = blocking(move || {
        let case = store.get(id)?;
        if slice >= case.shape[0] {
            return Err(QaError::InvalidMask(format!("slice {slice} is out of range 0..{}", case.shape[0])));
        }
        let path = files::slice_png_path(&case.dir, kind, slice);
        std::fs::read(&path).map_err(|e| QaError::Io { path, source: e })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], bytes).into_response())
}

async fn api_audit(State(state): State<QaState>, id: Result<Path<CaseId>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_value(id)?;
    let store = state.store.clone();
    let entries = blocking(move || store.audit(id)).await?;
    Ok(Json(json!({"entries": entries})).into_response())
}

async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
}

async fn local_time_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], LOCAL_TIME_JS).into_response()
}

fn with_language_cookie(mut response: Response, query: &PageQuery, language: Language) -> Response {
    if let Some((name, value)) = language_cookie(query.lang.as_deref(), language) {
        response.headers_mut().append(name, value);
    }
    response
}

async fn queue_page(
    State(state): State<QaState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let language = pick_language(&state, &headers, query.lang.as_deref());
    let show_all = query.all.is_some();
    let states = if show_all { Vec::new() } else { vec![CaseState::Pending, CaseState::InReview] };
    let store = state.store.clone();
    let cases = blocking(move || store.list(&states)).await?;

    let body = render_queue(language, &state, &cases, show_all);
    let title = language.strings().queue_title;
    Ok(with_language_cookie(Html(page(language, title, &body)).into_response(), &query, language))
}

fn render_queue(language: Language, state: &QaState, cases: &[CaseRecord], show_all: bool) -> String {
    let s = language.strings();
    let mut rows = String::new();
    for case in cases {
        rows.push_str(&render_queue_row(language, case));
    }
    let table = if cases.is_empty() {
        format!("<p class=\"empty\">{}</p>", s.queue_empty)
    } else {
        format!(
            "<table id=\"queue\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>\
             <th>{} {}</th><th>{} {}</th></tr></thead><tbody>{rows}</tbody></table>",
            s.study_uid, s.arrival, s.urgency, s.state, s.confidence, s.core, s.unet, s.hypoperfused, s.unet
        )
    };
    let (toggle_href, toggle_text) = if show_all { ("/", s.show_pending) } else { ("/?all=1", s.show_all) };
    let base = if show_all { "/?all=1" } else { "/" };
    format!(
        "<header><h1>{}</h1>{}<form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"logout\">{}</button></form>\
         </header><main><p><a href=\"{toggle_href}\">{toggle_text}</a></p>{table}</main>\
         <script src=\"/assets/local-time.js\"></script>",
        s.queue_title,
        language_switch(language, state, base),
        s.logout
    )
}

/// Formats a number with the language's decimal separator (a comma in Czech).
fn format_decimal(language: Language, value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    match language {
        Language::En => text,
        Language::Cs => text.replace('.', ","),
    }
}

fn render_queue_row(language: Language, case: &CaseRecord) -> String {
    let s = language.strings();
    let score = format_decimal(language, case.confidence.score, 2);
    let confidence = if case.confidence.assessable { score } else { format!("{score} ({})", s.not_assessable) };
    format!(
        "<tr class=\"case\" data-case-id=\"{id}\" data-state=\"{state_code}\"><td><a href=\"/case/{id}\">{uid}</a></td>\
         <td><time datetime=\"{arrival}\">{arrival}</time></td><td>{urgency}</td><td>{state}</td><td>{confidence}</td><td>{core}</td><td>{hypo}</td></tr>",
        id = case.id,
        state_code = case.state.as_str(),
        uid = escape(&case.study_uid),
        arrival = escape(&case.arrival),
        urgency = case.urgency,
        state = s.state_name(case.state.as_str()),
        core = format_decimal(language, case.volumes.unet.core_ml, 1),
        hypo = format_decimal(language, case.volumes.unet.hypoperfused_ml, 1),
    )
}

async fn case_page(
    State(state): State<QaState>,
    headers: HeaderMap,
    Path(id): Path<CaseId>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let language = pick_language(&state, &headers, query.lang.as_deref());
    let store = state.store.clone();
    let case = blocking(move || store.get(id)).await?;

    let data = json!({"case_id": case.id, "lang": language.code(), "strings": language.strings()});
    let data = data.to_string().replace("</", "<\\/");
    let s = language.strings();
    let body = format!(
        "<header><h1>{title} <span class=\"uid\">{uid}</span></h1>{switch}<a href=\"/\">{back}</a></header>\
         <main id=\"case\"></main>\
         <script id=\"qa-data\" type=\"application/json\">{data}</script>\
         <script src=\"/assets/app.js\"></script>",
        title = s.title,
        uid = escape(&case.study_uid),
        switch = language_switch(language, &state, &format!("/case/{}", case.id)),
        back = s.back_to_queue,
    );
    Ok(with_language_cookie(Html(page(language, s.title, &body)).into_response(), &query, language))
}
