//! Maps (method, path) to the gateway's endpoints, with 404 and 405 in OpenAI's shape.

use crate::openai::ApiError;
use percent_encoding::percent_decode_str;

/// An endpoint the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `GET /v1/models`.
    Models,
    /// `GET /healthz`.
    Health,
    /// `GET /admin/buckets/<account>/<model>`: one bucket's live state.
    AdminBucket {
        /// Account id.
        account: String,
        /// Upstream model name.
        model: String,
    },
    /// `POST /admin/buckets/<account>/<model>/clear`: lift a park or cooldown.
    AdminClear {
        /// Account id.
        account: String,
        /// Upstream model name.
        model: String,
    },
}

/// Resolves a request line to a route, or the error to answer with.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let (expected, route) = match path {
        "/v1/chat/completions" => ("POST", Route::ChatCompletions),
        "/v1/models" => ("GET", Route::Models),
        "/healthz" => ("GET", Route::Health),
        _ => match path.strip_prefix("/admin/buckets/").and_then(bucket_path) {
            Some((account, model, false)) => ("GET", Route::AdminBucket { account, model }),
            Some((account, model, true)) => ("POST", Route::AdminClear { account, model }),
            None => return Err(ApiError::unknown_route(method, path)),
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

/// The methods a route accepts, for the `Allow` header of a 405.
pub fn allowed_methods(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    if path == "/v1/chat/completions" || path.ends_with("/clear") {
        "POST"
    } else {
        "GET, HEAD"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_known_paths() {
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(
            route("POST", "/v1/chat/completions/"),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(route("GET", "/v1/models"), Ok(Route::Models));
        assert_eq!(route("HEAD", "/healthz"), Ok(Route::Health));
        assert_eq!(
            route("GET", "/admin/buckets/acct-a/qwen3-max"),
            Ok(Route::AdminBucket {
                account: "acct-a".into(),
                model: "qwen3-max".into()
            })
        );
    }

    #[test]
    fn model_names_with_slashes_are_reachable_encoded_or_not() {
        let want = |model: &str| {
            Ok(Route::AdminBucket {
                account: "relay-1".into(),
                model: model.into(),
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
            Ok(Route::AdminClear {
                account: "relay-1".into(),
                model: "qwen/qwen3-max".into(),
            })
        );
        assert_eq!(
            route("GET", "/admin/buckets/a/model%20x"),
            Ok(Route::AdminBucket {
                account: "a".into(),
                model: "model x".into(),
            })
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for (method, path, status) in [
            ("GET", "/", 404),
            ("POST", "/v1/completions", 404),
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
        assert_eq!(allowed_methods("/v1/chat/completions"), "POST");
    }
}
