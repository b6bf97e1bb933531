//! Maps (method, path) to the gateway's endpoints, with 404 and 405 in OpenAI's shape.

use crate::openai::ApiError;

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
        _ => {
            let parts: Vec<&str> = path
                .strip_prefix("/admin/buckets/")
                .map(|r| r.split('/').collect())
                .unwrap_or_default();
            match parts.as_slice() {
                [account, model] if !account.is_empty() && !model.is_empty() => (
                    "GET",
                    Route::AdminBucket {
                        account: account.to_string(),
                        model: model.to_string(),
                    },
                ),
                [account, model, "clear"] if !account.is_empty() && !model.is_empty() => (
                    "POST",
                    Route::AdminClear {
                        account: account.to_string(),
                        model: model.to_string(),
                    },
                ),
                _ => return Err(ApiError::unknown_route(method, path)),
            }
        }
    };
    if method == expected || (method == "HEAD" && expected == "GET") {
        Ok(route)
    } else {
        Err(ApiError::method_not_allowed(method, path))
    }
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
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for (method, path, status) in [
            ("GET", "/", 404),
            ("POST", "/v1/completions", 404),
            ("GET", "/admin/buckets/acct-a", 404),
            ("GET", "/admin/buckets/a/b/c", 404),
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
