//! Tests of the SSE parser and chat-stream frames: wire-shape tables and chunking properties (compiled only under #[cfg(test)]).

use super::*;
use crate::classify::{classify, LimitKind, Outcome};
use crate::config::Profile;
use crate::tokens::text_tokens;
use proptest::prelude::*;
use serde_json::json;

const MIB: usize = 1 << 20;

/// Pushes `chunks` in order, then finishes; every event, or the first error.
fn feed(chunks: &[&[u8]], max: usize) -> Result<Vec<Event>, SseError> {
    let mut parser = SseParser::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.push(chunk)?);
    }
    events.extend(parser.finish()?);
    Ok(events)
}

fn parse(stream: &[u8]) -> Vec<Event> {
    feed(&[stream], MIB).unwrap()
}

fn raws(events: &[Event]) -> Vec<u8> {
    events.iter().flat_map(|e| e.raw.iter().copied()).collect()
}

fn frame_of(stream: &str) -> Frame {
    let events = parse(stream.as_bytes());
    assert_eq!(events.len(), 1, "{stream:?}");
    frame(&events[0])
}

// Shapes exactly as the simulator (sim/src/completion.rs, sim/src/bodies.rs) and DashScope send them.
const ROLE: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1735113344,\"model\":\"qwen-plus\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"logprobs\":null}],\"usage\":null,\"system_fingerprint\":null}\n\n";
const CONTENT: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1735113344,\"model\":\"qwen-plus\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null,\"logprobs\":null}],\"usage\":null,\"system_fingerprint\":null}\n\n";
const FINISH: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1735113344,\"model\":\"qwen-plus\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"logprobs\":null}],\"usage\":null,\"system_fingerprint\":null}\n\n";
const USAGE: &str = "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"created\":1735113344,\"model\":\"qwen-plus\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":17,\"prompt_tokens\":22,\"total_tokens\":39}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const COMPAT_ERROR: &str = "data: {\"error\":{\"message\":\"Output data may contain inappropriate content.\",\"type\":\"data_inspection_failed\",\"param\":null,\"code\":\"data_inspection_failed\"}}\n\n";
const NATIVE_ERROR: &str = "id:1\nevent:error\n:HTTP_STATUS/429\ndata:{\"request_id\":\"70acdc21-1\",\"code\":\"Throttling.AllocationQuota\",\"message\":\"Allocated quota exceeded, please increase your quota limit.\"}\n\n";

#[test]
fn splits_events_on_lf_crlf_and_cr() {
    for end in ["\n", "\r\n", "\r"] {
        let first = format!("data: a{end}data:b{end}{end}");
        let second = format!(": c{end}{end}");
        let events = parse(format!("{first}{second}").as_bytes());
        assert_eq!(events.len(), 2, "{end:?}");
        assert_eq!(events[0].raw, first.as_bytes());
        assert_eq!(events[0].data.as_deref(), Some("a\nb"));
        assert_eq!(events[1].raw, second.as_bytes());
        assert_eq!(events[1].data, None);
        assert_eq!(events[1].comments, [" c"]);
    }
}

#[test]
fn joins_a_crlf_split_across_pushes() {
    let mut p = SseParser::new(MIB);
    assert!(p.push(b"data: x\r").unwrap().is_empty());
    // The blank line's CR is the last byte: held until we know whether an LF follows.
    assert!(p.push(b"\n\r").unwrap().is_empty());
    let events = p.push(b"\n").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].raw, b"data: x\r\n\r\n");
    assert_eq!(events[0].data.as_deref(), Some("x"));
    assert_eq!(p.finish().unwrap(), None);

    // A held CR followed by another byte was a bare CR end.
    let mut p = SseParser::new(MIB);
    assert!(p.push(b"data: x\r\r").unwrap().is_empty());
    let events = p.push(b"data: y\r\r").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].raw, b"data: x\r\r");
    let last = p.finish().unwrap().unwrap();
    assert_eq!(
        (last.raw.as_slice(), last.data.as_deref()),
        (&b"data: y\r\r"[..], Some("y"))
    );
}

#[test]
fn decodes_a_character_split_across_pushes() {
    let stream = "data: 한글😀\n\n".as_bytes();
    for at in 0..=stream.len() {
        let events = feed(&[&stream[..at], &stream[at..]], MIB).unwrap();
        assert_eq!(events.len(), 1, "split at {at}");
        assert_eq!(events[0].data.as_deref(), Some("한글😀"), "split at {at}");
        assert_eq!(events[0].raw, stream);
    }
}

#[test]
fn reads_fields_per_whatwg() {
    let events = parse(
        b"data:x\ndata:  two spaces\ndata\nevent:error\nid: 7\nretry: 100\nother: z\n:HTTP_STATUS/429\n: ping\n\n",
    );
    let e = &events[0];
    assert_eq!(e.data.as_deref(), Some("x\n two spaces\n"));
    assert_eq!(e.event.as_deref(), Some("error"));
    assert_eq!(e.id.as_deref(), Some("7"));
    assert_eq!(e.comments, ["HTTP_STATUS/429", " ping"]);
    // An id holding NUL is ignored, per WHATWG.
    assert_eq!(parse(b"id: a\0b\ndata: x\n\n")[0].id, None);
    // Field names are case-sensitive.
    assert_eq!(parse(b"Data: x\n\n")[0].data, None);
}

#[test]
fn skips_a_bom_at_stream_start_only() {
    let stream = b"\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n";
    for at in 0..=4 {
        let events = feed(&[&stream[..at], &stream[at..]], MIB).unwrap();
        assert_eq!(events[0].data.as_deref(), Some("x"), "split at {at}");
        assert_eq!(events[0].raw, b"\xEF\xBB\xBFdata: x\n\n");
        // Later, the BOM is part of the field name, so this is an unknown field.
        assert_eq!(events[1].data, None);
        assert_eq!(raws(&events), stream);
    }
    // A stream that is only part of a BOM ends without an event, and without a panic.
    assert_eq!(feed(&[b"\xEF"], MIB).unwrap(), vec![]);
}

#[test]
fn finish_returns_a_trailing_event_only_when_it_has_data() {
    let mut p = SseParser::new(MIB);
    assert!(p.push(b"data: [DONE]").unwrap().is_empty());
    let last = p.finish().unwrap().unwrap();
    assert_eq!(last.raw, b"data: [DONE]");
    assert_eq!(frame(&last), Frame::Done { usage: None });
    assert_eq!(
        p.finish().unwrap(),
        None,
        "the parser is empty after finish"
    );

    let last = feed(&[b"data: a\nid: 3\n"], MIB).unwrap();
    assert_eq!(last[0].data.as_deref(), Some("a"));
    assert_eq!(last[0].id.as_deref(), Some("3"));
    assert_eq!(feed(&[b"data: a\n\n: ping"], MIB).unwrap().len(), 1);
    assert_eq!(feed(&[b"event: x\nid: 1"], MIB).unwrap(), vec![]);
}

#[test]
fn frames_the_simulator_and_dashscope_shapes() {
    let chunk = |usage, has_content, usage_only| Frame::Chunk {
        usage,
        has_content,
        usage_only,
    };
    assert_eq!(frame_of(ROLE), chunk(None, false, false));
    assert_eq!(frame_of(CONTENT), chunk(None, true, false));
    assert_eq!(frame_of(FINISH), chunk(None, false, false));
    let usage = Usage {
        prompt_tokens: Some(22),
        completion_tokens: Some(17),
        ..Usage::default()
    };
    assert_eq!(frame_of(USAGE), chunk(Some(usage), false, true));
    assert_eq!(frame_of(DONE), Frame::Done { usage: None });
    assert_eq!(
        frame_of(COMPAT_ERROR),
        Frame::Error {
            status: Some(400),
            body: COMPAT_ERROR["data: ".len()..]
                .trim_end()
                .as_bytes()
                .to_vec(),
        }
    );
    assert_eq!(
        frame_of(NATIVE_ERROR),
        Frame::Error {
            status: Some(429),
            body: NATIVE_ERROR
                .lines()
                .nth(3)
                .unwrap()
                .strip_prefix("data:")
                .unwrap()
                .as_bytes()
                .to_vec(),
        }
    );

    let stream = [
        ROLE,
        CONTENT,
        FINISH,
        USAGE,
        COMPAT_ERROR,
        NATIVE_ERROR,
        DONE,
    ]
    .concat();
    let events = parse(stream.as_bytes());
    assert_eq!(events.len(), 7);
    assert_eq!(raws(&events), stream.as_bytes());
    assert_eq!(events[3].raw, USAGE.as_bytes());
    assert_eq!(events[5].raw, NATIVE_ERROR.as_bytes());
}

#[test]
fn error_bodies_are_what_classify_reads() {
    let Frame::Error { status, body } = frame_of(NATIVE_ERROR) else {
        panic!("not an error");
    };
    let outcome = classify(Profile::Dashscope, status.unwrap(), &[], &body, 0);
    assert!(
        matches!(
            outcome,
            Outcome::Cooldown {
                kind: LimitKind::Tokens,
                ..
            }
        ),
        "{outcome:?}"
    );
    let Frame::Error { status, body } = frame_of(COMPAT_ERROR) else {
        panic!("not an error");
    };
    match classify(Profile::Dashscope, status.unwrap(), &[], &body, 0) {
        Outcome::Client(e) => assert_eq!(e.code.as_deref(), Some("data_inspection_failed")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn maps_error_codes_to_statuses() {
    for (code, status) in [
        ("Throttling", Some(429)),
        ("Throttling.RateQuota", Some(429)),
        ("limit_burst_rate", Some(429)),
        ("insufficient_quota", Some(429)),
        ("PrepaidBillOverdue", Some(429)),
        ("data_inspection_failed", Some(400)),
        ("DataInspectionFailed", Some(400)),
        ("InvalidParameter", Some(400)),
        ("Arrearage", Some(400)),
        ("invalid_api_key", Some(401)),
        ("AllocationQuota.FreeTierOnly", Some(403)),
        ("Model.AccessDenied", Some(403)),
        ("model_not_found", Some(404)),
        ("InternalError", Some(500)),
        ("InternalError.Algo", Some(500)),
        ("RequestTimeOut", Some(500)),
        ("ModelServingError", Some(503)),
        ("overloaded_error", Some(529)),
        ("SomethingNew", None),
    ] {
        let flat = format!(
            "event: error\ndata: {}\n\n",
            json!({"code": code, "message": "m"})
        );
        let nested = format!(
            "data: {}\n\n",
            json!({"error": {"code": code, "message": "m"}})
        );
        for stream in [flat, nested] {
            let Frame::Error { status: got, .. } = frame_of(&stream) else {
                panic!("{stream}");
            };
            assert_eq!(got, status, "{stream}");
        }
    }
    // `code` first, then `type`; the HTTP_STATUS comment wins over both.
    let typed = r#"data: {"error":{"code":null,"type":"limit_requests"}}"#;
    assert!(matches!(
        frame_of(&format!("{typed}\n\n")),
        Frame::Error {
            status: Some(429),
            ..
        }
    ));
    let commented = format!(":HTTP_STATUS/503\n{typed}\n\n");
    assert!(matches!(
        frame_of(&commented),
        Frame::Error {
            status: Some(503),
            ..
        }
    ));
    // An error event without data is still an error: the client must not see a clean end.
    assert_eq!(
        frame_of("event: error\n\n"),
        Frame::Error {
            status: None,
            body: vec![]
        }
    );
}

#[test]
fn forwards_everything_else_as_other() {
    for stream in [
        ": keep-alive\n\n",
        "\n",
        "event: ping\n\n",
        "data: not json\n\n",
        "data: {\"object\":\"chat.completion.chunk\"}\n\n",
        // DashScope native success frames carry HTTP_STATUS/200.
        "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"text\":\"hi\"}}\n\n",
    ] {
        assert_eq!(frame_of(stream), Frame::Other, "{stream:?}");
    }
    // A null or empty `error` does not make openai-python raise, so it is no error here.
    let chunk = r#"data: {"error":null,"choices":[{"delta":{"content":"x"}}]}"#;
    assert!(matches!(
        frame_of(&format!("{chunk}\n\n")),
        Frame::Chunk {
            has_content: true,
            ..
        }
    ));
}

#[test]
fn sees_content_in_reasoning_and_tool_calls() {
    for delta in [
        json!({"reasoning_content": "think"}),
        json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}),
        json!({"function_call": {"name": "f"}}),
        json!({"refusal": "no"}),
    ] {
        let stream = format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": delta}]})
        );
        assert!(
            matches!(
                frame_of(&stream),
                Frame::Chunk {
                    has_content: true,
                    usage: None,
                    usage_only: false
                }
            ),
            "{stream}"
        );
    }
    let empty = json!({"choices": [{"delta": {"content": null, "tool_calls": []}}], "usage": {"prompt_tokens": 3}});
    let frame = frame_of(&format!("data: {empty}\n\n"));
    let usage = Some(Usage {
        prompt_tokens: Some(3),
        completion_tokens: None,
        ..Usage::default()
    });
    assert_eq!(
        frame,
        Frame::Chunk {
            usage,
            has_content: false,
            usage_only: false
        }
    );
}

#[test]
fn bounds_event_size_without_panicking() {
    let line = format!("data: {}\n\n", "a".repeat(MIB));
    let chunks: Vec<&[u8]> = line.as_bytes().chunks(64 * 1024).collect();
    let events = feed(&chunks, 2 * MIB).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data.as_ref().map(String::len), Some(MIB));

    let mut p = SseParser::new(MIB / 2);
    let failed = chunks.iter().map(|c| p.push(c)).find_map(Result::err);
    assert_eq!(failed, Some(SseError::EventTooLarge));
    assert_eq!(
        p.push(b"data: x\n\n"),
        Err(SseError::EventTooLarge),
        "stays failed"
    );
    assert_eq!(p.finish(), Err(SseError::EventTooLarge));
    assert_eq!(
        feed(&[line.as_bytes()], MIB / 2),
        Err(SseError::EventTooLarge)
    );
    // The limit counts the whole event, blank line included.
    assert!(feed(&[b"data: x\n\n"], 9).is_ok());
    assert_eq!(feed(&[b"data: x\n\n"], 8), Err(SseError::EventTooLarge));
    assert_eq!(
        SseError::EventTooLarge.to_string(),
        "upstream stream event exceeds the size limit"
    );
}

#[test]
fn requests_usage_and_tells_whether_the_client_did() {
    let mut body = json!({"model": "m", "stream": true})
        .as_object()
        .cloned()
        .unwrap();
    assert!(!request_usage(&mut body));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));

    let mut body =
        json!({"stream_options": {"include_usage": false, "continuous_usage_stats": true}});
    assert!(!request_usage(body.as_object_mut().unwrap()));
    assert_eq!(
        body["stream_options"],
        json!({"include_usage": true, "continuous_usage_stats": true})
    );

    let mut body = json!({"stream_options": {"include_usage": true}});
    assert!(request_usage(body.as_object_mut().unwrap()));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));

    let mut body = json!({"stream_options": null});
    assert!(!request_usage(body.as_object_mut().unwrap()));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[test]
fn error_event_is_an_openai_error_data_line() {
    let error = ApiError::bad_gateway("upstream_stream_error", "The upstream stream broke.");
    let bytes = error_event(&error);
    let text = std::str::from_utf8(&bytes).unwrap();
    let data = text
        .strip_prefix("data: ")
        .unwrap()
        .strip_suffix("\n\n")
        .unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["error"]["message"], "The upstream stream broke.");
    assert_eq!(v["error"]["code"], "upstream_stream_error");
    // Our own parser sees one error event, as the SDKs will.
    let events = parse(&bytes);
    assert_eq!(events.len(), 1);
    assert!(matches!(frame(&events[0]), Frame::Error { .. }));
}

#[test]
fn counts_streamed_text_like_text_tokens_of_the_whole() {
    let mut counter = TextCounter::default();
    let deltas = [
        json!({"role": "assistant", "content": ""}),
        json!({"content": "Hello "}),
        json!({"content": "안녕"}),
        json!({"reasoning_content": "ab"}),
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}]}),
        json!({"function_call": {"arguments": "x"}}),
    ];
    for delta in &deltas {
        let stream = format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": delta}]})
        );
        counter.add(&parse(stream.as_bytes())[0]);
    }
    for ignored in [DONE, COMPAT_ERROR, ": ping\n\n", USAGE] {
        counter.add(&parse(ignored.as_bytes())[0]);
    }
    assert_eq!(counter.tokens(), text_tokens("Hello 안녕abget{\"a\":1}x"));
}

#[test]
fn frames_and_counts_a_text_completion_stream() {
    // As OpenAI's legacy completions and DashScope's Completions API send them.
    let chunk = |text: &str| {
        let c = json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "qwen-coder-turbo",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": null}]});
        format!("data: {c}\n\n")
    };
    let mut counter = TextCounter::default();
    for (text, has_content) in [("", false), ("def ", true), ("f():", true)] {
        let stream = chunk(text);
        let frame = frame_of(&stream);
        let want = Frame::Chunk {
            usage: None,
            has_content,
            usage_only: false,
        };
        assert_eq!(frame, want, "{stream}");
        counter.add(&parse(stream.as_bytes())[0]);
    }
    assert_eq!(counter.tokens(), text_tokens("def f():"));
    let usage = json!({"id": "cmpl-1", "object": "text_completion", "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}});
    let usage = frame_of(&format!("data: {usage}\n\n"));
    assert!(
        matches!(
            usage,
            Frame::Chunk {
                usage_only: true,
                ..
            }
        ),
        "{usage:?}"
    );
    assert_eq!(frame_of(DONE), Frame::Done { usage: None });
}

/// One Responses API event as OpenAI sends it: its type named twice, as `event:` and `type`.
fn response_event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

#[test]
fn frames_a_responses_stream() {
    let chunk = |has_content| Frame::Chunk {
        usage: None,
        has_content,
        usage_only: false,
    };
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_1", "object": "response", "status": "in_progress", "usage": null}});
    let delta = |kind: &str, delta: &str| {
        json!({"type": kind, "sequence_number": 3, "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "delta": delta})
    };
    for (event, want) in [
        (created, chunk(false)),
        (
            json!({"type": "response.output_item.added", "item": {"type": "message"}}),
            chunk(false),
        ),
        (
            json!({"type": "response.output_item.added", "item": {"type": "reasoning"}}),
            chunk(false),
        ),
        // A tool call begun is output, as a chat delta's `tool_calls`: a web search may run
        // longer than the first token's timeout before any text.
        (
            json!({"type": "response.output_item.added", "item": {"type": "web_search_call"}}),
            chunk(true),
        ),
        (
            json!({"type": "response.output_item.added", "item": {"type": "function_call"}}),
            chunk(true),
        ),
        (delta("response.output_text.delta", ""), chunk(false)),
        (delta("response.output_audio.delta", "AAAA"), chunk(false)),
        (delta("response.output_text.delta", "Hi"), chunk(true)),
        (
            delta("response.reasoning_text.delta", "Let me think"),
            chunk(true),
        ),
        (
            delta("response.function_call_arguments.delta", "{\"city\""),
            chunk(true),
        ),
        (
            json!({"type": "response.output_text.done", "text": "Hi"}),
            chunk(false),
        ),
    ] {
        assert_eq!(frame_of(&response_event(event.clone())), want, "{event}");
    }
    let usage = json!({"input_tokens": 12, "output_tokens": 5, "total_tokens": 17});
    for end in ["response.completed", "response.incomplete"] {
        let event = json!({"type": end, "response": {"status": "completed", "usage": usage}});
        assert_eq!(
            frame_of(&response_event(event)),
            Frame::Done {
                usage: Some(Usage {
                    prompt_tokens: Some(12),
                    completion_tokens: Some(5),
                    ..Usage::default()
                })
            },
            "{end}"
        );
    }
    // Both error events, classified like the same error in a body.
    let limit =
        json!({"code": "rate_limit_exceeded", "message": "Rate limit reached for requests"});
    let failed =
        json!({"type": "response.failed", "response": {"status": "failed", "error": limit}});
    let Frame::Error { status, body } = frame_of(&response_event(failed)) else {
        panic!("response.failed is an error");
    };
    assert_eq!(status, Some(429));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": limit})
    );
    let error = json!({"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached for requests", "param": null});
    for stream in [response_event(error.clone()), format!("data: {error}\n\n")] {
        let Frame::Error { status, body } = frame_of(&stream) else {
            panic!("an error event is an error: {stream}");
        };
        assert_eq!(status, Some(429), "{stream}");
        let outcome = classify(Profile::Openai, 429, &[], &body, 0);
        assert!(
            matches!(
                outcome,
                Outcome::Cooldown {
                    kind: LimitKind::Requests,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    // Counted from the deltas when no usage comes.
    let mut counter = TextCounter::default();
    for (kind, text) in [
        ("response.output_text.delta", "Hello "),
        ("response.output_text.delta", "안녕"),
        ("response.output_audio.delta", "QUFBQQ=="),
        ("response.function_call_arguments.delta", "{}"),
    ] {
        counter.add(&parse(response_event(delta(kind, text)).as_bytes())[0]);
    }
    assert_eq!(counter.tokens(), text_tokens("Hello 안녕{}"));
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Line {
    Comment(String),
    Field(&'static str, String, bool),
    Bare(&'static str),
}

fn line() -> impl Strategy<Value = Line> {
    let value = "[a-z :é한😀\\[\\]{}\"]{0,12}";
    let name = prop::sample::select(vec!["data", "event", "id", "retry", "x-other"]);
    prop_oneof![
        value.prop_map(Line::Comment),
        (name.clone(), value, any::<bool>()).prop_map(|(n, v, space)| Line::Field(n, v, space)),
        name.prop_map(Line::Bare),
    ]
}

/// Events as lists of (line, line-end choice), each closed by a blank line with its own end.
type Model = Vec<(Vec<(Line, u8)>, u8)>;

/// The stream bytes and the events a correct parser must see (fields only; `raw` is checked
/// by concatenation and against chunked parsing).
fn serialise(model: &Model, bom: bool) -> (Vec<u8>, Vec<Event>) {
    const ENDS: [&str; 3] = ["\n", "\r\n", "\r"];
    let mut out = if bom { BOM.to_vec() } else { Vec::new() };
    let mut expected = Vec::new();
    let mut after_cr = false;
    for (lines, blank_end) in model {
        let mut e = Event::default();
        for (line, end) in lines {
            let text = match line {
                Line::Comment(c) => {
                    e.comments.push(c.clone());
                    format!(":{c}")
                }
                Line::Field(name, value, space) => {
                    let parsed = if *space {
                        value.as_str()
                    } else {
                        value.strip_prefix(' ').unwrap_or(value)
                    };
                    set(&mut e, name, parsed);
                    format!("{name}:{}{value}", if *space { " " } else { "" })
                }
                Line::Bare(name) => {
                    set(&mut e, name, "");
                    name.to_string()
                }
            };
            let end = ENDS[usize::from(*end) % 3];
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(end.as_bytes());
            after_cr = end == "\r";
        }
        // A blank "\n" right after a "\r" would merge into one CRLF line end.
        let end = match ENDS[usize::from(*blank_end) % 3] {
            "\n" if after_cr => "\r\n",
            end => end,
        };
        out.extend_from_slice(end.as_bytes());
        after_cr = end == "\r";
        expected.push(e);
    }
    (out, expected)
}

fn set(e: &mut Event, name: &str, value: &str) {
    match name {
        "data" => match &mut e.data {
            Some(d) => *d = format!("{d}\n{value}"),
            None => e.data = Some(value.to_string()),
        },
        "event" => e.event = Some(value.to_string()),
        "id" => e.id = Some(value.to_string()),
        _ => {}
    }
}

/// `cuts` as sorted positions in `0..=len`, splitting `bytes` into chunks.
fn chunks<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut parts = Vec::new();
    let mut from = 0;
    for to in at.into_iter().chain([bytes.len()]) {
        parts.push(&bytes[from..to]);
        from = to;
    }
    parts
}

fn fields(
    e: &Event,
) -> (
    &Option<String>,
    &Option<String>,
    &Option<String>,
    &Vec<String>,
) {
    (&e.event, &e.data, &e.id, &e.comments)
}

proptest! {
    // No regression files: a failure prints its minimal input, to be pinned as a table test.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn chunking_never_changes_the_events(
        model in prop::collection::vec((prop::collection::vec((line(), any::<u8>()), 0..5), any::<u8>()), 0..8),
        bom in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        // A stream that is only a BOM has no event to carry it.
        let (stream, expected) = serialise(&model, bom && !model.is_empty());
        let whole = feed(&[&stream], MIB).unwrap();
        let chunked = feed(&chunks(&stream, &cuts), MIB).unwrap();
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(raws(&whole), stream);
        prop_assert_eq!(whole.len(), expected.len());
        for (got, want) in whole.iter().zip(&expected) {
            prop_assert_eq!(fields(got), fields(want));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_agrees(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(b"\r\n:data \xEF\xBB\xBF".to_vec())],
            0..600,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        max in 0usize..80,
    ) {
        let whole = feed(&[&bytes], max);
        let chunked = feed(&chunks(&bytes, &cuts), max);
        prop_assert_eq!(&chunked, &whole);
        if let Ok(events) = whole {
            prop_assert!(bytes.starts_with(&raws(&events)));
            let mut counter = TextCounter::default();
            for e in &events {
                prop_assert!(e.raw.len() <= max);
                let _ = frame(e);
                counter.add(e);
            }
        }
    }

    #[test]
    fn text_counter_matches_text_tokens_of_the_concatenation(
        pieces in prop::collection::vec("[a-z é한😀]{0,7}", 0..12),
    ) {
        let mut counter = TextCounter::default();
        for piece in &pieces {
            let event = format!("data: {}\n\n", json!({"choices": [{"delta": {"content": piece}}]}));
            counter.add(&parse(event.as_bytes())[0]);
        }
        prop_assert_eq!(counter.tokens(), text_tokens(&pieces.concat()));
    }
}
