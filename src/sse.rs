//! Incremental server-sent-event parsing of chat.completions and Responses API streams, and
//! what each event means.
//!
//! Pure: the glue feeds upstream body chunks in as they arrive and forwards each returned
//! event's exact bytes, so the client sees the upstream's stream event by event.

use crate::classify::status_of_code;
use crate::openai::{ApiError, Usage};
use crate::tokens::TextCount;
use serde_json::{Map, Value};
use std::fmt;

/// A UTF-8 byte-order mark, which the WHATWG rules skip at stream start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One server-sent event as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The exact bytes of the event, including its terminating blank line, as received
    /// (so pass-through is byte-exact; a stream-start BOM belongs to the first event).
    pub raw: Vec<u8>,
    /// `event:` field, if any (the last one wins).
    pub event: Option<String>,
    /// `data:` lines joined with "\n" (None when the event has no data line).
    pub data: Option<String>,
    /// `id:` field, if any (the last one without a NUL wins, as in WHATWG).
    pub id: Option<String>,
    /// Comment lines (starting with ':'), without the colon; e.g. "HTTP_STATUS/429".
    pub comments: Vec<String>,
}

impl Event {
    /// Applies one non-blank line (without its line end) per the WHATWG EventSource rules.
    fn line(&mut self, line: &[u8]) {
        if let Some(comment) = line.strip_prefix(b":") {
            self.comments.push(text(comment));
            return;
        }
        let mut parts = line.splitn(2, |b| *b == b':');
        let name = parts.next().unwrap_or_default();
        let value = parts
            .next()
            .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            .unwrap_or_default();
        match name {
            b"event" => self.event = Some(text(value)),
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&text(value));
                }
                None => self.data = Some(text(value)),
            },
            b"id" if !value.contains(&0) => self.id = Some(text(value)),
            // `retry` and unknown fields mean nothing to the gateway; `raw` still carries them.
            _ => {}
        }
    }
}

/// Lines are decoded only once complete, so a character split across chunks decodes whole;
/// invalid UTF-8 becomes U+FFFD as an EventSource would show it.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// One event (or the unfinished part of one) exceeded the parser's byte limit.
    EventTooLarge,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge => f.write_str("upstream stream event exceeds the size limit"),
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental parser: push bytes, get complete events. Handles LF, CRLF and CR line ends
/// (including a CR at the end of one chunk and LF at the start of the next), events split
/// anywhere across chunks, multi-line data, comment lines, `field:value` with or without the
/// space after the colon (per the WHATWG EventSource rules: one leading space is stripped),
/// a UTF-8 BOM at stream start, and very long lines. An event (so also a line) longer than
/// `max_event_bytes` is an error (bounded memory), not a panic.
///
/// The events returned never depend on how the stream was split into chunks. For that, an
/// event whose blank line ends in a CR that is the last byte pushed so far is held until the
/// next byte (or `finish`) shows whether an LF follows, since that LF belongs to its `raw`.
#[derive(Debug, Clone, Default)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the event being read, from its first byte, so `raw` is one slice of it.
    buf: Vec<u8>,
    /// Start of the current line in `buf`.
    line_start: usize,
    /// Where to resume looking for a line end, so a long line is scanned once, not per push.
    scan: usize,
    /// Fields of the current event's complete lines.
    pending: Event,
    /// Whether the stream start has been checked for a BOM.
    started: bool,
    /// Set by an error: the stream's framing is lost, so every later call fails too.
    failed: bool,
}

impl SseParser {
    /// A parser that rejects any event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            ..SseParser::default()
        }
    }

    /// Adds the next bytes of the stream; returns the events they complete, in order.
    /// On error the events completed by this push are dropped: the stream must end anyway.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        if self.failed {
            return Err(SseError::EventTooLarge);
        }
        self.buf.extend_from_slice(bytes);
        self.run(false)
    }

    /// End of stream: a trailing event without its blank line is returned if complete enough
    /// to matter (has data; its `raw` then lacks the blank line), else nothing. `Ok(None)`
    /// means the stream ended cleanly, on an event boundary, or with data-less leftovers (a
    /// cut comment or field) that a client could not use. The parser is empty afterwards.
    pub fn finish(&mut self) -> Result<Option<Event>, SseError> {
        if self.failed {
            return Err(SseError::EventTooLarge);
        }
        // At the end a held CR is a line end after all; at most one event can complete here,
        // because every other line end was handled when its bytes were pushed.
        let completed = self.run(true)?.pop();
        let rest = self.buf.get(self.line_start..).unwrap_or_default();
        if !rest.is_empty() {
            self.pending.line(rest);
        }
        let mut trailing = std::mem::take(&mut self.pending);
        trailing.raw = std::mem::take(&mut self.buf);
        self.line_start = 0;
        self.scan = 0;
        Ok(completed.or_else(|| trailing.data.is_some().then_some(trailing)))
    }

    fn fail(&mut self) -> SseError {
        self.failed = true;
        self.buf = Vec::new();
        self.pending = Event::default();
        SseError::EventTooLarge
    }

    /// Splits `buf` into lines and events; `at_eof` says no more bytes will come.
    fn run(&mut self, at_eof: bool) -> Result<Vec<Event>, SseError> {
        if !self.started {
            if self.buf.starts_with(BOM) {
                self.line_start = BOM.len();
                self.scan = BOM.len();
            } else if BOM.starts_with(&self.buf) && !at_eof {
                // Too few bytes yet to tell a BOM from content.
                return Ok(Vec::new());
            }
            self.started = true;
        }
        let mut events = Vec::new();
        let mut event_start = 0;
        loop {
            let rest = self.buf.get(self.scan..).unwrap_or_default();
            let Some(offset) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
                self.scan = self.buf.len();
                break;
            };
            let end = self.scan + offset;
            let next = match (self.buf.get(end), self.buf.get(end + 1)) {
                (Some(b'\r'), Some(b'\n')) => end + 2,
                (Some(b'\r'), None) if !at_eof => {
                    self.scan = end;
                    break;
                }
                _ => end + 1,
            };
            let line = self.buf.get(self.line_start..end).unwrap_or_default();
            if line.is_empty() {
                let mut event = std::mem::take(&mut self.pending);
                event.raw = self.buf.get(event_start..next).unwrap_or_default().to_vec();
                if event.raw.len() > self.max_event_bytes {
                    return Err(self.fail());
                }
                events.push(event);
                event_start = next;
            } else {
                self.pending.line(line);
            }
            self.line_start = next;
            self.scan = next;
        }
        // One drain per push, not per event, so a push holding many events stays linear.
        self.buf.drain(..event_start.min(self.buf.len()));
        self.line_start = self.line_start.saturating_sub(event_start);
        self.scan = self.scan.saturating_sub(event_start);
        if self.buf.len() > self.max_event_bytes {
            return Err(self.fail());
        }
        Ok(events)
    }
}

/// What a stream event means to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A normal chunk (`data: {...}` with choices); `usage` is its non-null usage, if any;
    /// `has_content` is true when any choice's delta carries non-empty `content`,
    /// `reasoning_content`, `refusal`, `tool_calls` or `function_call` (the first token has
    /// started); `usage_only` marks the include_usage final chunk (`"choices": []` with usage).
    /// A Responses API event (`{"type": ...}`) that is no end and no error is a chunk too,
    /// with content when it is a `*.delta` with a non-empty `delta` or opens a tool call.
    Chunk {
        usage: Option<Usage>,
        has_content: bool,
        usage_only: bool,
    },
    /// The answer is complete: chat's `data: [DONE]`, or the Responses API's
    /// `response.completed` / `response.incomplete` with the response's usage.
    Done { usage: Option<Usage> },
    /// An error frame in either DashScope shape (`data: {"error":{...}}`, or `event:error`
    /// with a flat `{"code","message"}`), or the Responses API's `error` and `response.failed`
    /// events: the HTTP status it stands for (from a `:HTTP_STATUS/NNN` comment of 400 or
    /// more, else from the error code; None if unknown) and the error, which
    /// `crate::classify::classify` reads in either shape (the data exactly as sent; for
    /// `response.failed`, its `response.error` as `{"error": ...}`).
    Error { status: Option<u16>, body: Vec<u8> },
    /// Comments, keep-alives, unknown events: forward untouched.
    Other,
}

/// Classifies one event of a chat.completions, text completion or Responses API stream.
pub fn frame(event: &Event) -> Frame {
    let comment_status = event
        .comments
        .iter()
        .filter_map(|c| c.trim().strip_prefix("HTTP_STATUS/"))
        .find_map(|s| s.trim().parse::<u16>().ok())
        // DashScope native frames carry `:HTTP_STATUS/200` on success too.
        .filter(|s| *s >= 400);
    let data = event.data.as_deref();
    let json = data_json(event);
    // openai-python raises only on a truthy `error`; the same test keeps `"error": null` a chunk.
    let error_value = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| truthy(e));
    let kind = json
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str);
    if event.event.as_deref() == Some("error")
        || kind == Some("error")
        || error_value.is_some()
        || comment_status.is_some()
    {
        let status = comment_status.or_else(|| json.as_ref().and_then(code_status));
        let body = data.unwrap_or_default().as_bytes().to_vec();
        return Frame::Error { status, body };
    }
    if data.is_some_and(|d| d.trim() == "[DONE]") {
        return Frame::Done { usage: None };
    }
    if let (Some(kind), Some(json)) = (kind, &json) {
        return response_frame(kind, json);
    }
    match json.as_ref().and_then(chunk_choices) {
        Some((chunk, choices)) => {
            let usage = chunk.get("usage").and_then(Usage::from_value);
            // A chat delta's content, or a text completion's `text`.
            let has_content = choices.iter().any(|c| {
                c.get("delta").is_some_and(delta_has_content) || c.get("text").is_some_and(truthy)
            });
            Frame::Chunk {
                usage,
                has_content,
                usage_only: choices.is_empty() && usage.is_some(),
            }
        }
        None => Frame::Other,
    }
}

/// A Responses API event, by its `type`.
fn response_frame(kind: &str, json: &Value) -> Frame {
    let response = json.get("response");
    match kind {
        "response.completed" | "response.incomplete" => Frame::Done {
            usage: response
                .and_then(|r| r.get("usage"))
                .and_then(Usage::from_value),
        },
        "response.failed" => {
            let error = response
                .and_then(|r| r.get("error"))
                .filter(|e| e.is_object());
            let body = match error {
                Some(error) => format!("{{\"error\":{error}}}"),
                None => r#"{"error":{"message":"The response failed."}}"#.to_string(),
            };
            Frame::Error {
                status: error.and_then(code_status),
                body: body.into_bytes(),
            }
        }
        _ => Frame::Chunk {
            usage: None,
            has_content: response_delta(kind, json).is_some() || starts_a_call(kind, json),
            usage_only: false,
        },
    }
}

/// Whether the event opens a tool call (a function's, or a built-in tool's such as web search,
/// which may run long before any text): output begun, as a chat delta's `tool_calls` is. A
/// message or a reasoning item is not: its text follows at once.
fn starts_a_call(kind: &str, json: &Value) -> bool {
    let item = json
        .get("item")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str);
    kind == "response.output_item.added" && item.is_some_and(|t| t != "message" && t != "reasoning")
}

/// The text of a Responses API `*.delta` event (output text, reasoning, refusal, a tool
/// call's arguments), when it has some; audio deltas are base64, not text.
fn response_delta<'a>(kind: &str, json: &'a Value) -> Option<&'a str> {
    if !kind.ends_with(".delta") || kind.contains("audio") {
        return None;
    }
    json.get("delta")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
}

fn data_json(event: &Event) -> Option<Value> {
    serde_json::from_str(event.data.as_deref()?).ok()
}

/// The chunk object and its `choices`, when `data` is a chat.completions chunk.
fn chunk_choices(json: &Value) -> Option<(&Map<String, Value>, &Vec<Value>)> {
    let chunk = json.as_object()?;
    Some((chunk, chunk.get("choices")?.as_array()?))
}

/// Python truthiness, as the SDKs test `error`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Delta fields whose presence means the answer has started.
const CONTENT_KEYS: [&str; 5] = [
    "content",
    "reasoning_content",
    "refusal",
    "tool_calls",
    "function_call",
];

fn delta_has_content(delta: &Value) -> bool {
    CONTENT_KEYS
        .iter()
        .any(|k| delta.get(*k).is_some_and(truthy))
}

/// The status an error code stands for (`crate::classify::status_of_code`); `code` first,
/// then `type`, nested or flat.
fn code_status(json: &Value) -> Option<u16> {
    let fields = match json.get("error") {
        Some(e @ Value::Object(_)) => e,
        _ => json,
    };
    ["code", "type"]
        .iter()
        .filter_map(|k| fields.get(*k).and_then(Value::as_str))
        .find_map(status_of_code)
}

/// Adds `stream_options.include_usage = true` to a request body (keeping any other
/// stream_options), and tells whether the client had asked for it itself. Call it only for
/// streaming requests: OpenAI rejects `stream_options` without `stream: true`.
pub fn request_usage(body: &mut Map<String, Value>) -> bool {
    let usage = (String::from("include_usage"), Value::Bool(true));
    match body.get_mut("stream_options") {
        Some(Value::Object(options)) => {
            let asked = options.get("include_usage") == Some(&Value::Bool(true));
            options.insert(usage.0, usage.1);
            asked
        }
        // Absent, null or malformed: the upstream would reject a malformed one anyway.
        _ => {
            let options = Map::from_iter([usage]);
            body.insert("stream_options".into(), Value::Object(options));
            false
        }
    }
}

/// An OpenAI-style error event to end a client's stream: `data: {"error":{...}}\n\n`
/// (openai-python raises APIError on a data JSON holding "error"; openai-node too). No
/// `event:` line: openai-python handles named events differently.
pub fn error_event(error: &ApiError) -> Vec<u8> {
    format!("data: {}\n\n", error.body()).into_bytes()
}

/// Estimated completion tokens of streamed text when an upstream sends no usage: the one
/// token-count rule (`crate::tokens::TextCount`) over the concatenated delta texts (content,
/// reasoning, refusal, tool-call names and arguments; a Responses API stream's deltas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextCounter {
    count: TextCount,
}

impl TextCounter {
    /// Counts the delta texts of one chunk event (or a Responses API `*.delta`); other events
    /// are ignored.
    pub fn add(&mut self, event: &Event) {
        let json = data_json(event);
        let kind = json
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str);
        if let (Some(kind), Some(json)) = (kind, &json) {
            if let Some(delta) = response_delta(kind, json) {
                self.count.add(delta);
            }
            return;
        }
        let Some((_, choices)) = json.as_ref().and_then(chunk_choices) else {
            return;
        };
        for choice in choices {
            self.count(choice.get("text"));
        }
        for delta in choices.iter().filter_map(|c| c.get("delta")) {
            for key in ["content", "reasoning_content", "refusal"] {
                self.count(delta.get(key));
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            let functions = calls
                .into_iter()
                .flatten()
                .filter_map(|call| call.get("function"))
                .chain(delta.get("function_call"));
            for function in functions {
                self.count(function.get("name"));
                self.count(function.get("arguments"));
            }
        }
    }

    fn count(&mut self, text: Option<&Value>) {
        if let Some(text) = text.and_then(Value::as_str) {
            self.count.add(text);
        }
    }

    /// Estimated tokens of everything added so far.
    pub fn tokens(&self) -> u64 {
        self.count.tokens()
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
