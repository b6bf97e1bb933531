//! What a client asks of the gateway in its request headers: no lower model
//! (`x-gateway-fallback: none`), its own wait for a slot (`x-gateway-max-wait-ms`), and what
//! it asks of DashScope itself (`DASHSCOPE_HEADERS`).

use crate::openai::ApiError;

/// Header a client sends to refuse a lower model.
pub const FALLBACK_HEADER: &str = "x-gateway-fallback";
/// Header a client sends to wait this long for each step's slot instead of the model's
/// `max_wait_ms`: a batch job that would rather queue than be downgraded or refused.
pub const MAX_WAIT_HEADER: &str = "x-gateway-max-wait-ms";

/// DashScope's request headers a client's call takes along to DashScope upstreams (and to no
/// other): its Responses API session cache (`x-dashscope-session-cache: enable`: the
/// conversation's context cached, hits billed at 10 % of the input price) and its content
/// inspection settings. Nothing else of the client's headers goes upstream (a workspace or
/// organisation header would name another account than the one the gateway chose).
pub const DASHSCOPE_HEADERS: [&str; 2] =
    ["x-dashscope-session-cache", "x-dashscope-datainspection"];

/// A client's asks, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asks {
    /// It refuses a lower model.
    pub no_fallback: bool,
    /// Its own wait for each step's slot, in ms (None: the model's).
    pub max_wait_ms: Option<u64>,
}

/// Reads the two headers' values; a wait that is not a whole number of milliseconds is a 400
/// (silently using the model's wait would surprise a client that asked for another).
pub fn read(fallback: Option<&str>, max_wait: Option<&str>) -> Result<Asks, ApiError> {
    let no_fallback = matches!(
        fallback.map(str::trim),
        Some("none" | "off" | "false" | "0")
    );
    let max_wait_ms = match max_wait.map(str::trim) {
        None => None,
        Some(ms) => Some(ms.parse::<u64>().map_err(|_| {
            let mut e = ApiError::invalid_request(
                format!("The `{MAX_WAIT_HEADER}` header must be a whole number of milliseconds."),
                None,
            );
            e.should_retry = Some(false);
            e
        })?),
    };
    Ok(Asks {
        no_fallback,
        max_wait_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fallback_refusal_and_a_wait_in_ms() {
        let asks = |f, w| read(f, w).map(|a| (a.no_fallback, a.max_wait_ms));
        assert_eq!(asks(None, None), Ok((false, None)));
        for refusal in ["none", "off", "false", "0", " none "] {
            assert_eq!(asks(Some(refusal), None), Ok((true, None)), "{refusal}");
        }
        assert_eq!(asks(Some("auto"), Some("60000")), Ok((false, Some(60_000))));
        assert_eq!(asks(None, Some(" 0 ")), Ok((false, Some(0))));
        for bad in ["", "1.5", "-1", "60s", "99999999999999999999"] {
            let e = read(None, Some(bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.message.contains(MAX_WAIT_HEADER), "{}", e.message);
        }
    }
}
