//! Maps (method, path) to the gateway's endpoints, with 404 and 405 in OpenAI's shape.

use crate::openai::{ApiError, Endpoint};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// An endpoint the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`, `/v1/responses`, `/v1/completions` or `/v1/embeddings`: a
    /// call to a model.
    Call(Endpoint),
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/usage`: the caller's own limits and usage.
    Usage,
    /// `GET /v1/models/<model>` (the SDKs' `models.retrieve`), percent-decoded; it may hold `/`.
    Model {
        /// Public model name.
        id: String,
    },
    /// `GET` or `DELETE /v1/responses/<id>`, `GET /v1/responses/<id>/input_items`: a
    /// response stored upstream, at the account that holds it.
    Stored {
        /// The id as the gateway handed it out (percent-decoded).
        id: String,
        /// Its input items rather than the response.
        input_items: bool,
    },
    /// `GET /healthz`.
    Health,
    /// `GET /admin/buckets/<account>/<model>`: one bucket's live state; `POST .../clear`: lift
    /// its park or cooldown first; `POST /admin/accounts/<account>/clear`: every bucket of the
    /// account's, cleared (after its bill is paid or its keys replaced).
    AdminBucket {
        /// Account id.
        account: String,
        /// Upstream model name (None: every model of the account).
        model: Option<String>,
        /// Clear first.
        clear: bool,
    },
    /// `GET /admin/clients/<id>[/users/<sub>]`: usage against limits and budgets;
    /// `POST .../reset`: clear the period counters.
    AdminClient {
        /// Client id.
        client: String,
        /// A user (token `sub`) of the client.
        user: Option<String>,
        /// Reset first.
        reset: bool,
    },
    /// `GET /admin/`: the dashboard page.
    AdminDashboard,
    /// `GET /admin/state`: what the dashboard shows, as JSON.
    AdminState,
    /// `GET /admin/metrics`: the Prometheus text exposition.
    AdminMetrics,
    /// `GET /admin/report?account=&model=&days=[&format=csv]`: quota-increase evidence.
    AdminReport,
    /// `POST /admin/alerts/test`: a test alert, sent to the webhook at once.
    AdminAlertTest,
    /// `OPTIONS` on a `/v1/` endpoint: a browser's CORS preflight.
    Preflight,
}

/// Resolves a request line to a route, or the error to answer with.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let model = path.strip_prefix("/v1/models/");
    let stored = path.strip_prefix("/v1/responses/");
    let api = matches!(
        path,
        "/v1/chat/completions"
            | "/v1/responses"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/models"
            | "/v1/usage"
    ) || model.is_some()
        || stored.is_some();
    if method == "OPTIONS" && api {
        return Ok(Route::Preflight);
    }
    let (expected, route) = match path {
        "/v1/chat/completions" => ("POST", Route::Call(Endpoint::Chat)),
        "/v1/embeddings" => ("POST", Route::Call(Endpoint::Embeddings)),
        "/v1/responses" => ("POST", Route::Call(Endpoint::Responses)),
        "/v1/completions" => ("POST", Route::Call(Endpoint::Completions)),
        "/v1/models" => ("GET", Route::Models),
        "/v1/usage" => ("GET", Route::Usage),
        "/healthz" => ("GET", Route::Health),
        _ if stored.is_some() => {
            let rest = stored.unwrap_or_default();
            let (id, input_items) = match rest.strip_suffix("/input_items") {
                Some(id) => (id, true),
                None => (rest, false),
            };
            let id = match percent_decode_str(id).decode_utf8() {
                Ok(id) if !id.is_empty() && !id.contains('/') => id.into_owned(),
                _ => return Err(ApiError::unknown_route(method, path)),
            };
            let expected = match (input_items, method) {
                (false, "DELETE") => "DELETE",
                _ => "GET",
            };
            (expected, Route::Stored { id, input_items })
        }
        _ if model.is_some() => match model.map(percent_decode_str).map(|m| m.decode_utf8()) {
            Some(Ok(id)) => (
                "GET",
                Route::Model {
                    id: id.into_owned(),
                },
            ),
            _ => return Err(ApiError::unknown_route(method, path)),
        },
        "/admin" => ("GET", Route::AdminDashboard),
        "/admin/state" => ("GET", Route::AdminState),
        "/admin/metrics" => ("GET", Route::AdminMetrics),
        "/admin/report" => ("GET", Route::AdminReport),
        "/admin/alerts/test" => ("POST", Route::AdminAlertTest),
        _ if path.starts_with("/admin/accounts/") => {
            let rest = path.trim_start_matches("/admin/accounts/");
            let account = (rest.strip_suffix("/clear"))
                .filter(|a| !a.is_empty() && !a.contains('/'))
                .and_then(|a| percent_decode_str(a).decode_utf8().ok());
            match account {
                Some(account) => (
                    "POST",
                    Route::AdminBucket {
                        account: account.into_owned(),
                        model: None,
                        clear: true,
                    },
                ),
                None => return Err(ApiError::unknown_route(method, path)),
            }
        }
        _ => match path.strip_prefix("/admin/buckets/").and_then(bucket_path) {
            Some((account, model, clear)) => {
                let method = if clear { "POST" } else { "GET" };
                let model = Some(model);
                (
                    method,
                    Route::AdminBucket {
                        account,
                        model,
                        clear,
                    },
                )
            }
            None => match path.strip_prefix("/admin/clients/").and_then(client_path) {
                Some(route @ Route::AdminClient { reset: true, .. }) => ("POST", route),
                Some(route) => ("GET", route),
                None => return Err(ApiError::unknown_route(method, path)),
            },
        },
    };
    if method == expected || (method == "HEAD" && expected == "GET") {
        Ok(route)
    } else {
        Err(ApiError::method_not_allowed(method, path))
    }
}

/// `<account>/<model>[/clear]`, percent-decoded: the model may hold `/` (`qwen/qwen3-max` on
/// relays), sent as `%2F` or as is; a last segment `clear` is the clear action.
fn bucket_path(rest: &str) -> Option<(String, String, bool)> {
    let mut parts: Vec<&str> = rest.split('/').collect();
    let clear = parts.len() > 2 && parts.last() == Some(&"clear");
    if clear {
        parts.pop();
    }
    let (account, model) = parts.split_first()?;
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned())
    };
    let account = decode(account)?;
    let model = decode(&model.join("/"))?;
    let empty = account.is_empty() || model.is_empty() || model.split('/').any(str::is_empty);
    (!empty).then_some((account, model, clear))
}

/// `<client>[/users/<sub>][/reset]`, percent-decoded.
fn client_path(rest: &str) -> Option<Route> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned())
            .filter(|d| !d.is_empty())
    };
    let (rest, reset) = match rest.strip_suffix("/reset") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (client, user) = match rest.split_once("/users/") {
        Some((c, u)) if !u.contains('/') => (c, Some(decode(u)?)),
        Some(_) => return None,
        None => (rest, None),
    };
    if client.contains('/') {
        return None;
    }
    Some(Route::AdminClient {
        client: decode(client)?,
        user,
        reset,
    })
}

/// The API's paths without their `/v1` (the SDKs' paths under `base_url`).
const API_PATHS: [&str; 5] = [
    "/chat/completions",
    "/responses",
    "/completions",
    "/embeddings",
    "/models",
];

/// `path` as the routes know it, for a client that changed only the host of its `base_url`:
/// DashScope's `/compatible-mode/v1/...` is `/v1/...`, and so is an API path under a
/// `base_url` of the bare host (`/chat/completions`), as other gateways accept it.
pub fn api_path(path: &str) -> Cow<'_, str> {
    if let Some(v1) = path.strip_prefix("/compatible-mode") {
        if v1 == "/v1" || v1.starts_with("/v1/") {
            return Cow::Borrowed(v1);
        }
    }
    let api = API_PATHS.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    match api {
        true => Cow::Owned(format!("/v1{path}")),
        false => Cow::Borrowed(path),
    }
}

/// The path of a URL the runtime serialised (a request's `url`): from the first `/` after the
/// host up to the query or fragment (which the runtime percent-encodes inside the path).
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("/", |i| after_scheme.split_at(i).1);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The query of `url` with its `?` (without a fragment), or "" when it has none.
pub fn query_of(url: &str) -> &str {
    let url = url.split('#').next().unwrap_or_default();
    let query = url
        .find('?')
        .and_then(|at| url.get(at..))
        .unwrap_or_default();
    if query == "?" {
        ""
    } else {
        query
    }
}

/// The value of query parameter `name` in `url` (form-decoded: `+` is a space), if present.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|d| d.into_owned())
        };
        (decode(key)? == name).then(|| decode(value)).flatten()
    })
}

/// The methods a route accepts, for the `Allow` header of a 405.
pub fn allowed_methods(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    let calls = [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/completions",
        "/v1/embeddings",
    ];
    if calls.contains(&path) {
        "POST, OPTIONS"
    } else if path.starts_with("/v1/responses/") && !path.ends_with("/input_items") {
        "GET, HEAD, DELETE, OPTIONS"
    } else if path == "/v1/models" || path.starts_with("/v1/models/") || path == "/v1/usage" {
        "GET, HEAD, OPTIONS"
    } else if path.ends_with("/clear") || path.ends_with("/reset") || path.ends_with("/test") {
        "POST"
    } else {
        "GET, HEAD"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_of_dashscopes_path_or_the_bare_host_is_served_as_v1() {
        let cases = [
            (
                "/compatible-mode/v1/chat/completions",
                "/v1/chat/completions",
            ),
            (
                "/compatible-mode/v1/models/qwen3-max",
                "/v1/models/qwen3-max",
            ),
            ("/compatible-mode/v1", "/v1"),
            ("/chat/completions", "/v1/chat/completions"),
            (
                "/responses/resp_1/input_items",
                "/v1/responses/resp_1/input_items",
            ),
            ("/embeddings/", "/v1/embeddings/"),
            ("/models", "/v1/models"),
            // As they were: the gateway's own, and what only looks alike.
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/healthz", "/healthz"),
            ("/admin/state", "/admin/state"),
            ("/usage", "/usage"),
            ("/modelsx", "/modelsx"),
            (
                "/compatible-mode/v2/chat/completions",
                "/compatible-mode/v2/chat/completions",
            ),
            ("/compatible-mode/v1x", "/compatible-mode/v1x"),
        ];
        for (path, canonical) in cases {
            assert_eq!(api_path(path), canonical, "{path}");
        }
        let routed = route("POST", &api_path("/compatible-mode/v1/chat/completions"));
        assert_eq!(routed, Ok(Route::Call(Endpoint::Chat)));
        // A path outside /v1 is told where the API is; one under it is not.
        let told = |path: &str| {
            route("POST", path)
                .unwrap_err()
                .message
                .contains("base_url")
        };
        assert!(told("/api/chat/completions") && !told("/v1/audio/speech"));
    }

    #[test]
    fn the_path_of_a_serialised_url() {
        let cases = [
            (
                "https://gw.example/v1/chat/completions",
                "/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8787/admin/report?days=3#x",
                "/admin/report",
            ),
            ("https://gw.example", "/"),
            ("https://gw.example?x=1", "/"),
            ("https://gw.example/", "/"),
            ("https://user:pw@gw.example/a%3Fb/c", "/a%3Fb/c"),
            ("/healthz?probe", "/healthz"),
        ];
        for (url, path) in cases {
            assert_eq!(path_of(url), path, "{url}");
        }
    }

    #[test]
    fn routes_known_paths() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(Route::Call(Endpoint::Chat))
        );
        assert_eq!(
            route("POST", "/v1/chat/completions/"),
            Ok(Route::Call(Endpoint::Chat))
        );
        assert_eq!(route("GET", "/v1/models"), Ok(Route::Models));
        assert_eq!(
            route("POST", "/v1/embeddings"),
            Ok(Route::Call(Endpoint::Embeddings))
        );
        assert_eq!(route("OPTIONS", "/v1/embeddings"), Ok(Route::Preflight));
        assert_eq!(
            route("POST", "/v1/responses"),
            Ok(Route::Call(Endpoint::Responses))
        );
        assert_eq!(route("OPTIONS", "/v1/responses"), Ok(Route::Preflight));
        assert_eq!(
            route("POST", "/v1/completions"),
            Ok(Route::Call(Endpoint::Completions))
        );
        assert_eq!(route("OPTIONS", "/v1/completions"), Ok(Route::Preflight));
        let stored = |id: &str, input_items| {
            Ok(Route::Stored {
                id: id.into(),
                input_items,
            })
        };
        assert_eq!(
            route("GET", "/v1/responses/resp_1.gw0a"),
            stored("resp_1.gw0a", false)
        );
        assert_eq!(
            route("DELETE", "/v1/responses/resp_1"),
            stored("resp_1", false)
        );
        assert_eq!(
            route("GET", "/v1/responses/r%2E1/input_items"),
            stored("r.1", true)
        );
        assert_eq!(
            route("OPTIONS", "/v1/responses/resp_1"),
            Ok(Route::Preflight)
        );
        for (method, path) in [
            ("DELETE", "/v1/responses/resp_1/input_items"),
            ("POST", "/v1/responses/resp_1"),
        ] {
            assert_eq!(
                route(method, path).map_err(|e| e.status),
                Err(405),
                "{method} {path}"
            );
        }
        for path in [
            "/v1/responses/a/b",
            "/v1/responses/%FF",
            "/v1/responses/resp_1/cancel",
        ] {
            assert_eq!(route("GET", path).map_err(|e| e.status), Err(404), "{path}");
        }
        assert_eq!(
            route("GET", "/v1/embeddings").map_err(|e| e.status),
            Err(405)
        );
        let model = |id: &str| Ok(Route::Model { id: id.into() });
        assert_eq!(route("GET", "/v1/models/qwen3-max"), model("qwen3-max"));
        assert_eq!(
            route("GET", "/v1/models/qwen/qwen3-max"),
            model("qwen/qwen3-max")
        );
        assert_eq!(
            route("HEAD", "/v1/models/qwen%2Fqwen3-max/"),
            model("qwen/qwen3-max")
        );
        assert_eq!(
            route("OPTIONS", "/v1/models/qwen3-max"),
            Ok(Route::Preflight)
        );
        assert_eq!(
            route("POST", "/v1/models/qwen3-max").map_err(|e| e.status),
            Err(405)
        );
        assert_eq!(
            route("GET", "/v1/models/%FF").map_err(|e| e.status),
            Err(404)
        );
        assert_eq!(route("HEAD", "/healthz"), Ok(Route::Health));
        assert_eq!(
            route("GET", "/admin/buckets/acct-a/qwen3-max"),
            Ok(Route::AdminBucket {
                account: "acct-a".into(),
                model: Some("qwen3-max".into()),
                clear: false,
            })
        );
    }

    #[test]
    fn model_names_with_slashes_are_reachable_encoded_or_not() {
        let want = |model: &str| {
            Ok(Route::AdminBucket {
                account: "relay-1".into(),
                model: Some(model.into()),
                clear: false,
            })
        };
        assert_eq!(
            route("GET", "/admin/buckets/relay-1/qwen%2Fqwen3-max"),
            want("qwen/qwen3-max")
        );
        assert_eq!(
            route("GET", "/admin/buckets/relay-1/qwen/qwen3-max"),
            want("qwen/qwen3-max")
        );
        assert_eq!(
            route("POST", "/admin/buckets/relay-1/qwen%2fqwen3-max/clear"),
            Ok(Route::AdminBucket {
                account: "relay-1".into(),
                model: Some("qwen/qwen3-max".into()),
                clear: true,
            })
        );
        assert_eq!(
            route("GET", "/admin/buckets/a/model%20x"),
            Ok(Route::AdminBucket {
                account: "a".into(),
                model: Some("model x".into()),
                clear: false,
            })
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for (method, path, status) in [
            ("GET", "/", 404),
            ("POST", "/v1/engines/x/completions", 404),
            ("GET", "/v1/completions", 405),
            ("GET", "/v1/responses", 405),
            ("GET", "/admin/buckets/acct-a", 404),
            ("GET", "/admin/buckets/a//b", 404),
            ("GET", "/admin/buckets/a/%FF", 404),
            ("GET", "/admin/buckets/a/b/clear", 405),
            ("GET", "/v1/chat/completions", 405),
            ("DELETE", "/v1/models", 405),
            ("POST", "/healthz", 405),
        ] {
            assert_eq!(
                route(method, path).unwrap_err().status,
                status,
                "{method} {path}"
            );
        }
        assert_eq!(allowed_methods("/v1/chat/completions"), "POST, OPTIONS");
        assert_eq!(allowed_methods("/v1/responses"), "POST, OPTIONS");
        assert_eq!(allowed_methods("/v1/completions"), "POST, OPTIONS");
        let stored = "GET, HEAD, DELETE, OPTIONS";
        assert_eq!(allowed_methods("/v1/responses/resp_1.gw00000000"), stored);
        assert_eq!(allowed_methods("/v1/responses/r/input_items"), "GET, HEAD");
    }

    #[test]
    fn a_query_goes_along_as_it_came() {
        for (url, query) in [
            (
                "https://gw/v1/responses/r/input_items?limit=2&after=x#f",
                "?limit=2&after=x",
            ),
            ("https://gw/v1/responses/r?", ""),
            ("https://gw/v1/responses/r#a?b", ""),
            ("https://gw/v1/responses/r", ""),
        ] {
            assert_eq!(query_of(url), query, "{url}");
        }
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let url = "https://gw.example/admin/report?account=relay-1&model=qwen%2Fqwen3-max&days=7&x=a+b#frag";
        assert_eq!(query_param(url, "account").as_deref(), Some("relay-1"));
        assert_eq!(query_param(url, "model").as_deref(), Some("qwen/qwen3-max"));
        assert_eq!(query_param(url, "x").as_deref(), Some("a b"));
        assert_eq!(query_param(url, "days").as_deref(), Some("7"));
        assert_eq!(query_param(url, "missing"), None);
        assert_eq!(query_param("https://gw.example/admin/report", "days"), None);
        assert_eq!(query_param("https://x/?flag", "flag").as_deref(), Some(""));
        assert_eq!(query_param("https://x/?bad=%FF", "bad"), None);
    }

    #[test]
    fn preflights_and_client_admin_paths() {
        assert_eq!(
            route("OPTIONS", "/v1/chat/completions"),
            Ok(Route::Preflight)
        );
        assert_eq!(route("OPTIONS", "/v1/models/"), Ok(Route::Preflight));
        assert_eq!(
            route("OPTIONS", "/admin/clients/web").unwrap_err().status,
            405
        );
        let client = |user: Option<&str>, reset| Route::AdminClient {
            client: "web".into(),
            user: user.map(str::to_string),
            reset,
        };
        assert_eq!(route("GET", "/admin/clients/web"), Ok(client(None, false)));
        assert_eq!(
            route("POST", "/admin/clients/web/reset"),
            Ok(client(None, true))
        );
        assert_eq!(
            route("GET", "/admin/clients/web/users/user%2042"),
            Ok(client(Some("user 42"), false))
        );
        assert_eq!(
            route("POST", "/admin/clients/web/users/u1/reset"),
            Ok(client(Some("u1"), true))
        );
        assert_eq!(
            route("GET", "/admin/clients/web/reset").unwrap_err().status,
            405
        );
        assert_eq!(
            route("GET", "/admin/clients/web/x").unwrap_err().status,
            404
        );
        assert_eq!(route("GET", "/admin/clients/").unwrap_err().status, 404);
        assert_eq!(
            route("POST", "/admin/alerts/test"),
            Ok(Route::AdminAlertTest)
        );
        assert_eq!(route("GET", "/admin/alerts/test").unwrap_err().status, 405);
        assert_eq!(allowed_methods("/admin/alerts/test"), "POST");
        assert_eq!(
            route("POST", "/admin/accounts/acct%20a/clear"),
            Ok(Route::AdminBucket {
                account: "acct a".into(),
                model: None,
                clear: true,
            })
        );
        assert_eq!(
            route("GET", "/admin/accounts/a/clear").unwrap_err().status,
            405
        );
        assert_eq!(route("POST", "/admin/accounts/a").unwrap_err().status, 404);
        assert_eq!(
            route("POST", "/admin/accounts//clear").unwrap_err().status,
            404
        );
        assert_eq!(allowed_methods("/admin/accounts/a/clear"), "POST");
        assert_eq!(route("GET", "/v1/usage"), Ok(Route::Usage));
        assert_eq!(route("HEAD", "/v1/usage/"), Ok(Route::Usage));
        assert_eq!(route("OPTIONS", "/v1/usage"), Ok(Route::Preflight));
        assert_eq!(route("POST", "/v1/usage").unwrap_err().status, 405);
        assert_eq!(allowed_methods("/v1/usage"), "GET, HEAD, OPTIONS");
    }
}
