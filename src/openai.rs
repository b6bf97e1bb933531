//! OpenAI wire shapes the gateway speaks: the error body, request checks, `usage`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An error a client sees: rendered as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: u16,
    /// Human-readable reason; never contains a secret.
    pub message: String,
    /// OpenAI error `type`, e.g. `invalid_request_error`.
    pub kind: String,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// Machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after_s: Option<u64>,
    /// Whether the official SDKs should retry (sent as `x-should-retry`).
    pub should_retry: Option<bool>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// An error with no param and no retry advice.
    pub fn new(status: u16, kind: &str, code: Option<&str>, message: String) -> Self {
        ApiError {
            status,
            message,
            kind: kind.to_string(),
            param: None,
            code: code.map(str::to_string),
            retry_after_s: None,
            should_retry: None,
        }
    }

    /// 400 for a request the client must fix; never worth retrying.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(400, "invalid_request_error", None, message.into());
        e.param = param.map(str::to_string);
        e.should_retry = Some(false);
        e
    }

    /// 401 for a missing or wrong gateway credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            message.into(),
        );
        e.should_retry = Some(false);
        e
    }

    /// 404 for a path the gateway does not serve.
    pub fn unknown_route(method: &str, path: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("unknown_url"),
            // Outside /v1 (and the admin pages), most likely a base_url without /v1.
            match path.starts_with("/admin") || path.starts_with("/v1/") {
                true => format!("Unrecognized request URL ({method} {path})."),
                false => format!("Unrecognized request URL ({method} {path}). The gateway serves OpenAI's API under /v1: set your SDK's base_url to this host followed by /v1."),
            },
        )
    }

    /// 404 for a model name the gateway has no route for.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` is not served by this gateway."),
        );
        e.param = Some("model".to_string());
        e.should_retry = Some(false);
        e
    }

    /// 404 for an admin path naming a bucket the config does not have.
    pub fn bucket_not_found(account: &str, model: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("bucket_not_found"),
            format!("No account '{account}' serving '{model}' is configured."),
        )
    }

    /// 404 for an admin path naming an account the config does not have.
    pub fn account_not_found(account: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("account_not_found"),
            format!("No account '{account}' is configured."),
        )
    }

    /// 404 for an admin path naming a client the config does not have.
    pub fn client_not_found(client: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            Some("client_not_found"),
            format!("No client '{client}' is configured."),
        )
    }

    /// 503 when a Durable Object holding quota state (a bucket, a meter) did not answer in
    /// time; `what` says which, e.g. "The bucket a/m did not answer in time".
    pub fn store_unavailable(what: &str) -> Self {
        let mut e = Self::new(
            503,
            "server_error",
            Some("quota_store_unavailable"),
            format!("{what}; retry."),
        );
        e.retry_after_s = Some(1);
        e
    }

    /// 405 for a known path called with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            Some("method_not_allowed"),
            format!("Method {method} is not allowed on {path}."),
        )
    }

    /// 413 for a body over the gateway's size limit; never worth retrying as is.
    pub fn payload_too_large(limit_bytes: u64) -> Self {
        let mut e = Self::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            format!("The request body is larger than this gateway accepts ({limit_bytes} bytes)."),
        );
        e.should_retry = Some(false);
        e
    }

    /// 502 when the upstream failed or could not be reached.
    pub fn bad_gateway(code: &str, message: impl Into<String>) -> Self {
        Self::new(502, "upstream_error", Some(code), message.into())
    }

    /// 500 for the gateway's own misconfiguration; the message names what to fix.
    pub fn config(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            500,
            "server_error",
            Some("gateway_misconfigured"),
            message.into(),
        );
        e.should_retry = Some(false);
        e
    }

    /// The JSON body in OpenAI's error shape.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorFields {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        serde_json::to_string(&body).unwrap_or_else(|_| String::from("{\"error\":{}}"))
    }
}

/// The model endpoints the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses` (the Responses API).
    Responses,
    /// `/v1/completions` (text completion: a `prompt`, e.g. an editor's fill-in-the-middle).
    Completions,
}

impl Endpoint {
    /// Its path under an upstream's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Completions => "completions",
        }
    }

    /// The request's field holding its input, named when the input alone is too large.
    pub fn input_param(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Embeddings | Endpoint::Responses => "input",
            Endpoint::Completions => "prompt",
        }
    }

    /// Whether a lower model may answer: not embeddings, whose vectors from another model
    /// would not compare with the ones the client has.
    pub fn may_downgrade(self) -> bool {
        self != Endpoint::Embeddings
    }

    /// Whether an upstream may serve a model for chat and not here: DashScope serves the
    /// Responses API for some models, and text completion for its Qwen Coder models only.
    pub fn may_lack_model(self) -> bool {
        matches!(self, Endpoint::Responses | Endpoint::Completions)
    }
}

/// A request to a model endpoint that passed the gateway's checks; the raw JSON is kept so
/// unknown fields reach the upstream untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The public model name the client asked for.
    pub model: String,
    /// Whether the client asked for a server-sent-event stream.
    pub stream: bool,
    /// The whole body as sent.
    pub body: Map<String, Value>,
}

impl ApiRequest {
    /// Parses and checks a body for `endpoint`; a chat's of at most `max_messages` messages.
    pub fn parse(
        bytes: &[u8],
        endpoint: Endpoint,
        max_messages: usize,
    ) -> Result<ApiRequest, ApiError> {
        let value: Value = crate::json::from_bytes(bytes).map_err(|e| {
            ApiError::invalid_request(
                format!("We could not parse the JSON body of your request: {e}."),
                None,
            )
        })?;
        let Value::Object(body) = value else {
            return Err(ApiError::invalid_request(
                "The request body must be a JSON object.",
                None,
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "`model` must be a non-empty string.",
                    Some("model"),
                ))
            }
            None => {
                return Err(ApiError::invalid_request(
                    "you must provide a model parameter",
                    Some("model"),
                ))
            }
        };
        match endpoint {
            Endpoint::Embeddings => {
                check_texts(&body, "input")?;
                return Ok(ApiRequest {
                    endpoint,
                    model,
                    stream: false,
                    body,
                });
            }
            Endpoint::Chat => check_messages(&body, max_messages)?,
            Endpoint::Responses => check_response_input(&body, max_messages)?,
            Endpoint::Completions => check_texts(&body, "prompt")?,
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "`stream` must be a boolean.",
                    Some("stream"),
                ))
            }
        };
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some() => {}
                Some(_) => {
                    return Err(ApiError::invalid_request(
                        format!("`{field}` must be a non-negative integer."),
                        Some(field),
                    ))
                }
            }
        }
        // Each of `n` choices (text completion's `best_of` candidates) may use the whole
        // output cap, so the reservation multiplies by it.
        for field in ["n", "best_of"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
                Some(_) => {
                    return Err(ApiError::invalid_request(
                        format!("`{field}` must be a positive integer."),
                        Some(field),
                    ))
                }
            }
        }
        Ok(ApiRequest {
            endpoint,
            model,
            stream,
            body,
        })
    }

    /// The body to send upstream, with `model` set to the upstream model name and a
    /// `previous_response_id` the gateway handed out as the upstream's own id
    /// (`crate::affinity`). Written from the parsed body as it is, not from a copy: an inline
    /// photo is megabytes, and each attempt writes the body again.
    pub fn upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        serde_json::to_vec(&Upstream(&self.body, upstream_model)).unwrap_or_default()
    }

    /// The stored response a Responses request continues (`previous_response_id`, as the
    /// gateway handed it out: `crate::affinity::follow_up` says where it goes).
    pub fn previous_response_id(&self) -> Option<&str> {
        self.body.get("previous_response_id")?.as_str()
    }
}

/// A chat's `messages`: a non-empty array of at most `max_messages`.
fn check_messages(body: &Map<String, Value>, max_messages: usize) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::invalid_request(message, Some("messages")));
    match body.get("messages") {
        Some(Value::Array(m)) if m.len() > max_messages => invalid(format!(
            "`messages` holds {} messages; this gateway accepts at most {max_messages}.",
            m.len()
        )),
        Some(Value::Array(m)) if !m.is_empty() => Ok(()),
        Some(Value::Array(_)) => invalid("`messages` must contain at least one message.".into()),
        Some(_) => invalid("`messages` must be an array of messages.".into()),
        None => invalid("Missing required parameter: 'messages'.".into()),
    }
}

/// A Responses request's `input`: a string or an array of at most `max_messages` items; it
/// may be left out only when the context lives upstream (`previous_response_id`,
/// `conversation`, a stored `prompt`). `background` is refused: its answer is fetched later
/// from the account that made it, which a gateway rotating accounts cannot promise.
fn check_response_input(body: &Map<String, Value>, max_messages: usize) -> Result<(), ApiError> {
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_request(
            "`background` responses are not served by this gateway (their result is fetched later from the upstream account that ran them); send the request without it.",
            Some("background"),
        ));
    }
    let invalid = |message: String| Err(ApiError::invalid_request(message, Some("input")));
    match body.get("input") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.len() > max_messages => invalid(format!(
            "`input` holds {} items; this gateway accepts at most {max_messages}.",
            items.len()
        )),
        Some(Value::Array(_)) => Ok(()),
        None | Some(Value::Null)
            if ["previous_response_id", "conversation", "prompt"]
                .iter()
                .any(|k| body.get(*k).is_some_and(|v| !v.is_null())) =>
        {
            Ok(())
        }
        None | Some(Value::Null) => invalid("Missing required parameter: 'input'.".into()),
        Some(_) => invalid("`input` must be a string or an array of input items.".into()),
    }
}

/// An embeddings `input` or a text completion's `prompt` (`field`): a string, or a non-empty
/// array of strings, of token ids, or of arrays of token ids.
fn check_texts(body: &Map<String, Value>, field: &'static str) -> Result<(), ApiError> {
    let token_ids = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_u64().is_some()))
    };
    let valid = match body.get(field) {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request(
                format!("Missing required parameter: '{field}'."),
                Some(field),
            ))
        }
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => {
            !items.is_empty()
                && (items.iter().all(Value::is_string)
                    || items.iter().all(|t| t.as_u64().is_some())
                    || items.iter().all(token_ids))
        }
        Some(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_request(
            format!("`{field}` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids."),
            Some(field),
        ))
    }
}

/// A body as the upstream gets it: with another `model` (`parse` made sure it has one), and
/// a tagged `previous_response_id` as the upstream's own.
struct Upstream<'a>(&'a Map<String, Value>, &'a str);

impl Serialize for Upstream<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            let stored = match value {
                Value::String(id) if key == "previous_response_id" => crate::affinity::untag(id),
                _ => None,
            };
            match stored {
                _ if key == "model" => map.serialize_entry(key, self.1)?,
                Some(t) => map.serialize_entry(key, t.upstream_id)?,
                None => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// Token counts from an upstream's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: Option<u64>,
    /// Output tokens (reasoning included, as the upstream bills them).
    pub completion_tokens: Option<u64>,
    /// Of the input, what the upstream read from its prompt cache (billed at a discount).
    pub cached_tokens: u64,
    /// Of the input, what it wrote to an explicit cache (billed at a surcharge).
    pub cache_write_tokens: u64,
    /// The cache was explicit (DashScope's `cache_type: "ephemeral"`: explicit or session
    /// cache), whose hits cost less than the implicit cache's.
    pub explicit_cache: bool,
}

impl Usage {
    /// Reads a `usage` object as sent: chat's names or the Responses API's (`input_tokens`,
    /// `output_tokens`; relays may send both, so they are read apart, not as aliases); an
    /// embeddings answer reports no output, only its total. The cache details are chat's
    /// `prompt_tokens_details`, else DashScope's Responses API's (`x_details[0]`, with its
    /// cache type), else the Responses API's `input_tokens_details`. None when null, empty
    /// or not an object. (Read by hand: a derived reader costs kilobytes of wasm per
    /// source it reads from.)
    pub fn from_value(usage: &Value) -> Option<Usage> {
        let count = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64);
        let input = count(usage, "prompt_tokens").or_else(|| count(usage, "input_tokens"));
        let output = count(usage, "completion_tokens")
            .or_else(|| count(usage, "output_tokens"))
            .or_else(|| count(usage, "total_tokens")?.checked_sub(input?));
        if input.is_none() && output.is_none() {
            return None;
        }
        let x_details = usage.get("x_details").and_then(|x| x.get(0));
        let cache = [
            usage.get("prompt_tokens_details"),
            x_details.and_then(|x| x.get("prompt_tokens_details")),
            usage.get("input_tokens_details"),
        ];
        let cache = cache.into_iter().flatten().find(|c| c.is_object());
        // Never more of the input than the input: a relay's odd count costs no less for it.
        let of_input = |key| {
            cache
                .and_then(|c| count(c, key))
                .unwrap_or(0)
                .min(input.unwrap_or(0))
        };
        let cached_tokens = of_input("cached_tokens");
        let cache_write_tokens = of_input("cache_creation_input_tokens")
            .min(input.unwrap_or(0).saturating_sub(cached_tokens));
        let cache_type = cache
            .and_then(|c| c.get("cache_type"))
            .and_then(Value::as_str);
        Some(Usage {
            prompt_tokens: input,
            completion_tokens: output,
            cached_tokens,
            cache_write_tokens,
            explicit_cache: cache_type == Some("ephemeral"),
        })
    }

    /// The `usage` of a whole (non-streamed) JSON answer, if it reports one.
    pub fn of_body(body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Answer {
            usage: Option<Value>,
        }
        let usage = crate::json::from_bytes::<Answer>(body).ok()?.usage?;
        Usage::from_value(&usage)
    }
}

/// One public model, as `GET /v1/models` lists it and `GET /v1/models/<model>` answers.
pub fn model_object(id: &str) -> Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "gateway"})
}

/// The `GET /v1/models` answer listing the public model names.
pub fn model_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let data: Vec<Value> = names.map(model_object).collect();
    serde_json::json!({"object": "list", "data": data}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        ApiRequest::parse(body.as_bytes(), Endpoint::Chat, 4).unwrap_err()
    }

    #[test]
    fn error_body_has_openai_shape() {
        let e = ApiError::invalid_request("bad", Some("model"));
        let v: Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":{"message":"bad","type":"invalid_request_error","param":"model","code":null}})
        );
    }

    #[test]
    fn rejects_bad_bodies_with_400_naming_the_field() {
        for (body, param) in [
            ("{not json", None),
            ("[1,2]", None),
            (
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
                Some("model"),
            ),
            (
                r#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{},{},{},{},{}]}"#,
                Some("messages"),
            ),
            (
                r#"{"model":"m","messages":[{}],"max_tokens":-1}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{}],"max_tokens":1.5}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{}],"max_tokens":1e30}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{}],"max_completion_tokens":"9"}"#,
                Some("max_completion_tokens"),
            ),
            (r#"{"model":"m","messages":[{}],"n":0}"#, Some("n")),
            (r#"{"model":"m","messages":[{}],"n":2.5}"#, Some("n")),
            (r#"{"model":"m","messages":[{}],"n":"2"}"#, Some("n")),
        ] {
            let e = err(body);
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), param, "{body}");
            assert_eq!(e.should_retry, Some(false));
        }
    }

    #[test]
    fn checks_an_embeddings_input() {
        let parse = |body: &str| ApiRequest::parse(body.as_bytes(), Endpoint::Embeddings, 4);
        for input in [r#""hi""#, r#"["a","b"]"#, "[1,2,3]", "[[1,2],[3]]"] {
            let r = parse(&format!(
                r#"{{"model":"e","input":{input},"dimensions":256}}"#
            ));
            assert_eq!(
                r.map(|r| (r.endpoint, r.stream)),
                Ok((Endpoint::Embeddings, false))
            );
        }
        for input in [
            "",
            r#","input":null"#,
            r#","input":[]"#,
            r#","input":7"#,
            r#","input":["a",1]"#,
            r#","input":[[1],["a"]]"#,
        ] {
            let e = parse(&format!(r#"{{"model":"e"{input}}}"#)).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some("input")),
                "{input}"
            );
        }
        assert_eq!(
            parse(r#"{"input":"hi"}"#).unwrap_err().param.as_deref(),
            Some("model")
        );
    }

    #[test]
    fn checks_a_text_completion() {
        let parse = |body: &str| ApiRequest::parse(body.as_bytes(), Endpoint::Completions, 4);
        for prompt in [r#""def f(""#, r#"["a","b"]"#, "[1,2,3]", "[[1,2],[3]]"] {
            let r = parse(&format!(
                r#"{{"model":"c","prompt":{prompt},"suffix":"x","stream":true,"best_of":2}}"#
            ));
            let r = r.map(|r| (r.endpoint, r.stream));
            assert_eq!(r, Ok((Endpoint::Completions, true)), "{prompt}");
        }
        for (rest, param) in [
            ("", "prompt"),
            (r#","prompt":[]"#, "prompt"),
            (r#","prompt":{"text":"a"}"#, "prompt"),
            (r#","prompt":"a","max_tokens":-1"#, "max_tokens"),
            (r#","prompt":"a","best_of":0"#, "best_of"),
            (r#","prompt":"a","n":"2""#, "n"),
            (r#","prompt":"a","stream":"yes""#, "stream"),
        ] {
            let e = parse(&format!(r#"{{"model":"c"{rest}}}"#)).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{rest}");
        }
        assert_eq!(Endpoint::Completions.path(), "completions");
        assert_eq!(Endpoint::Completions.input_param(), "prompt");
        assert!(Endpoint::Completions.may_downgrade() && Endpoint::Completions.may_lack_model());
        assert!(!Endpoint::Chat.may_lack_model() && !Endpoint::Embeddings.may_lack_model());
    }

    #[test]
    fn checks_a_responses_input() {
        let parse = |body: &str| ApiRequest::parse(body.as_bytes(), Endpoint::Responses, 2);
        for body in [
            r#"{"model":"m","input":"hi"}"#,
            r#"{"model":"m","input":[{"role":"user","content":"hi"}],"stream":true}"#,
            r#"{"model":"m","input":[],"previous_response_id":"resp_1"}"#,
            r#"{"model":"m","previous_response_id":"resp_1"}"#,
            r#"{"model":"m","prompt":{"id":"pmpt_1"},"max_output_tokens":9}"#,
            r#"{"model":"m","input":"hi","background":false}"#,
        ] {
            let r = parse(body).unwrap();
            assert_eq!(r.endpoint, Endpoint::Responses, "{body}");
            assert_eq!(r.stream, body.contains("stream"), "{body}");
        }
        for (body, param) in [
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":null}"#, "input"),
            (r#"{"model":"m","input":7}"#, "input"),
            (r#"{"model":"m","input":[{},{},{}]}"#, "input"),
            (r#"{"model":"m","input":"hi","stream":1}"#, "stream"),
            (
                r#"{"model":"m","input":"hi","max_output_tokens":-5}"#,
                "max_output_tokens",
            ),
            (
                r#"{"model":"m","input":"hi","background":true}"#,
                "background",
            ),
            (r#"{"input":"hi"}"#, "model"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
    }

    #[test]
    fn a_follow_up_goes_upstream_with_the_upstreams_own_id() {
        let owner = crate::affinity::Owner {
            user: "alice".into(),
            secrets: vec![b"s".to_vec()],
        };
        let id = crate::affinity::tagged("resp_9", "acct-b", Some(&owner));
        let body =
            format!(r#"{{"model":"qwen3-max","input":"and then?","previous_response_id":"{id}"}}"#);
        let r = ApiRequest::parse(body.as_bytes(), Endpoint::Responses, 4).unwrap();
        assert_eq!(r.previous_response_id(), Some(id.as_str()));
        let sent: Value = serde_json::from_slice(&r.upstream_body("qwen-plus")).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"model": "qwen-plus", "input": "and then?", "previous_response_id": "resp_9"})
        );
        // An id the gateway did not hand out goes as it came, pinned nowhere.
        let body = br#"{"model":"m","input":"x","previous_response_id":"resp_9"}"#;
        let r = ApiRequest::parse(body, Endpoint::Responses, 4).unwrap();
        let sent: Value = serde_json::from_slice(&r.upstream_body("m")).unwrap();
        assert_eq!(sent["previous_response_id"], "resp_9");
    }

    #[test]
    fn reads_a_responses_usage() {
        let body = br#"{"object":"response","usage":{"input_tokens":7,"output_tokens":3,"total_tokens":10}}"#;
        let usage = Usage::of_body(body).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(7), Some(3))
        );
        // A relay that sends both names: the chat ones, and no duplicate-field failure.
        let both = serde_json::json!({"prompt_tokens": 5, "input_tokens": 5, "completion_tokens": 2, "output_tokens": 2});
        let usage = Usage::from_value(&both).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(5), Some(2))
        );
    }

    #[test]
    fn an_embeddings_usage_has_no_output() {
        let body = br#"{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        let usage = Usage::of_body(body).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(7), Some(0))
        );
    }

    #[test]
    fn keeps_unknown_fields_and_swaps_the_model() {
        let body = br#"{"model":"qwen3-max","messages":[{"role":"user","content":"hi"}],"stream":true,"enable_thinking":false,"max_tokens":null}"#;
        let r = ApiRequest::parse(body, Endpoint::Chat, 4).unwrap();
        assert_eq!(r.model, "qwen3-max");
        assert!(r.stream);
        let sent: Value = serde_json::from_slice(&r.upstream_body("qwen-plus")).unwrap();
        let mut want: Value = serde_json::from_slice(body).unwrap();
        want["model"] = "qwen-plus".into();
        assert_eq!(sent, want);
    }

    #[test]
    fn reads_usage_from_answers_and_chunks() {
        let answer =
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let usage = Usage::of_body(answer).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(3), Some(5))
        );
        for none in [
            &b"{}"[..],
            br#"{"usage":null}"#,
            br#"{"usage":{}}"#,
            b"not json",
        ] {
            assert_eq!(Usage::of_body(none), None);
        }
        let usage = serde_json::json!({"completion_tokens": 2});
        assert_eq!(Usage::from_value(&usage).unwrap().prompt_tokens, None);
        assert_eq!(Usage::from_value(&Value::Null), None);
    }

    #[test]
    fn lists_models() {
        let v: Value = serde_json::from_str(&model_list(["a", "b"].into_iter())).unwrap();
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["object"], "list");
    }
}
