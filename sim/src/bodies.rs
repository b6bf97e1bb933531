//! Exact error bodies of both dialects, written as literal strings to keep the upstream's key order.

/// Which upstream a request addressed, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Alibaba DashScope compatible mode (`/compatible-mode/v1/...`).
    DashScope,
    /// OpenAI (`/v1/...`).
    OpenAi,
}

/// A string as a JSON string literal (quotes included), for interpolating request data.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `{"error":{...}}` plus `,"request_id":"<id>"` in the DashScope dialect only.
fn with_request_id(dialect: Dialect, id: &str, error_object: &str) -> String {
    match dialect {
        Dialect::DashScope => format!(r#"{{"error":{error_object},"request_id":"{id}"}}"#),
        Dialect::OpenAi => format!(r#"{{"error":{error_object}}}"#),
    }
}

/// 401 for a missing or unknown key.
pub fn invalid_api_key(dialect: Dialect, id: &str, key: &str) -> String {
    match dialect {
        Dialect::DashScope => with_request_id(
            dialect,
            id,
            r#"{"message":"Incorrect API key provided. For details, see: https://help.aliyun.com/zh/model-studio/error-code#apikey-error","type":"invalid_request_error","param":null,"code":"invalid_api_key"}"#,
        ),
        Dialect::OpenAi => {
            // OpenAI shows only the first characters of the key it refused.
            let masked = match key.char_indices().nth(5) {
                Some((cut, _)) => format!("{}***", &key[..cut]),
                None if key.chars().count() == 5 => format!("{key}***"),
                None => "***".to_string(),
            };
            let message = format!(
                "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            format!(
                r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#,
                json_str(&message)
            )
        }
    }
}

/// 400 for a malformed request body.
pub fn invalid_parameter(dialect: Dialect, id: &str, what: &str) -> String {
    let object = format!(
        r#"{{"message":{},"type":"invalid_request_error","param":null,"code":"invalid_parameter_error"}}"#,
        json_str(what)
    );
    with_request_id(dialect, id, &object)
}

/// 400 for a `previous_response_id` this account does not hold, as OpenAI answers it.
pub fn previous_response_not_found(dialect: Dialect, id: &str, previous: &str) -> String {
    let message = format!("Previous response with id '{previous}' not found.");
    let object = format!(
        r#"{{"message":{},"type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#,
        json_str(&message)
    );
    with_request_id(dialect, id, &object)
}

/// 404 for a stored response this account does not hold, as OpenAI answers it.
pub fn response_not_found(dialect: Dialect, id: &str, response_id: &str) -> String {
    let message = format!("Response with id '{response_id}' not found.");
    let object = format!(
        r#"{{"message":{},"type":"invalid_request_error","param":null,"code":null}}"#,
        json_str(&message)
    );
    with_request_id(dialect, id, &object)
}

/// 404 for a model the upstream does not serve.
pub fn model_not_found(dialect: Dialect, id: &str, model: &str) -> String {
    let message = format!("The model `{model}` does not exist or you do not have access to it.");
    let object = format!(
        r#"{{"message":{},"type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        json_str(&message)
    );
    with_request_id(dialect, id, &object)
}

/// DashScope 429 for RPM or RPS; the documented body has no request_id.
pub const LIMIT_REQUESTS: &str = r#"{"error":{"message":"You have exceeded your current request limit. For details, see: https://help.aliyun.com/zh/model-studio/error-code#rate-limit","type":"limit_requests","code":"limit_requests"}}"#;

/// DashScope 429 for surge protection; the documented body has no request_id.
pub const LIMIT_BURST_RATE: &str = r#"{"error":{"message":"Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.","type":"limit_burst_rate","param":"","code":"limit_burst_rate"}}"#;

/// DashScope 429 for TPM or TPS (the documented body, key order included).
pub fn token_quota(id: &str) -> String {
    format!(
        r#"{{"error":{{"code":"insufficient_quota","message":"You exceeded your current quota, please check your plan and billing details. For details, see: https://help.aliyun.com/zh/model-studio/error-code#token-limit","param":null,"type":"insufficient_quota"}},"request_id":"{id}"}}"#
    )
}

/// 429 when the free quota is used up. DashScope shape modelled, unverified (see the doc).
pub fn free_quota(dialect: Dialect, id: &str) -> String {
    match dialect {
        Dialect::DashScope => format!(
            r#"{{"error":{{"code":"insufficient_quota","message":"Free allocated quota exceeded.","param":null,"type":"insufficient_quota"}},"request_id":"{id}"}}"#
        ),
        Dialect::OpenAi => OPENAI_INSUFFICIENT_QUOTA.to_string(),
    }
}

/// OpenAI 429 when billing quota is gone.
pub const OPENAI_INSUFFICIENT_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

/// 403 free tier exhausted in free-only mode; the documented body has no request_id.
pub const FREE_TIER_ONLY: &str = r#"{"error":{"message":"The free quota has been exhausted. To continue accessing the model on a paid basis, please complete your payment information.","type":"AllocationQuota.FreeTierOnly","param":null,"code":"AllocationQuota.FreeTierOnly"}}"#;

/// 400 account in arrears (the documented body).
pub fn arrearage(dialect: Dialect, id: &str) -> String {
    with_request_id(
        dialect,
        id,
        r#"{"message":"Access denied, please make sure your account is in good standing. For details, see: https://help.aliyun.com/zh/model-studio/error-code#overdue-payment","type":"Arrearage","param":null,"code":"Arrearage"}"#,
    )
}

/// 429 prepaid bill overdue. Modelled, unverified: the code is documented, this body is not.
pub fn prepaid_overdue(dialect: Dialect, id: &str) -> String {
    with_request_id(
        dialect,
        id,
        r#"{"message":"The prepaid bill is overdue.","type":"PrepaidBillOverdue","param":null,"code":"PrepaidBillOverdue"}"#,
    )
}

/// Body of a `status` fault for `status`.
pub fn fault_status(dialect: Dialect, id: &str, status: u16) -> String {
    let object = match status {
        500 => r#"{"message":"An internal error has occured, please try again later or contact service support.","type":"InternalError","param":null,"code":"InternalError"}"#.to_string(),
        503 => r#"{"message":"Too many requests. The requests have exceeded the system capacity limits. Please try again later.","type":"ModelServingError","param":null,"code":"ModelServingError"}"#.to_string(),
        _ => format!(
            r#"{{"message":"Simulated upstream error with status {status}.","type":"server_error","param":null,"code":"{status}"}}"#
        ),
    };
    with_request_id(dialect, id, &object)
}

/// OpenAI 429 for a request or token limit; `wait_ms` is real time until room frees.
pub fn openai_rate_limit(
    tokens: bool,
    model: &str,
    limit: u64,
    used: u64,
    requested: u64,
    wait_ms: u64,
) -> String {
    let what = if tokens { "tokens" } else { "requests" };
    let message = format!(
        "Rate limit reached for {what} on model {model} in organization org-sim: Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait_ms}ms."
    );
    format!(
        r#"{{"error":{{"message":{},"type":"{what}","param":null,"code":"rate_limit_exceeded"}}}}"#,
        json_str(&message)
    )
}

/// Compat-mode mid-stream error frame (`data: {"error":...}`).
pub fn compat_stream_error(code: Option<&str>, message: Option<&str>) -> String {
    let code = code.unwrap_or("data_inspection_failed");
    let message = message.unwrap_or("Output data may contain inappropriate content.");
    format!(
        "data: {{\"error\":{{\"message\":{},\"type\":{},\"param\":null,\"code\":{}}}}}\n\n",
        json_str(message),
        json_str(code),
        json_str(code)
    )
}

/// Native DashScope mid-stream error frame, as observed.
pub fn native_stream_error(id: &str) -> String {
    format!(
        "id:1\nevent:error\n:HTTP_STATUS/429\ndata:{{\"request_id\":\"{id}\",\"code\":\"Throttling.AllocationQuota\",\"message\":\"Allocated quota exceeded, please increase your quota limit.\"}}\n\n"
    )
}

/// Answer for paths the simulator does not serve.
pub fn not_found(path: &str) -> String {
    let message = format!("Unknown path {path}");
    format!(
        r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":"not_found"}}}}"#,
        json_str(&message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_is_valid_json() {
        let id = "00000000-0000-4000-8000-000000000001";
        let all = [
            invalid_api_key(Dialect::DashScope, id, "x"),
            invalid_api_key(Dialect::OpenAi, id, "sk-a1-long"),
            invalid_parameter(Dialect::DashScope, id, "bad \"quote\""),
            model_not_found(Dialect::OpenAi, id, "m"),
            LIMIT_REQUESTS.into(),
            LIMIT_BURST_RATE.into(),
            token_quota(id),
            free_quota(Dialect::DashScope, id),
            FREE_TIER_ONLY.into(),
            arrearage(Dialect::DashScope, id),
            prepaid_overdue(Dialect::OpenAi, id),
            fault_status(Dialect::DashScope, id, 500),
            fault_status(Dialect::OpenAi, id, 418),
            openai_rate_limit(true, "gpt", 10, 9, 3, 12),
            not_found("/x"),
        ];
        for body in all {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"]["message"].is_string(), "{body}");
        }
        let frame = compat_stream_error(None, None);
        let data = frame.strip_prefix("data: ").unwrap().trim_end();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["code"], "data_inspection_failed");
    }

    #[test]
    fn openai_key_mask() {
        let body = invalid_api_key(Dialect::OpenAi, "", "sk-a1");
        assert!(body.contains("provided: sk-a1***."), "{body}");
        let body = invalid_api_key(Dialect::OpenAi, "", "sk-a1xyz");
        assert!(body.contains("provided: sk-a1***."), "{body}");
        let body = invalid_api_key(Dialect::OpenAi, "", "sk");
        assert!(body.contains("provided: ***."), "{body}");
    }
}
