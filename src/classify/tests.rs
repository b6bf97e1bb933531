//! Table tests for the classifier: one row per line of the reference table, both DashScope shapes (compiled only under #[cfg(test)]).

use super::*;
use crate::openai::Endpoint;

const DS: Profile = Profile::Dashscope;
const OA: Profile = Profile::Openai;
const RELAY: Profile = Profile::OpenaiCompatible;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// One line per outcome, so a table row can name what it expects.
fn show(o: &Outcome) -> String {
    match o {
        Outcome::Success => "success".into(),
        Outcome::Cooldown {
            kind, cooldown_ms, ..
        } => format!("cooldown {kind:?} {cooldown_ms}"),
        Outcome::Burst { backoff_ms } => format!("burst {backoff_ms}"),
        Outcome::Park {
            scope,
            reason,
            for_ms,
        } => format!("park {scope:?} {reason} {for_ms:?}"),
        Outcome::KeyRefused { reason } => format!("key-refused {reason}"),
        Outcome::Retry { after_ms } => format!("retry {after_ms:?}"),
        Outcome::Unavailable { cooldown_ms } => format!("unavailable {cooldown_ms}"),
        Outcome::TooLarge => "too-large".into(),
        Outcome::Unsupported => "unsupported".into(),
        Outcome::Client(e) => format!("client {} {}", e.status, e.code.as_deref().unwrap_or("-")),
    }
}

const GEMINI_DAY: &str = r#"[{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 50, model: gemini-2.0-flash-exp\nPlease retry in 34.690215072s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.0-flash-exp"},"quotaValue":"50"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}]"#;
const GEMINI_MINUTE: &str = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21s"}]}}"#;

#[rustfmt::skip]
const TABLE: &[(Profile, u16, &str, &str)] = &[
    (DS, 200, r#"{"choices":[]}"#, "success"),
    // 429 request limit.
    (DS, 429, r#"{"error":{"message":"You have exceeded your current request limit. For details, see: https://help.aliyun.com/zh/model-studio/error-code#rate-limit","type":"limit_requests","code":"limit_requests"}}"#, "cooldown Requests 60000"),
    (DS, 429, r#"{"request_id":"r","code":"Throttling.RateQuota","message":"Requests rate limit exceeded, please try again later."}"#, "cooldown Requests 60000"),
    // 429 burst.
    (DS, 429, r#"{"error":{"message":"Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.","type":"limit_burst_rate","param":"","code":"limit_burst_rate"}}"#, "burst 1000"),
    (DS, 429, r#"{"request_id":"r","code":"Throttling.BurstRate","message":"Request rate increased too quickly."}"#, "burst 1000"),
    // 429 TPM / TPS.
    (DS, 429, r#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota, please check your plan and billing details. For details, see: https://help.aliyun.com/zh/model-studio/error-code#token-limit","param":null,"type":"insufficient_quota"},"request_id":"57553be3-dea8-49f1-ba1e-7a820c152999"}"#, "cooldown Tokens 60000"),
    (DS, 429, r#"{"request_id":"70acdc21","code":"Throttling.AllocationQuota","message":"Allocated quota exceeded, please increase your quota limit."}"#, "cooldown Tokens 60000"),
    // 429 free quota gone (hard).
    (DS, 429, r#"{"error":{"message":"Free allocated quota exceeded.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#, "park Bucket insufficient_quota None"),
    (DS, 429, r#"{"request_id":"r","code":"Throttling.AllocationQuota","message":"Free allocated quota exceeded."}"#, "park Bucket Throttling.AllocationQuota None"),
    // 429 generic throttle.
    (DS, 429, r#"{"request_id":"r","code":"Throttling","message":"Requests throttling triggered."}"#, "cooldown Throttle 45000"),
    (DS, 429, r#"{"error":{"message":"Too many requests in route.","type":"Throttling","param":null,"code":"Throttling"}}"#, "cooldown Throttle 45000"),
    // 429 billing (hard, despite 429).
    (DS, 429, r#"{"request_id":"r","code":"PrepaidBillOverdue","message":"The prepaid bill is overdue."}"#, "park Account PrepaidBillOverdue None"),
    (DS, 429, r#"{"error":{"message":"The postpaid bill is overdue.","type":"PostpaidBillOverdue","code":"PostpaidBillOverdue"}}"#, "park Account PostpaidBillOverdue None"),
    (DS, 429, r#"{"request_id":"r","code":"CommodityNotPurchased","message":"Commodity has not purchased yet."}"#, "park Account CommodityNotPurchased None"),
    // 403 free tier only.
    (DS, 403, r#"{"error":{"message":"The free quota has been exhausted. To continue accessing the model on a paid basis, please complete your payment information.","type":"AllocationQuota.FreeTierOnly","param":null,"code":"AllocationQuota.FreeTierOnly"}}"#, "park Bucket AllocationQuota.FreeTierOnly None"),
    (DS, 403, r#"{"request_id":"r","code":"AllocationQuota.FreeTierOnly","message":"The free quota has been exhausted."}"#, "park Bucket AllocationQuota.FreeTierOnly None"),
    // 400 arrearage.
    (DS, 400, r#"{"error":{"message":"Access denied, please make sure your account is in good standing. For details, see: https://help.aliyun.com/zh/model-studio/error-code#overdue-payment","type":"Arrearage","param":null,"code":"Arrearage"},"request_id":"8605e472-81b4-9cd7-b04d-878e89847c14"}"#, "park Account Arrearage Some(10800000)"),
    (DS, 400, r#"{"request_id":"r","code":"Arrearage","message":"Access denied, please make sure your account is in good standing."}"#, "park Account Arrearage Some(10800000)"),
    // 401 bad key.
    (DS, 401, r#"{"error":{"message":"Incorrect API key provided. For details, see: https://help.aliyun.com/zh/model-studio/error-code#apikey-error","type":"invalid_request_error","param":null,"code":"invalid_api_key"},"request_id":"6176caaa-9844-9311-b869-fe2dce75313a"}"#, "key-refused invalid_api_key"),
    (DS, 401, r#"{"request_id":"r","code":"InvalidApiKey","message":"Invalid API-key provided."}"#, "key-refused InvalidApiKey"),
    // 403 permission.
    (DS, 403, r#"{"request_id":"r","code":"AccessDenied","message":"Access denied."}"#, "park Bucket AccessDenied Some(3600000)"),
    (DS, 403, r#"{"error":{"message":"Model access denied.","type":"Model.AccessDenied","code":"Model.AccessDenied"}}"#, "park Bucket Model.AccessDenied Some(3600000)"),
    (DS, 403, r#"{"request_id":"r","code":"Workspace.AccessDenied","message":"Workspace access denied."}"#, "park Bucket Workspace.AccessDenied Some(3600000)"),
    // 404 wrong model name: the configured upstream name, so the gateway's problem, not the client's.
    (DS, 404, r#"{"error":{"message":"The model `qwen-nope` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#, "park Bucket model_not_found Some(3600000)"),
    (DS, 404, r#"{"request_id":"r","code":"model_not_supported","message":"Unsupported model `qwen-nope` for OpenAI compatibility mode."}"#, "park Bucket model_not_supported Some(3600000)"),
    // Stored context the account does not hold (a Responses API `previous_response_id`): the
    // request's, even as a 404, never a park.
    (OA, 400, r#"{"error":{"message":"Previous response with id 'resp_1' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#, "client 400 previous_response_not_found"),
    (DS, 404, r#"{"error":{"message":"Response resp_1 not found.","type":"invalid_request_error","param":"previous_response_id","code":"NotFound"}}"#, "client 404 NotFound"),
    (RELAY, 404, r#"{"error":{"message":"Conversation not found.","type":"invalid_request_error","param":null,"code":"conversation_not_found"}}"#, "client 404 conversation_not_found"),
    // 400 moderation and context too long.
    (DS, 400, r#"{"error":{"code":"data_inspection_failed","param":null,"message":"Input data may contain inappropriate content.","type":"data_inspection_failed"},"id":"chatcmpl-1"}"#, "client 400 data_inspection_failed"),
    (DS, 400, r#"{"request_id":"r","code":"DataInspectionFailed","message":"Input data may contain inappropriate content."}"#, "client 400 DataInspectionFailed"),
    (DS, 400, r#"{"error":{"message":"<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 30720]","type":"invalid_request_error","param":null,"code":"invalid_parameter_error"}}"#, "client 400 invalid_parameter_error"),
    (DS, 400, r#"{"request_id":"r","code":"InvalidParameter","message":"Range of input length should be [1, 30720]"}"#, "client 400 InvalidParameter"),
    // 5xx server side and timeouts.
    (DS, 500, r#"{"error":{"message":"An internal error has occured","type":"InternalError","param":null,"code":"InternalError"}}"#, "retry None"),
    (DS, 500, r#"{"request_id":"r","code":"SystemError","message":"An system error has occured"}"#, "retry None"),
    (DS, 500, r#"{"request_id":"r","code":"ModelServiceFailed","message":"Failed to request model service."}"#, "retry None"),
    (DS, 500, r#"{"error":{"message":"Request timed out","type":"RequestTimeOut","code":"RequestTimeOut"}}"#, "retry None"),
    (DS, 502, "<html>Bad Gateway</html>", "retry None"),
    (DS, 408, "", "retry None"),
    // 503 platform capacity.
    (DS, 503, r#"{"error":{"message":"Too many requests. Your requests exceed the system capacity limits, please try again later.","type":"ModelServingError","code":"ModelServingError"}}"#, "unavailable 20000"),
    (DS, 503, r#"{"request_id":"r","code":"ModelUnavailable","message":"Model is unavailable, please try again later."}"#, "unavailable 20000"),
    (DS, 429, "", "cooldown Throttle 60000"),
    // OpenAI.
    (OA, 429, r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#, "cooldown Requests 20000"),
    (OA, 429, r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29800, Requested 700. Please try again in 1.5s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#, "cooldown Tokens 1500"),
    (OA, 429, r#"{"error":{"message":"Rate limit reached for gpt-3.5-turbo on tokens per min. Limit: 90000. Please try again in 644ms.","type":"tokens","code":"rate_limit_exceeded"}}"#, "cooldown Tokens 644"),
    (OA, 429, r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s.","type":"requests","code":"rate_limit_exceeded"}}"#, "cooldown Daily 432000"),
    (OA, 429, r#"{"error":{"message":"Rate limit exceeded.","type":"requests","code":"rate_limit_exceeded"}}"#, "cooldown Requests 60000"),
    (OA, 429, r#"{"error":{"message":"Request too large for gpt-4 in organization org-abc on tokens per min (TPM): Limit 10000, Requested 12000. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#, "too-large"),
    (OA, 429, r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#, "key-refused insufficient_quota"),
    (OA, 401, r#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#, "key-refused invalid_api_key"),
    (OA, 500, r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","code":null}}"#, "retry None"),
    (OA, 503, r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error"}}"#, "retry None"),
    (OA, 529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, "unavailable 30000"),
    (OA, 400, r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#, "client 400 context_length_exceeded"),
    (OA, 404, r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#, "park Bucket model_not_found Some(3600000)"),
    (OA, 403, r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#, "park Bucket unsupported_country_region_territory Some(3600000)"),
    // Relays: OpenAI shape, insufficient_quota by text.
    (RELAY, 429, r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}"#, "park Bucket insufficient_quota None"),
    (RELAY, 429, r#"{"error":{"message":"Free allocated quota exceeded.","type":"insufficient_quota","code":"insufficient_quota"}}"#, "park Bucket insufficient_quota None"),
    (RELAY, 429, r#"{"error":{"message":"Allocated quota exceeded, please increase your quota limit.","type":"insufficient_quota","code":"insufficient_quota"}}"#, "cooldown Tokens 60000"),
    (RELAY, 429, r#"{"error":{"message":"You have exceeded your current request limit.","type":"limit_requests","code":"limit_requests"}}"#, "cooldown Requests 60000"),
    (RELAY, 429, r#"{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#, "cooldown Requests 60000"),
    (RELAY, 429, r#"{"error":{"message":"Request rate increased too quickly.","type":"limit_burst_rate","code":"limit_burst_rate"}}"#, "burst 1000"),
    (RELAY, 429, GEMINI_MINUTE, "cooldown Requests 21000"),
    (RELAY, 429, GEMINI_DAY, "cooldown Daily 86400000"),
    (RELAY, 529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, "unavailable 30000"),
    (RELAY, 429, r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#, "cooldown Tokens 60000"),
    (RELAY, 401, r#"{"error":{"message":"No auth credentials found","code":401}}"#, "key-refused http_401"),
    (RELAY, 502, "upstream connect error", "retry None"),
    (RELAY, 400, r#"{"error":{"message":"Invalid 'messages'.","type":"invalid_request_error","param":"messages","code":"invalid_value"}}"#, "client 400 invalid_value"),
    (RELAY, 429, "Too Many Requests", "cooldown Throttle 60000"),
    // A relay's own 4xx about the account or the model: park and rotate, never fail the client.
    (RELAY, 402, r#"{"error":{"message":"Insufficient balance. Please top up.","type":"insufficient_balance","code":"insufficient_balance"}}"#, "park Account insufficient_balance Some(3600000)"),
    (RELAY, 403, r#"{"error":{"message":"This key is not allowed to use model qwen3-max","type":"permission_denied","code":"model_not_allowed"}}"#, "park Bucket model_not_allowed Some(3600000)"),
    (RELAY, 404, r#"{"error":{"message":"The model `qwen/qwen3-max` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#, "park Bucket model_not_found Some(3600000)"),
    (RELAY, 400, r#"{"error":{"message":"qwen/qwen3-maxx is not a valid model ID","type":"invalid_request_error","code":"model_not_found"}}"#, "park Bucket model_not_found Some(3600000)"),
    (RELAY, 404, "Not Found", "park Bucket http_404 Some(3600000)"),
    (RELAY, 400, r#"{"error":{"message":"Output data may contain inappropriate content.","type":"data_inspection_failed","code":"data_inspection_failed"}}"#, "client 400 data_inspection_failed"),
    (RELAY, 400, r#"{"error":{"message":"This model's maximum context length is 32768 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#, "client 400 context_length_exceeded"),
    (RELAY, 413, "Payload Too Large", "client 413 -"),
];

#[test]
fn classifies_the_reference_table() {
    for (i, (profile, status, body, want)) in TABLE.iter().enumerate() {
        let got = show(&classify(*profile, *status, &[], body.as_bytes(), 0));
        assert_eq!(&got, want, "row {i}: {profile:?} {status} {body}");
    }
}

#[test]
fn a_hint_overrides_the_default_wait() {
    let limited = r#"{"error":{"message":"You have exceeded your current request limit.","type":"limit_requests","code":"limit_requests"}}"#;
    let wait = h(&[("retry-after", "7")]);
    let run = |p, status, body: &str| show(&classify(p, status, &wait, body.as_bytes(), 0));
    assert_eq!(run(DS, 429, limited), "cooldown Requests 7000");
    assert_eq!(run(DS, 500, ""), "retry Some(7000)");
    assert_eq!(
        run(DS, 429, r#"{"code":"Throttling.BurstRate"}"#),
        "burst 7000"
    );
    assert_eq!(
        run(DS, 503, r#"{"code":"ModelUnavailable"}"#),
        "unavailable 7000"
    );
    assert_eq!(run(RELAY, 429, GEMINI_MINUTE), "cooldown Requests 7000");
    // Parks ignore hints; Gemini's short retryDelay on a daily quota is ignored.
    assert_eq!(
        run(DS, 400, r#"{"code":"Arrearage"}"#),
        "park Account Arrearage Some(10800000)"
    );
    assert_eq!(run(RELAY, 429, GEMINI_DAY), "cooldown Daily 86400000");
}

#[test]
fn client_errors_keep_the_upstream_fields_and_hide_keys() {
    let body = r#"{"error":{"message":"Incorrect API key provided: sk-abc123XYZ_*. Also 'sk-ant-api03-QQ', prsk-abc123 but not task-force or sk- alone.","type":"invalid_request_error","param":"messages","code":"invalid_value"}}"#;
    let Outcome::Client(e) = classify(RELAY, 422, &[], body.as_bytes(), 0) else {
        panic!("expected a client error");
    };
    assert_eq!(
        (e.status, e.kind.as_str(), e.code.as_deref()),
        (422, "invalid_request_error", Some("invalid_value"))
    );
    assert_eq!(
        (e.param.as_deref(), e.should_retry),
        (Some("messages"), Some(false))
    );
    assert_eq!(
        e.message,
        "Incorrect API key provided: [redacted]. Also '[redacted]', pr[redacted] but not task-force or sk- alone."
    );
    let Outcome::Client(bare) = classify(DS, 400, &[], b"", 0) else {
        panic!("expected a client error");
    };
    assert_eq!(
        (bare.kind.as_str(), bare.message.as_str()),
        (
            "invalid_request_error",
            "The upstream rejected the request (400)."
        )
    );
}

#[test]
fn stream_error_frames_never_count_as_success() {
    let frame = br#"{"error":{"message":"m","type":"x","code":"SomethingNew"}}"#;
    assert_eq!(
        show(&classify_stream_error(DS, None, frame, 0)),
        "retry None"
    );
    assert_eq!(
        show(&classify_stream_error(DS, Some(200), frame, 0)),
        "retry None"
    );
    let throttled =
        br#"{"code":"Throttling.AllocationQuota","message":"Allocated quota exceeded"}"#;
    assert_eq!(
        show(&classify_stream_error(DS, Some(429), throttled, 0)),
        "cooldown Tokens 60000"
    );
}

#[test]
fn scaling_divides_every_wait_and_nothing_else() {
    let half = |ms: u64| ms / 2;
    let park = Outcome::Park {
        scope: ParkScope::Account,
        reason: "r".into(),
        for_ms: Some(10),
    };
    assert_eq!(show(&park.scaled(half)), "park Account r Some(5)");
    let cool = Outcome::Cooldown {
        kind: LimitKind::Requests,
        cooldown_ms: 60_000,
        hinted: false,
    };
    assert_eq!(show(&cool.scaled(half)), "cooldown Requests 30000");
    assert_eq!(
        show(&Outcome::Burst { backoff_ms: 8 }.scaled(half)),
        "burst 4"
    );
    assert_eq!(
        show(&Outcome::Retry { after_ms: Some(8) }.scaled(half)),
        "retry Some(8)"
    );
}

#[test]
fn parses_both_dashscope_shapes() {
    let compat = UpstreamError::parse(
        br#"{"error":{"message":"m","type":"limit_requests","param":null,"code":"limit_requests"}}"#,
    );
    assert_eq!(compat.code.as_deref(), Some("limit_requests"));
    assert_eq!(compat.param, None);
    let native = UpstreamError::parse(
        br#"{"request_id":"r","code":"Throttling.RateQuota","message":"Requests rate limit exceeded"}"#,
    );
    assert_eq!(native.code.as_deref(), Some("Throttling.RateQuota"));
    assert_eq!(UpstreamError::parse(b"<html>"), UpstreamError::default());
    let text = UpstreamError::parse(br#"{"error":"busy"}"#);
    assert_eq!(text.message.as_deref(), Some("busy"));
}

#[test]
fn a_model_missing_on_the_responses_api_is_unsupported_not_a_park() {
    let call = |endpoint, profile, status, body: &str| {
        show(&classify_call(
            endpoint,
            profile,
            status,
            &[],
            body.as_bytes(),
            0,
        ))
    };
    let missing = r#"{"error":{"message":"The model `qwen-turbo` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
    let unsupported = r#"{"error":{"message":"The model qwen-turbo is not supported by the Responses API.","type":"invalid_request_error","param":"model","code":"model_not_supported"}}"#;
    let no_path = "<html>404 Not Found</html>";
    for (profile, status, body) in [
        (DS, 404, missing),
        (DS, 400, unsupported),
        (RELAY, 404, no_path),
        (OA, 404, missing),
    ] {
        for endpoint in [Endpoint::Responses, Endpoint::Completions] {
            let outcome = call(endpoint, profile, status, body);
            assert_eq!(outcome, "unsupported", "{endpoint:?} {body}");
        }
    }
    // On chat, the same answers mean what they always did.
    assert_eq!(
        call(Endpoint::Chat, DS, 404, missing),
        "park Bucket model_not_found Some(3600000)"
    );
    assert_eq!(
        call(Endpoint::Chat, DS, 400, unsupported),
        "park Bucket model_not_supported Some(3600000)"
    );
    // Other answers on the Responses API: as on chat.
    let context = r#"{"error":{"message":"Previous response with id 'resp_1' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#;
    let bad = r#"{"error":{"message":"Unsupported parameter: 'temperature' is not supported with this model.","type":"invalid_request_error","param":"temperature","code":"unsupported_parameter"}}"#;
    let limit = r#"{"error":{"message":"Requests rate limit exceeded, please try again later.","type":"limit_requests","param":null,"code":"limit_requests"}}"#;
    for (status, body, shown) in [
        (404, context, "client 404 previous_response_not_found"),
        (400, bad, "client 400 unsupported_parameter"),
        (429, limit, &call(Endpoint::Chat, DS, 429, limit)),
    ] {
        assert_eq!(call(Endpoint::Responses, DS, status, body), shown, "{body}");
    }
}

#[test]
fn a_2xx_that_is_no_api_answer_parks_its_bucket() {
    for body in [
        &br#"{"choices":[{"message":{"content":"hi"}}]}"#[..],
        b" \n{\"object\":\"list\",\"data\":[]}\n",
    ] {
        assert_eq!(served_whole(body), Outcome::Success);
    }
    for body in [
        &b"<!doctype html><html><title>Relay</title></html>"[..],
        b"",
        b"OK",
        b"[1]",
        b"{\"choices\":[",
    ] {
        assert_eq!(
            show(&served_whole(body)),
            "park Bucket not_an_api_answer Some(3600000)",
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A stream's answer is judged by its content type (its body flows on).
    for kind in [
        Some("text/event-stream"),
        Some("text/event-stream;charset=UTF-8"),
        None,
    ] {
        assert_eq!(served_stream(kind), Outcome::Success, "{kind:?}");
    }
    assert_eq!(
        show(&served_stream(Some("text/html; charset=utf-8"))),
        "park Bucket not_an_api_answer Some(3600000)"
    );
}
