//! CORS for browser apps: which origins may call, and the headers that say so.
//!
//! A preflight carries no credential, so it is answered by the union of the origins every
//! client allows; the real request is answered with `Access-Control-Allow-Origin` only when
//! its own client allows the origin; a client that lists origins has a request from any
//! other refused before anything is spent (`judge`). The origin is echoed, never `*`, and
//! credentials (cookies) are never allowed: the credential is the `Authorization` header.

use crate::config::Config;

/// Headers a browser app may read from an answer.
pub const EXPOSED: &str = "x-request-id, x-gateway-requested-model, x-gateway-served-model, \
x-gateway-upstream, x-gateway-attempts, x-gateway-fallback-reason, x-gateway-cost-usd, \
x-gateway-wait-ms, retry-after, x-should-retry, x-ratelimit-limit-requests, \
x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, \
x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

/// Request headers allowed when a preflight does not list its own.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-gateway-fallback, \
    x-gateway-max-wait-ms, x-dashscope-session-cache, x-dashscope-datainspection";

/// How long a browser may cache a preflight answer, seconds.
const MAX_AGE_S: &str = "600";

/// Whether `origins` (one client's) allow `origin`.
pub fn allows(origins: &[String], origin: &str) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// What a request from `origin` gets, by the origins its client allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Allowed: the answer carries `Access-Control-Allow-Origin`.
    Readable,
    /// The client allows no browser origin (a server, or the `GATEWAY_KEYS` keys): served as
    /// before CORS existed, without the header, so no page can read it (and a browser never
    /// sends it: its preflight is refused first).
    Unreadable,
    /// The client lists its origins and this is not one: refused before anything is spent.
    Refused,
}

/// Judges a request from `origin` by a client allowing `origins`.
pub fn judge(origins: &[String], origin: &str) -> Judged {
    if allows(origins, origin) {
        Judged::Readable
    } else if origins.is_empty() {
        Judged::Unreadable
    } else {
        Judged::Refused
    }
}

/// Whether a state-changing admin call comes from another site: the dashboard's browser sends
/// its Basic login with every request to the gateway, a form on any other site included, so a
/// write must come from the gateway's own pages (or from a tool, which sends neither header).
pub fn cross_site(request_url: &str, origin: Option<&str>, fetch_site: Option<&str>) -> bool {
    if fetch_site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return true;
    }
    let own = request_url.split_once("://").map(|(scheme, rest)| {
        (
            scheme,
            rest.split(['/', '?', '#']).next().unwrap_or_default(),
        )
    });
    match (origin, own) {
        (None, _) => false,
        (Some(o), Some((scheme, host))) => !o.eq_ignore_ascii_case(&format!("{scheme}://{host}")),
        (Some(_), None) => true,
    }
}

/// Whether any client allows `origin`.
pub fn any_client_allows(config: &Config, origin: &str) -> bool {
    config.clients.values().any(|c| allows(&c.origins, origin))
}

/// The headers of an answer to `origin` that may read it.
pub fn response_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", origin.to_string()),
        ("access-control-expose-headers", EXPOSED.to_string()),
        ("vary", "Origin".to_string()),
    ]
}

/// The headers of a preflight answer to `origin`, allowing the request headers it asked for
/// (`Access-Control-Request-Headers`) when they are a well-formed list of names.
pub fn preflight_headers(origin: &str, requested: Option<&str>) -> Vec<(&'static str, String)> {
    let names_ok = |list: &str| {
        list.len() <= 1_024
            && list.split(',').all(|name| {
                let name = name.trim();
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    let headers = requested
        .filter(|r| names_ok(r))
        .map_or_else(|| ALLOWED_HEADERS.to_string(), str::to_ascii_lowercase);
    vec![
        ("access-control-allow-origin", origin.to_string()),
        // DELETE: a browser app deletes the responses it had stored.
        (
            "access-control-allow-methods",
            "GET, POST, DELETE, OPTIONS".to_string(),
        ),
        ("access-control-allow-headers", headers),
        ("access-control-max-age", MAX_AGE_S.to_string()),
        ("vary", "Origin, Access-Control-Request-Headers".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_star() {
        let list = vec!["http://localhost:5173".to_string()];
        assert!(allows(&list, "http://localhost:5173"));
        assert!(allows(&list, "HTTP://LOCALHOST:5173"));
        assert!(!allows(&list, "http://localhost:5174"));
        assert!(!allows(&list, "http://localhost:5173.evil.example"));
        assert!(!allows(&[], "http://localhost:5173"));
        assert!(allows(&["*".to_string()], "https://any.example"));
    }

    #[test]
    fn admin_writes_from_other_sites_are_told_apart() {
        let url = "https://gw.example:8443/admin/buckets/a/m/clear";
        assert!(!cross_site(url, None, None), "a tool sends neither header");
        assert!(!cross_site(
            url,
            Some("https://gw.example:8443"),
            Some("same-origin")
        ));
        assert!(cross_site(url, Some("https://evil.example"), None));
        assert!(
            cross_site(url, Some("https://gw.example"), None),
            "another port"
        );
        assert!(cross_site(url, None, Some("cross-site")));
        assert!(cross_site(url, None, Some("same-site")));
        assert!(cross_site(url, Some("null"), None));
    }

    #[test]
    fn only_a_client_that_lists_origins_refuses_the_others() {
        let list = vec!["https://app.example".to_string()];
        assert_eq!(judge(&list, "https://app.example"), Judged::Readable);
        assert_eq!(judge(&list, "https://evil.example"), Judged::Refused);
        assert_eq!(judge(&[], "https://app.example"), Judged::Unreadable);
    }

    #[test]
    fn preflight_echoes_the_origin_and_well_formed_header_lists_only() {
        let h = preflight_headers("http://a.test", Some("Authorization, X-Stainless-OS"));
        assert!(h.contains(&("access-control-allow-origin", "http://a.test".into())));
        assert!(h.contains(&(
            "access-control-allow-headers",
            "authorization, x-stainless-os".into()
        )));
        let h = preflight_headers("http://a.test", Some("bad\r\nheader: x"));
        assert!(h.contains(&("access-control-allow-headers", ALLOWED_HEADERS.into())));
        assert!(!h.iter().any(|(n, _)| n.contains("credentials")));
        let r = response_headers("http://a.test");
        assert!(r.iter().all(|(_, v)| v != "*"));
        assert!(EXPOSED.contains("x-gateway-served-model") && EXPOSED.contains("x-request-id"));
        let exposed: Vec<&str> = EXPOSED.split(", ").collect();
        use crate::access::ratelimit::{REQUESTS, TOKENS};
        for name in REQUESTS.into_iter().chain(TOKENS) {
            assert!(exposed.contains(&name), "{name} is not exposed");
        }
    }
}
