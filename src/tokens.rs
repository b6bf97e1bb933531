//! Conservative token estimate of a chat, Responses or embeddings request, reserved before sending and
//! reconciled with `usage` after.

use crate::openai::{ApiRequest, Endpoint};
use serde_json::{Map, Value};

/// Tokens of framing per message (role, separators), as chat templates add.
const PER_MESSAGE: u64 = 4;
/// Tokens of framing per request (the assistant's reply header).
const PER_REQUEST: u64 = 3;

/// The one token-count rule: Qwen's byte-level BPE gives about one token per English word
/// (~4 ASCII characters) and 1.5-1.8 Chinese characters per token; we count ASCII at 3
/// characters per token and every other character as a whole token, so the estimate errs high.
///
/// The count depends only on how many ASCII and other characters were seen, so texts can be
/// added piece by piece (a streamed answer) and rounding happens once, on the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextCount {
    ascii: u64,
    other: u64,
}

impl TextCount {
    /// Adds one piece of text.
    pub fn add(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_ascii() {
                self.ascii = self.ascii.saturating_add(1);
            } else {
                self.other = self.other.saturating_add(1);
            }
        }
    }

    /// Estimated tokens of everything added.
    pub fn tokens(&self) -> u64 {
        self.ascii.div_ceil(3).saturating_add(self.other)
    }
}

/// Estimated tokens of one text.
pub fn text_tokens(text: &str) -> u64 {
    let mut count = TextCount::default();
    count.add(text);
    count.tokens()
}

/// Tokens of one image part, whatever its size or URL: the most Qwen-VL models give an image
/// by default (2560); OpenAI's models count one at or below about that.
const IMAGE_TOKENS: u64 = 2_560;
/// Tokens of one image when the request asks DashScope for `vl_high_resolution_images`.
const HIGH_RES_IMAGE_TOKENS: u64 = 16_384;
/// Base64 characters of audio per token: 128 makes at least 25 tokens a second (Qwen-Omni's
/// rate, above OpenAI's) of audio encoded at 24 kbit/s or more.
const AUDIO_CHARS_PER_TOKEN: u64 = 128;

/// Estimated input tokens of a chat body: every string inside each message (content, parts,
/// tool calls, names) plus framing, an image part as an image (a video as its frames), an
/// audio part by its length (their base64 is not text); tool definitions (`tools`, the older
/// `functions`) and a `response_format` schema, which upstreams put in the prompt, count as
/// their JSON text.
pub fn prompt_tokens(body: &Map<String, Value>) -> u64 {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) => m.as_slice(),
        _ => &[],
    };
    PER_REQUEST
        .saturating_add(items_tokens(messages, image_tokens(body)))
        .saturating_add(json_tokens(
            body,
            &["tools", "functions", "response_format"],
        ))
}

/// Estimated input tokens of a Responses body, by the chat rules: `instructions` a message,
/// each `input` item a message (a string input one), a stored `prompt`'s variables as their
/// texts; `tools` and the `text` format's schema as their JSON text. Context kept upstream
/// (`previous_response_id`, `conversation`) cannot be seen: the usage corrects it after.
pub fn response_input_tokens(body: &Map<String, Value>) -> u64 {
    let image = image_tokens(body);
    let input = match body.get("input") {
        Some(Value::Array(items)) => items_tokens(items, image),
        Some(text @ Value::String(_)) => items_tokens(std::slice::from_ref(text), image),
        _ => 0,
    };
    let texts = ["instructions", "prompt"]
        .iter()
        .filter_map(|k| body.get(*k))
        .fold(0u64, |sum, v| {
            sum.saturating_add(PER_MESSAGE.saturating_add(strings_tokens(v, image)))
        });
    PER_REQUEST
        .saturating_add(input)
        .saturating_add(texts)
        .saturating_add(json_tokens(body, &["tools", "text"]))
}

/// Tokens an image counts for in this request.
fn image_tokens(body: &Map<String, Value>) -> u64 {
    if body.get("vl_high_resolution_images") == Some(&Value::Bool(true)) {
        HIGH_RES_IMAGE_TOKENS
    } else {
        IMAGE_TOKENS
    }
}

/// Messages (or input items): each its strings plus framing.
fn items_tokens(items: &[Value], image: u64) -> u64 {
    items.iter().fold(0u64, |sum, m| {
        sum.saturating_add(PER_MESSAGE.saturating_add(strings_tokens(m, image)))
    })
}

/// The JSON text of the fields `keys`, which upstreams put in the prompt as they are.
fn json_tokens(body: &Map<String, Value>, keys: &[&str]) -> u64 {
    keys.iter()
        .filter_map(|k| body.get(*k))
        .fold(0u64, |sum, v| {
            sum.saturating_add(text_tokens(&v.to_string()))
        })
}

/// Tokens of every string in `v` by the token rule, a number one (an embeddings token id),
/// media parts as `image` tokens or by their length.
fn strings_tokens(v: &Value, image: u64) -> u64 {
    match v {
        Value::String(s) => text_tokens(s),
        Value::Number(_) => 1,
        Value::Array(items) => items.iter().fold(0, |sum, item| {
            sum.saturating_add(strings_tokens(item, image))
        }),
        Value::Object(fields) => match fields.get("type").and_then(Value::as_str) {
            // Chat's part, and the Responses API's.
            Some("image_url" | "input_image") => image,
            // DashScope's video as its frames, each an image.
            Some("video") => {
                let frames = fields
                    .get("video")
                    .and_then(Value::as_array)
                    .map_or(1, Vec::len);
                image.saturating_mul(frames as u64)
            }
            Some("input_audio") => {
                let data = fields.get("input_audio").and_then(|a| a.get("data"));
                let chars = data.and_then(Value::as_str).map_or(0, str::len) as u64;
                chars.div_ceil(AUDIO_CHARS_PER_TOKEN)
            }
            _ => fields.values().fold(0, |sum, item| {
                sum.saturating_add(strings_tokens(item, image))
            }),
        },
        _ => 0,
    }
}

/// Output tokens to reserve: the request's own cap (a Responses request's `max_output_tokens`),
/// else `default_output`, plus its
/// `thinking_budget` unless thinking is off (Qwen's `max_tokens` caps the answer, not the
/// reasoning before it), for each of its `n` choices (upstreams count every choice's tokens).
pub fn output_tokens(body: &Map<String, Value>, default_output: u64) -> u64 {
    let answer = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(default_output);
    let thinking = match body.get("enable_thinking") {
        Some(Value::Bool(false)) => 0,
        _ => body
            .get("thinking_budget")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    let per_choice = answer.saturating_add(thinking);
    // A text completion generates `best_of` candidates server-side and bills them all.
    let choices = ["n", "best_of"]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(1)
        .max(1);
    per_choice.saturating_mul(choices)
}

/// Prompts of a text completion: each of an array's strings (or token id arrays) is answered
/// with its own choices; a string or one array of token ids is one.
fn prompts(body: &Map<String, Value>) -> u64 {
    match body.get("prompt") {
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => items.len() as u64,
        _ => 1,
    }
}

/// Estimated tokens of an embeddings `input`: its texts by the token rule, token ids one each.
pub fn input_tokens(body: &Map<String, Value>) -> u64 {
    body.get("input")
        .map_or(0, |v| strings_tokens(v, IMAGE_TOKENS))
}

/// The input estimate and the input plus output estimate of a request, what a TPM window must
/// have room for (saturating: a client's `max_tokens` near `u64::MAX` makes it huge, never
/// small). Embeddings have no output.
pub fn estimate(request: &ApiRequest, default_output: u64) -> (u64, u64) {
    let body = &request.body;
    let input = match request.endpoint {
        Endpoint::Chat => prompt_tokens(body),
        Endpoint::Responses => response_input_tokens(body),
        Endpoint::Completions => {
            let text = ["prompt", "suffix"].iter().filter_map(|k| body.get(*k));
            let input = text.map(|v| strings_tokens(v, IMAGE_TOKENS)).sum::<u64>();
            let output = output_tokens(body, default_output).saturating_mul(prompts(body));
            return (input, input.saturating_add(output));
        }
        Endpoint::Embeddings => {
            let input = input_tokens(body);
            return (input, input);
        }
    };
    (
        input,
        input.saturating_add(output_tokens(body, default_output)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn request(endpoint: Endpoint, body: Map<String, Value>) -> ApiRequest {
        ApiRequest {
            endpoint,
            model: "m".into(),
            stream: false,
            body,
        }
    }

    #[test]
    fn counts_text_conservatively() {
        for (text, tokens) in [
            ("", 0),
            ("hi", 1),
            ("Say hello", 3),
            ("안녕하세요", 5),
            ("你好世界", 4),
            ("abc안", 2),
        ] {
            assert_eq!(text_tokens(text), tokens, "{text}");
        }
    }

    #[test]
    fn estimates_a_request_at_or_above_a_bpe_count() {
        let b = body(json!({
            "model": "qwen3-max",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Summarise this paragraph please"}]}
            ],
            "max_tokens": 100
        }));
        // roles (system 2, user 2), part type "text" 2, texts (5 + 11), framing 4*2 + 3.
        assert_eq!(prompt_tokens(&b), 33);
        assert_eq!(output_tokens(&b, 256), 100);
        assert_eq!(
            estimate(&request(Endpoint::Chat, b.clone()), 256),
            (33, 133)
        );
        // The simulator (and a BPE) counts about chars/4 per message: the estimate must not be lower.
        let sim_count = 3 + (4 + 14_u64.div_ceil(4)) + (4 + 31_u64.div_ceil(4));
        assert!(prompt_tokens(&b) >= sim_count);
    }

    #[test]
    fn counts_images_and_audio_as_media_not_as_their_base64() {
        let photo = format!("data:image/jpeg;base64,{}", "A".repeat(3_000_000));
        let parts = |image: &str| {
            json!([{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": image, "detail": "high"}}])
        };
        let with =
            |content: Value| body(json!({"messages": [{"role": "user", "content": content}]}));
        // framing 3 + 4, role 2, the text part: "text" 2 + 5.
        let text_only = 3 + 4 + 2 + 2 + 5;
        assert_eq!(
            prompt_tokens(&with(parts(&photo))),
            text_only + IMAGE_TOKENS
        );
        let url = "https://example.com/cat.png";
        assert_eq!(prompt_tokens(&with(parts(url))), text_only + IMAGE_TOKENS);
        let mut high = with(parts(url));
        high.insert("vl_high_resolution_images".into(), json!(true));
        assert_eq!(prompt_tokens(&high), text_only + HIGH_RES_IMAGE_TOKENS);
        let video = json!([{"type": "video", "video": [url, url, url]}]);
        assert_eq!(prompt_tokens(&with(video)), 3 + 4 + 2 + 3 * IMAGE_TOKENS);
        // 10 s of 16 kHz 16-bit mono WAV: 320 KB, 426,668 base64 characters.
        let audio = json!([{"type": "input_audio",
                            "input_audio": {"data": "A".repeat(426_668), "format": "wav"}}]);
        let audio_tokens = prompt_tokens(&with(audio)) - (3 + 4 + 2);
        assert_eq!(audio_tokens, 426_668_u64.div_ceil(AUDIO_CHARS_PER_TOKEN));
        assert!(
            audio_tokens >= 25 * 10,
            "at least Qwen-Omni's 25 tokens a second"
        );
    }

    #[test]
    fn counts_tool_and_response_schemas_as_their_json() {
        let schema = json!({"type": "json_schema", "json_schema": {"name": "answer",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}});
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let bare = prompt_tokens(&body(json!({"messages": []})));
        for (key, value) in [
            ("response_format", &schema),
            ("tools", &tools),
            ("functions", &tools),
        ] {
            let with = body(json!({"messages": [], key: value}));
            assert_eq!(
                prompt_tokens(&with),
                bare + text_tokens(&value.to_string()),
                "{key}"
            );
        }
    }

    #[test]
    fn reserves_every_prompt_choice_and_candidate_of_a_text_completion() {
        let est = |v: Value| estimate(&request(Endpoint::Completions, body(v)), 256);
        let one = text_tokens("def quick_sort(arr):");
        let fim = text_tokens("return result");
        let prompt = json!({"prompt": "def quick_sort(arr):", "max_tokens": 10});
        assert_eq!(est(prompt), (one, one + 10));
        let suffix = json!({"prompt": "def quick_sort(arr):", "suffix": "return result"});
        assert_eq!(est(suffix), (one + fim, one + fim + 256));
        // Each prompt of a batch is answered with its own `n` choices; `best_of` candidates
        // are generated (and billed) whether returned or not.
        let batch = json!({"prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2});
        assert_eq!(est(batch), (3, 3 + 3 * 2 * 10));
        let best = json!({"prompt": "a", "max_tokens": 10, "n": 2, "best_of": 5});
        assert_eq!(est(best), (1, 1 + 5 * 10));
        // Token ids: one prompt of three, or two prompts.
        assert_eq!(est(json!({"prompt": [1, 2, 3], "max_tokens": 1})), (3, 4));
        assert_eq!(
            est(json!({"prompt": [[1, 2], [3]], "max_tokens": 1})),
            (3, 5)
        );
    }

    #[test]
    fn estimates_embeddings_by_their_input_alone() {
        let texts = body(json!({"input": ["Say hello", "안녕"], "max_tokens": 100}));
        assert_eq!(estimate(&request(Endpoint::Embeddings, texts), 256), (5, 5));
        let ids = body(json!({"input": [[1, 2, 3], [4]]}));
        assert_eq!(estimate(&request(Endpoint::Embeddings, ids), 256), (4, 4));
    }

    #[test]
    fn estimates_a_responses_request_as_its_chat_would_be() {
        let photo = format!("data:image/png;base64,{}", "A".repeat(2_000_000));
        let chat = body(json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "max_tokens": 40,
        }));
        let responses = body(json!({
            "instructions": "Be brief.",
            "input": "Say hello",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "max_output_tokens": 40,
        }));
        // A string input is one message; `instructions` another, without its role's word.
        let system_role = text_tokens("system") + text_tokens("user");
        let (chat_in, chat_total) = estimate(&request(Endpoint::Chat, chat), 256);
        let (in_, total) = estimate(&request(Endpoint::Responses, responses), 256);
        assert_eq!(in_, chat_in - system_role);
        assert_eq!((total - in_, chat_total - chat_in), (40, 40));
        // Items with an inline image: the image, not its base64; the `text` format's schema
        // as its JSON.
        let format = json!({"format": {"type": "json_schema", "name": "a", "schema": {}}});
        let items = body(json!({
            "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": photo},
            ]}],
            "text": format,
        }));
        let (in_, total) = estimate(&request(Endpoint::Responses, items), 256);
        let words = text_tokens("user")
            + text_tokens("input_text")
            + text_tokens("What is this?")
            + text_tokens("input_image");
        assert_eq!(
            in_,
            3 + 4 + words + IMAGE_TOKENS - text_tokens("input_image")
                + text_tokens(&format.to_string())
        );
        assert_eq!(total - in_, 256);
    }

    #[test]
    fn huge_max_tokens_saturates_instead_of_wrapping() {
        let b =
            body(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": u64::MAX}));
        assert_eq!(estimate(&request(Endpoint::Chat, b), 256).1, u64::MAX);
    }

    #[test]
    fn counts_text_in_pieces_like_the_whole() {
        let mut count = TextCount::default();
        for piece in ["ab", "c안", "d", ""] {
            count.add(piece);
        }
        assert_eq!(count.tokens(), text_tokens("abc안d"));
    }

    #[test]
    fn defaults_output_and_prefers_max_completion_tokens() {
        let b = body(json!({"messages": [], "max_completion_tokens": 7, "max_tokens": 9}));
        assert_eq!(output_tokens(&b, 256), 7);
        assert_eq!(output_tokens(&body(json!({"messages": []})), 256), 256);
    }

    #[test]
    fn reserves_the_thinking_budget_unless_thinking_is_off() {
        let thinking = |extra: Value| {
            let mut b = body(json!({"messages": [], "max_tokens": 100, "thinking_budget": 500}));
            b.extend(extra.as_object().cloned().unwrap());
            output_tokens(&b, 256)
        };
        assert_eq!(thinking(json!({"enable_thinking": true})), 600);
        assert_eq!(
            thinking(json!({})),
            600,
            "thinking-only models need no switch"
        );
        assert_eq!(thinking(json!({"enable_thinking": false})), 100);
        assert_eq!(thinking(json!({"enable_thinking": true, "n": 2})), 1200);
    }

    #[test]
    fn reserves_the_output_of_every_choice() {
        let b = body(json!({"messages": [], "max_tokens": 100, "n": 4}));
        assert_eq!(output_tokens(&b, 256), 400);
        assert_eq!(
            output_tokens(&body(json!({"messages": [], "n": 3})), 256),
            768
        );
        assert_eq!(
            output_tokens(&body(json!({"messages": [], "n": null})), 256),
            256
        );
        let huge = body(json!({"messages": [], "max_tokens": u64::MAX, "n": 2}));
        assert_eq!(output_tokens(&huge, 256), u64::MAX);
    }
}
