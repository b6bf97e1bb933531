//! The chat, Responses, embeddings and models endpoints (key, body, model, account state,
//! faults, limits, answer), and the stored responses' retrieve, delete and input items.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Response, StatusCode};

use crate::bodies::{self, json_str, Dialect};
use crate::body::{Aborted, SimBody, StreamItem, StreamPlan};
use crate::completion::{ChatRequest, Completion, Shape};
use crate::config::AccountState;
use crate::faults::{FaultKind, StreamErrorShape, Target};
use crate::limits::{LimitKind, Refusal};
use crate::respond::{add_rate_headers, answer, json_answer, EVENT_STREAM, JSON};
use crate::state::{lock, Admission, SimState, Stored};

/// The shortest input the session cache keeps (DashScope: 1,024 tokens).
const MIN_SESSION_TOKENS: u64 = 1_024;

/// `created` of every listed model.
const MODEL_CREATED: u64 = 1_735_689_600;

/// Everything decided under the lock before the first await.
struct Accepted {
    id: String,
    account: String,
    request: ChatRequest,
    fault: Option<FaultKind>,
    completion: Completion,
    chunk_delay_ms: u64,
}

/// Who calls, in which dialect, and whether it asks for DashScope's session cache
/// (`x-dashscope-session-cache: enable` on the DashScope dialect).
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The API's dialect.
    pub dialect: Dialect,
    /// The bearer key.
    pub key: &'a str,
    /// The session cache asked for.
    pub session_cache: bool,
}

/// How a request's body is read: `ChatRequest::parse`, `parse_responses` or `parse_embeddings`.
pub type Parse = fn(&[u8]) -> Result<ChatRequest, String>;

/// `POST .../chat/completions`, `.../responses` and `.../embeddings` (`parse` says which). `Err` closes the
/// connection without an answer.
pub async fn chat(
    state: &Arc<Mutex<SimState>>,
    call: Call<'_>,
    body: &[u8],
    parse: Parse,
    started: Instant,
) -> Result<Response<SimBody>, Aborted> {
    let dialect = call.dialect;
    let accepted = match accept(state, call, body, parse, started) {
        Ok(a) => a,
        Err(refused) => return Ok(*refused),
    };
    let Accepted {
        id,
        account,
        request,
        fault,
        completion,
        chunk_delay_ms,
    } = accepted;
    let mut first_delay_ms = 0;
    match fault {
        Some(FaultKind::Status { status, body }) => {
            let body = body.unwrap_or_else(|| bodies::fault_status(dialect, &id, status));
            return Ok(json_answer(dialect, &id, started, status, body));
        }
        Some(FaultKind::Reset) => return Err(Aborted),
        Some(kind @ (FaultKind::StreamError { .. } | FaultKind::StreamCut { .. })) => {
            let plan = StreamPlan {
                first_delay_ms: 0,
                chunk_delay_ms,
                items: faulty_stream(&kind, &id, &completion),
            };
            return Ok(stream_answer(state, dialect, &id, started, plan));
        }
        Some(FaultKind::Delay { ms }) => wait(state, ms).await,
        Some(FaultKind::SlowFirstToken { ms }) => first_delay_ms = ms,
        // Already applied as `chunk_delay_ms`.
        Some(FaultKind::SlowStream { .. }) | None => {}
    }
    let admission = lock(state).admit(
        &account,
        &request.model,
        completion.prompt_tokens,
        completion.total_completion_tokens(),
    );
    if let Some(refusal) = admission.refusal {
        let mut resp = limit_answer(dialect, &id, started, &request.model, &admission, refusal);
        if dialect == Dialect::OpenAi {
            add_rate_headers(&mut resp, &admission);
        }
        return Ok(resp);
    }
    lock(state).warm_cache(&account, &request.model, &request.prefixes);
    let mut resp = if request.stream {
        let mut items: Vec<StreamItem> = completion.role_events().into_iter().map(data).collect();
        items.extend(completion.content_events().into_iter().map(data));
        items.extend(
            completion
                .closing_events(request.include_usage)
                .into_iter()
                .map(data),
        );
        let plan = StreamPlan {
            first_delay_ms,
            chunk_delay_ms,
            items,
        };
        stream_answer(state, dialect, &id, started, plan)
    } else {
        wait(state, first_delay_ms).await;
        json_answer(dialect, &id, started, 200, completion.to_json())
    };
    if dialect == Dialect::OpenAi {
        add_rate_headers(&mut resp, &admission);
    }
    Ok(resp)
}

/// Sleeps `ms` before answering; counts a client disconnect when the client leaves meanwhile
/// (hyper then drops this future, and the guard with it).
async fn wait(state: &Arc<Mutex<SimState>>, ms: u64) {
    struct Waiting<'a> {
        state: &'a Arc<Mutex<SimState>>,
        done: bool,
    }
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            if !self.done {
                lock(self.state).record_disconnect();
            }
        }
    }
    if ms == 0 {
        return;
    }
    let mut guard = Waiting { state, done: false };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    guard.done = true;
}

/// Checks key, body, model and account state, and picks a fault; `Err` is the refusal.
fn accept(
    state: &Arc<Mutex<SimState>>,
    call: Call<'_>,
    body: &[u8],
    parse: Parse,
    started: Instant,
) -> Result<Accepted, Box<Response<SimBody>>> {
    let Call {
        dialect,
        key,
        session_cache,
    } = call;
    let mut s = lock(state);
    s.record_call();
    let id = s.next_request_id();
    let refuse =
        |status: u16, body: String| Box::new(json_answer(dialect, &id, started, status, body));
    let Some(account) = s.account_of(key) else {
        s.record_unauthorized();
        return Err(refuse(401, bodies::invalid_api_key(dialect, &id, key)));
    };
    s.record_key_call(key, &account);
    let request = match parse(body) {
        Ok(r) => r,
        Err(what) => {
            s.record_invalid(&account);
            return Err(refuse(400, bodies::invalid_parameter(dialect, &id, &what)));
        }
    };
    let not_here = match request.shape {
        Shape::Response => s.config.chat_only.contains(&request.model),
        Shape::Text { .. } => s
            .config
            .completion_models
            .as_ref()
            .is_some_and(|m| !m.contains(&request.model)),
        _ => false,
    };
    if !s.config.models.contains(&request.model) || not_here {
        s.record_invalid(&account);
        let body = bodies::model_not_found(dialect, &id, &request.model);
        return Err(refuse(404, body));
    }
    if let Some(previous) = &request.previous_response_id {
        if s.stored_response(&account, previous).is_none() {
            s.record_invalid(&account);
            let body = bodies::previous_response_not_found(dialect, &id, previous);
            return Err(refuse(400, body));
        }
    }
    let model = request.model.clone();
    s.record_model_call(&account, &model);
    let refusal = match s.account_state(&account) {
        AccountState::Ok => None,
        AccountState::FreeQuotaExhausted => {
            Some(("free_quota", 429, bodies::free_quota(dialect, &id)))
        }
        AccountState::FreeTierOnly => {
            Some(("free_tier_only", 403, bodies::FREE_TIER_ONLY.to_string()))
        }
        AccountState::Arrears => Some(("arrearage", 400, bodies::arrearage(dialect, &id))),
        AccountState::Overdue => Some(("overdue", 429, bodies::prepaid_overdue(dialect, &id))),
    };
    if let Some((counter, status, body)) = refusal {
        s.record_error(&account, &model, counter);
        return Err(refuse(status, body));
    }
    let fault = s.faults.take(&Target {
        account: &account,
        key,
        model: &model,
        stream: request.stream,
    });
    if fault.as_ref().is_some_and(FaultKind::is_failure) {
        s.record_error(&account, &model, "fault");
    }
    let mut prompt_tokens = request.prompt_tokens;
    let mut cached_tokens = s.cached_tokens(&account, &model, &request.prefixes);
    let mut explicit_writes = None;
    if let Some(marked) = request.marked {
        // Explicit mode: the marked prefix is read from the explicit cache, or written to it;
        // the implicit cache does not apply.
        let (read, written) = s.explicit_cache(&account, &model, marked);
        cached_tokens = read;
        explicit_writes = Some(written);
    }
    if session_cache && request.shape == Shape::Response {
        // The session cache holds the conversation so far: the previous response's whole
        // context, counted in this input as DashScope counts it; the rest is written.
        let previous = request.previous_response_id.as_deref();
        let context = previous
            .and_then(|p| s.stored_response(&account, p))
            .map_or(0, |stored| stored.context_tokens());
        prompt_tokens += context;
        cached_tokens = context;
        let rest = prompt_tokens - context;
        explicit_writes = Some(if prompt_tokens >= MIN_SESSION_TOKENS {
            rest
        } else {
            0
        });
    }
    let completion = Completion {
        id: format!("chatcmpl-{id}"),
        model,
        created: unix_now(),
        prompt_tokens,
        cached_tokens,
        explicit_writes,
        completion_tokens: request.completion_tokens(s.config.completion_tokens),
        choices: request.choices,
        shape: request.shape,
    };
    if completion.shape == Shape::Response {
        let stored = Stored {
            account: account.clone(),
            answer: completion.to_json(),
            input: request.input.clone(),
        };
        s.store_response(format!("resp_{id}"), stored);
    }
    let chunk_delay_ms = match fault {
        Some(FaultKind::SlowStream { ms }) => ms,
        _ => s.config.stream_chunk_delay_ms,
    };
    drop(s);
    Ok(Accepted {
        id,
        account,
        request,
        fault,
        completion,
        chunk_delay_ms,
    })
}

/// The 429 of a full limit, in the dialect's words.
fn limit_answer(
    dialect: Dialect,
    id: &str,
    started: Instant,
    model: &str,
    admission: &Admission,
    r: Refusal,
) -> Response<SimBody> {
    let body = match dialect {
        Dialect::DashScope => match r.kind {
            LimitKind::Burst => bodies::LIMIT_BURST_RATE.to_string(),
            LimitKind::Rps | LimitKind::Rpm => bodies::LIMIT_REQUESTS.to_string(),
            LimitKind::Tps | LimitKind::Tpm => bodies::token_quota(id),
        },
        Dialect::OpenAi => bodies::openai_rate_limit(
            r.kind.is_tokens(),
            model,
            r.limit,
            r.used,
            r.requested,
            admission.wait_ms,
        ),
    };
    json_answer(dialect, id, started, 429, body)
}

/// Items of a `stream_error` or `stream_cut` stream: role and `after_chunks` contents (none
/// at all when it is 0), then the error frame or the abort.
fn faulty_stream(kind: &FaultKind, id: &str, completion: &Completion) -> Vec<StreamItem> {
    let (after, last) = match kind {
        FaultKind::StreamError {
            shape,
            after_chunks,
            code,
            message,
        } => {
            let frame = match shape {
                // A Responses stream fails with its own events: `error`, or `response.failed`.
                _ if completion.shape == Shape::Response => completion.response_error_event(
                    *shape == StreamErrorShape::Native,
                    code.as_deref().unwrap_or("server_error"),
                    message.as_deref().unwrap_or("The model failed to answer."),
                ),
                StreamErrorShape::Compat => {
                    bodies::compat_stream_error(code.as_deref(), message.as_deref())
                }
                StreamErrorShape::Native => bodies::native_stream_error(id),
            };
            (*after_chunks as usize, data(frame))
        }
        FaultKind::StreamCut { after_chunks } => (*after_chunks as usize, StreamItem::Abort),
        _ => (0, StreamItem::Abort),
    };
    let mut items = Vec::new();
    if after > 0 {
        items.extend(completion.role_events().into_iter().map(data));
        items.extend(
            completion
                .content_events()
                .into_iter()
                .take(after)
                .map(data),
        );
    }
    items.push(last);
    items
}

fn stream_answer(
    state: &Arc<Mutex<SimState>>,
    dialect: Dialect,
    id: &str,
    started: Instant,
    plan: StreamPlan,
) -> Response<SimBody> {
    let body = plan.spawn(Arc::clone(state));
    let mut resp = answer(dialect, id, started, StatusCode::OK, EVENT_STREAM, body);
    crate::respond::set_header(&mut resp, "cache-control", "no-cache");
    resp
}

fn data(event: String) -> StreamItem {
    StreamItem::Data(Bytes::from(event))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET` or `DELETE .../responses/<id>`, `GET .../responses/<id>/input_items`: a response
/// the key's account holds (any other is not found, as another account's is upstream).
pub fn stored_response(
    state: &Arc<Mutex<SimState>>,
    dialect: Dialect,
    key: &str,
    delete: bool,
    rest: &str,
    started: Instant,
) -> Response<SimBody> {
    let mut s = lock(state);
    let id = s.next_request_id();
    let Some(account) = s.account_of(key) else {
        let body = bodies::invalid_api_key(dialect, &id, key);
        return json_answer(dialect, &id, started, 401, body);
    };
    let (response_id, input_items) = match rest.strip_suffix("/input_items") {
        Some(response_id) => (response_id, true),
        None => (rest, false),
    };
    let answer = match s.stored_response(&account, response_id) {
        None => None,
        Some(_) if delete => {
            s.delete_response(&account, response_id);
            Some(serde_json::json!({"id": response_id, "object": "response.deleted", "deleted": true}).to_string())
        }
        Some(stored) if input_items => {
            let data: Vec<serde_json::Value> = stored
                .input
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut item = item.clone();
                    item["id"] = format!("msg_{i}").into();
                    item["type"] = "message".into();
                    item
                })
                .collect();
            Some(serde_json::json!({"object": "list", "data": data, "has_more": false}).to_string())
        }
        Some(stored) => Some(stored.answer.clone()),
    };
    drop(s);
    match answer {
        Some(body) => json_answer(dialect, &id, started, 200, body),
        None => {
            let body = bodies::response_not_found(dialect, &id, response_id);
            json_answer(dialect, &id, started, 404, body)
        }
    }
}

/// `GET .../models`: the served models, for any valid key.
pub fn models(
    state: &Arc<Mutex<SimState>>,
    dialect: Dialect,
    key: &str,
    started: Instant,
) -> Response<SimBody> {
    let mut s = lock(state);
    let id = s.next_request_id();
    if s.account_of(key).is_none() {
        let body = bodies::invalid_api_key(dialect, &id, key);
        return json_answer(dialect, &id, started, 401, body);
    }
    let data: Vec<String> = s
        .config
        .models
        .iter()
        .map(|m| {
            format!(
                r#"{{"id":{},"object":"model","created":{MODEL_CREATED},"owned_by":"system"}}"#,
                json_str(m)
            )
        })
        .collect();
    drop(s);
    let body = format!(r#"{{"object":"list","data":[{}]}}"#, data.join(","));
    answer(
        dialect,
        &id,
        started,
        StatusCode::OK,
        JSON,
        SimBody::full(body),
    )
}
