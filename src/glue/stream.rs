//! Streams an upstream SSE answer to the client: held until the first content token, so a
//! failure before it stays invisible and the planner can go elsewhere; then passed through
//! event by event, ending cleanly with an OpenAI-style error event if the upstream breaks.
//! Chat and Responses API streams alike (`crate::sse::frame` reads both).

use crate::affinity::{self, Owner, Retag};
use crate::classify::{self, Outcome};
use crate::config::Profile;
use crate::openai::{ApiError, Usage};
use crate::sse::{self, Event, Frame, SseParser, TextCounter};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::{Stream, StreamExt};
use std::time::Duration;
use worker::web_sys::AbortController;
use worker::{ByteStream, Delay, Response};

/// Largest single event accepted from an upstream (a very long content chunk fits).
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Timing and shape rules for one stream.
#[derive(Debug, Clone)]
pub struct StreamRules {
    /// Upstream dialect, to classify error frames.
    pub profile: Profile,
    /// Whether the client asked for the usage chunk itself.
    pub client_wants_usage: bool,
    /// When the first content token must have arrived (unix ms; counted from the send).
    pub first_token_at_ms: u64,
    /// Longest silence between two upstream chunks once started.
    pub idle_ms: u64,
    /// A Responses API stream's account: the response's id is handed out tagged with it
    /// (`crate::affinity`).
    pub stored_by: Option<String>,
    /// The user the response belongs to, sealed into its id.
    pub owner: Option<Owner>,
}

/// A stream that has started: the client's body and where its final usage will arrive.
pub struct Started {
    /// Bytes for the client.
    pub body: std::pin::Pin<Box<dyn Stream<Item = worker::Result<Vec<u8>>>>>,
    /// Resolves when the stream ends, however it ends (client gone included), with the
    /// usage: reported, or the output counted from the streamed text.
    pub end: oneshot::Receiver<Usage>,
}

/// Reads the upstream until the first content token; `Err` is the outcome to plan with.
pub async fn open(
    mut upstream: Response,
    controller: AbortController,
    rules: StreamRules,
    now_ms: impl Fn() -> u64,
) -> Result<Started, Outcome> {
    let mut body = upstream
        .stream()
        .map_err(|_| Outcome::Retry { after_ms: None })?;
    let mut pass = Pass {
        parser: SseParser::new(MAX_EVENT_BYTES),
        usage: None,
        text: TextCounter::default(),
        client_wants_usage: rules.client_wants_usage,
        done: false,
        stored_by: rules.stored_by,
        owner: rules.owner,
        retag: None,
    };
    let mut held = Vec::new();
    let first_token_in = rules.first_token_at_ms.saturating_sub(now_ms()).max(1);
    let mut timer = Delay::from(Duration::from_millis(first_token_in));
    loop {
        let next = body.next();
        futures_util::pin_mut!(next);
        let chunk = match select(next, &mut timer).await {
            Either::Left((chunk, _)) => chunk,
            Either::Right(_) => {
                controller.abort();
                return Err(classify::timed_out(true));
            }
        };
        let Some(Ok(bytes)) = chunk else {
            // Cut or ended before any content: a network failure, invisible to the client.
            return Err(Outcome::Retry { after_ms: None });
        };
        let events = pass
            .parser
            .push(&bytes)
            .map_err(|_| Outcome::Retry { after_ms: None })?;
        let mut started = false;
        for event in events {
            match sse::frame(&event) {
                Frame::Error { status, body } => {
                    controller.abort();
                    return Err(classify::classify_stream_error(
                        rules.profile,
                        status,
                        &body,
                        now_ms(),
                    ));
                }
                frame => {
                    started |= matches!(
                        frame,
                        Frame::Done { .. }
                            | Frame::Chunk {
                                has_content: true,
                                ..
                            }
                    );
                    held.extend(pass.forward(&event, &frame));
                }
            }
        }
        if started {
            break;
        }
    }
    let (tx, end) = oneshot::channel();
    let state = Flow {
        body,
        pass,
        controller: Some(controller),
        idle_ms: rules.idle_ms,
        first: Some(held),
        tx: Some(tx),
    };
    let body = futures_util::stream::unfold(state, |mut flow| async move {
        flow.next_bytes().await.map(|bytes| (Ok(bytes), flow))
    });
    Ok(Started {
        body: Box::pin(body),
        end,
    })
}

/// Per-event bookkeeping shared by the opening and the flow.
struct Pass {
    parser: SseParser,
    usage: Option<Usage>,
    text: TextCounter,
    client_wants_usage: bool,
    done: bool,
    /// See `StreamRules::stored_by`.
    stored_by: Option<String>,
    /// See `StreamRules::owner`.
    owner: Option<Owner>,
    /// How the response's id is handed out, once an event said it (the first does:
    /// `response.created`).
    retag: Option<Retag>,
}

impl Pass {
    /// The bytes of `event` the client should see, recording usage and text on the way, the
    /// response's id tagged with its account.
    fn forward(&mut self, event: &Event, frame: &Frame) -> Vec<u8> {
        let raw = self.forward_raw(event, frame);
        let Some(account) = &self.stored_by else {
            return raw;
        };
        if self.retag.is_none() {
            let data = event.data.as_deref().unwrap_or_default();
            let id = affinity::response_id(data.as_bytes());
            self.retag = id.and_then(|id| Retag::new(&id, account, self.owner.as_ref()));
        }
        match &self.retag {
            Some(retag) => retag.apply(&raw).unwrap_or(raw),
            None => raw,
        }
    }

    fn forward_raw(&mut self, event: &Event, frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Chunk {
                usage, usage_only, ..
            } => {
                if let Some(u) = usage {
                    self.usage = Some(*u);
                }
                self.text.add(event);
                if *usage_only && !self.client_wants_usage {
                    return Vec::new();
                }
            }
            Frame::Done { usage } => {
                if let Some(u) = usage {
                    self.usage = Some(*u);
                }
                self.done = true;
            }
            Frame::Error { .. } | Frame::Other => {}
        }
        event.raw.clone()
    }

    fn end(&self) -> Usage {
        let counted = Some(self.text.tokens());
        match self.usage {
            Some(u) => Usage {
                completion_tokens: u.completion_tokens.or(counted),
                ..u
            },
            None => Usage {
                completion_tokens: counted,
                ..Usage::default()
            },
        }
    }
}

/// The committed part of a stream.
struct Flow {
    body: ByteStream,
    pass: Pass,
    controller: Option<AbortController>,
    idle_ms: u64,
    first: Option<Vec<u8>>,
    tx: Option<oneshot::Sender<Usage>>,
}

impl Flow {
    /// The next bytes for the client, or None when the stream is over.
    async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        // Nothing more once the end was reported.
        self.tx.as_ref()?;
        loop {
            let next = self.body.next();
            futures_util::pin_mut!(next);
            let timer = Delay::from(Duration::from_millis(self.idle_ms));
            let chunk = match select(next, timer).await {
                Either::Left((chunk, _)) => chunk,
                Either::Right(_) => {
                    return Some(self.fail("The upstream stalled in the middle of the answer."))
                }
            };
            let bytes = match chunk {
                Some(Ok(bytes)) => bytes,
                Some(Err(_)) => {
                    return Some(
                        self.fail("The upstream connection broke in the middle of the answer."),
                    )
                }
                None => return self.end_of_body(),
            };
            let Ok(events) = self.pass.parser.push(&bytes) else {
                return Some(self.fail("The upstream sent an event too large to relay."));
            };
            let mut out = Vec::new();
            for event in events {
                let frame = sse::frame(&event);
                if let Frame::Error { body, .. } = &frame {
                    let detail = crate::classify::UpstreamError::parse(body);
                    let message = format!(
                        "The upstream failed in the middle of the answer ({}).",
                        detail.code.as_deref().unwrap_or("no code")
                    );
                    out.extend(self.fail(&message));
                    return Some(out);
                }
                out.extend(self.pass.forward(&event, &frame));
            }
            if self.pass.done {
                self.finish();
            }
            if !out.is_empty() {
                return Some(out);
            }
            self.tx.as_ref()?;
        }
    }

    /// The upstream body ended: flush a last unterminated event, then end cleanly if the
    /// answer was complete, or with an error event if it was not.
    fn end_of_body(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if let Ok(Some(event)) = self.pass.parser.finish() {
            let frame = sse::frame(&event);
            out.extend(self.pass.forward(&event, &frame));
        }
        if self.pass.done {
            self.finish();
        } else {
            out.extend(self.fail("The upstream stream ended before the answer was complete."));
        }
        (!out.is_empty()).then_some(out)
    }

    /// Ends the client's stream with an error event the official SDKs raise on.
    fn fail(&mut self, message: &str) -> Vec<u8> {
        self.abort();
        self.finish();
        sse::error_event(&ApiError::bad_gateway("upstream_stream_error", message))
    }

    fn abort(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
    }

    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(self.pass.end());
        }
    }
}

impl Drop for Flow {
    /// The client went away (or the stream ended): stop the upstream and settle what was used.
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.abort();
            self.finish();
        }
    }
}
