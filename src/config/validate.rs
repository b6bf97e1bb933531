//! Checks a parsed config for what its types cannot say: ranges, references between its
//! parts, ids and model names fit for bucket names and headers.

use super::*;

/// Durable Object location hints Cloudflare places objects by.
const LOCATION_HINTS: [&str; 9] = [
    "wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me",
];

/// Said of a secret-name list holding a key itself (which the message must not repeat).
const KEY_NOT_NAME: &str = "holds an API key itself, not the name of the secret that holds it: put the key in a secret (`wrangler secret put <NAME>`) and list <NAME> here";

impl Config {
    /// Every rule the config must keep; the first broken one, named by its path.
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(self.time_scale.is_finite() && self.time_scale >= 1.0) {
            return Err("time_scale: must be a number >= 1".into());
        }
        for (field, ms) in [
            ("default_max_wait_ms", Some(self.default_max_wait_ms)),
            ("default_deadline_ms", Some(self.default_deadline_ms)),
            (
                "default_first_token_timeout_ms",
                Some(self.default_first_token_timeout_ms),
            ),
            ("stream_idle_timeout_ms", Some(self.stream_idle_timeout_ms)),
            ("window_margin_ms", Some(self.window_margin_ms)),
            ("bucket_timeout_ms", Some(self.bucket_timeout_ms)),
        ] {
            check_ms(field, ms)?;
        }
        if self.max_body_bytes == 0 || self.max_messages == 0 {
            return Err("max_body_bytes, max_messages: must be at least 1".into());
        }
        for id in self.upstreams.keys().chain(self.accounts.keys()) {
            check_id(id)?;
        }
        let models = self.accounts.values().flat_map(|a| a.limits.keys());
        let models = models.chain(self.models.keys()).chain(self.prices.keys());
        let steps = self.models.values().flat_map(|r| r.fallback.iter());
        for model in models.map(String::as_str).chain(steps.map(StepSpec::model)) {
            check_model_name(model)?;
        }
        for (name, route) in &self.models {
            let at = |field: &str| format!("models.{name}.{field}");
            check_ms(&at("max_wait_ms"), route.max_wait_ms)?;
            check_ms(&at("deadline_ms"), route.deadline_ms)?;
            check_ms(&at("first_token_timeout_ms"), route.first_token_timeout_ms)?;
        }
        for (id, up) in &self.upstreams {
            let url = up.base_url.as_str();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "upstreams.{id}.base_url: must start with https:// or http://"
                ));
            }
            if url.ends_with('/') {
                return Err(format!(
                    "upstreams.{id}.base_url: must not end with '/' (paths such as /chat/completions are appended)"
                ));
            }
            if let Some(hint) = up.location_hint.as_deref() {
                if !LOCATION_HINTS.contains(&hint) {
                    return Err(format!(
                        "upstreams.{id}.location_hint: '{hint}' is none of Cloudflare's: {}",
                        LOCATION_HINTS.join(", ")
                    ));
                }
            }
            let endpoints = [
                "/chat/completions",
                "/completions",
                "/responses",
                "/embeddings",
            ];
            if let Some(path) = endpoints.iter().find(|p| url.ends_with(*p)) {
                return Err(format!(
                    "upstreams.{id}.base_url: the API's root, without {path} (which is appended), e.g. https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
                ));
            }
            if !(up.weight.is_finite() && up.weight > 0.0) {
                return Err(format!("upstreams.{id}.weight: must be a positive number"));
            }
            if let Some(SlowStartSetting::Tuned(s)) = up.slow_start {
                let floor_ok = s.floor.is_finite() && s.floor > 0.0 && s.floor <= 1.0;
                if !(floor_ok && s.growth.is_finite() && s.growth >= 1.0) {
                    return Err(format!(
                        "upstreams.{id}.slow_start: floor must be in (0, 1] and growth >= 1"
                    ));
                }
            }
        }
        for (id, acct) in &self.accounts {
            if !self.upstreams.contains_key(&acct.upstream) {
                return Err(format!(
                    "accounts.{id}.upstream: no upstream named '{}'",
                    acct.upstream
                ));
            }
            if acct.keys.is_empty() {
                return Err(format!(
                    "accounts.{id}.keys: needs at least one secret name"
                ));
            }
            if let Some(k) = acct.keys.iter().find(|k| k.trim().is_empty()) {
                return Err(format!("accounts.{id}.keys: empty secret name '{k}'"));
            }
            if acct.keys.iter().any(|k| redact::has_key(k)) {
                return Err(format!("accounts.{id}.keys: {KEY_NOT_NAME}"));
            }
            if !(acct.weight.is_finite() && acct.weight > 0.0) {
                return Err(format!("accounts.{id}.weight: must be a positive number"));
            }
            for (model, l) in &acct.limits {
                let zero = [l.rpm, l.rps, l.tpm, l.tps].contains(&Some(0));
                if zero {
                    return Err(format!(
                        "accounts.{id}.limits.{model}: a limit of 0 admits nothing; remove the model instead"
                    ));
                }
            }
        }
        for (name, route) in &self.models {
            if route.fallback.is_empty() {
                return Err(format!("models.{name}.fallback: needs at least one model"));
            }
            for (i, step) in route.fallback.iter().enumerate() {
                let at = format!("models.{name}.fallback[{i}]");
                if let StepSpec::Detailed {
                    accounts,
                    upstreams,
                    ..
                } = step
                {
                    if let Some(a) = accounts
                        .iter()
                        .flatten()
                        .find(|a| !self.accounts.contains_key(*a))
                    {
                        return Err(format!("{at}.accounts: no account named '{a}'"));
                    }
                    if let Some(u) = upstreams
                        .iter()
                        .flatten()
                        .find(|u| !self.upstreams.contains_key(*u))
                    {
                        return Err(format!("{at}.upstreams: no upstream named '{u}'"));
                    }
                }
                if self.candidates(step).next().is_none() {
                    return Err(format!(
                        "{at}: no allowed account lists '{}' under its limits",
                        step.model()
                    ));
                }
            }
        }
        for (model, price) in &self.prices {
            let mut last: Option<u64> = None;
            for (i, tier) in price.tiers.iter().enumerate() {
                let at = format!("prices.{model}.tiers[{i}]");
                if !(tier.input >= 0.0 && tier.output >= 0.0) {
                    return Err(format!("{at}: prices must be >= 0"));
                }
                match (last, tier.up_to) {
                    (Some(prev), Some(up)) if up <= prev => {
                        return Err(format!("{at}.up_to: tiers must ascend"))
                    }
                    (_, None) if i + 1 != price.tiers.len() => {
                        return Err(format!("{at}.up_to: only the last tier may omit it"))
                    }
                    _ => {}
                }
                last = tier.up_to;
            }
            if price.tiers.is_empty() {
                return Err(format!("prices.{model}.tiers: needs at least one tier"));
            }
            let cache = &price.cache;
            let shares = [
                ("hit", Some(cache.hit)),
                ("explicit_hit", cache.explicit_hit),
                ("write", Some(cache.write)),
            ];
            for (name, share) in shares {
                if share.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
                    return Err(format!("prices.{model}.cache.{name}: must be a share >= 0"));
                }
            }
        }
        for (id, client) in &self.clients {
            check_id(id)?;
            self.check_client(id, client)?;
        }
        Ok(())
    }

    fn check_client(&self, id: &str, client: &Client) -> Result<(), String> {
        let at = |field: &str| format!("clients.{id}.{field}");
        match (&client.key_sha256, &client.key_secret, &client.user_tokens) {
            (Some(_), Some(_), _) => {
                return Err(at("key_sha256: set key_sha256 or key_secret, not both"))
            }
            (None, None, None) => {
                return Err(at(
                    "key_sha256: a client needs a key (key_sha256 or key_secret) or user_tokens",
                ))
            }
            _ => {}
        }
        let lists = [
            ("key_sha256", client.key_sha256.as_ref()),
            ("key_secret", client.key_secret.as_ref()),
            (
                "user_tokens.secret",
                client.user_tokens.as_ref().map(|t| &t.secret),
            ),
        ];
        for (field, list) in lists {
            let Some(list) = list else { continue };
            if list.0.is_empty() {
                return Err(at(&format!("{field}: an empty list")));
            }
            if field != "key_sha256" && list.iter().any(|s| s.trim().is_empty()) {
                return Err(at(&format!("{field}: an empty secret name")));
            }
            if field != "key_sha256" && list.iter().any(redact::has_key) {
                return Err(at(&format!("{field}: {KEY_NOT_NAME}")));
            }
        }
        let hexes = client.key_sha256.iter().flat_map(OneOrMore::iter);
        if hexes
            .into_iter()
            .any(|hex| hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(at(
                "key_sha256: must be 64 hex digits (sha256sum of the key)",
            ));
        }
        if let Some(m) = client
            .models
            .iter()
            .flatten()
            .find(|m| !self.models.contains_key(*m))
        {
            return Err(at(&format!("models: no public model named '{m}'")));
        }
        if [client.rpm, client.tpm, client.daily_tokens].contains(&Some(0)) {
            return Err(at(
                "rpm: a limit of 0 admits nothing; remove the client instead",
            ));
        }
        if let Some(usd) = client.monthly_usd {
            if !(0.0..1e12).contains(&usd) {
                return Err(at("monthly_usd: must be a number >= 0"));
            }
        }
        if let Some(o) = client.origins.iter().find(|o| !valid_origin(o)) {
            return Err(at(&format!(
                "origins: '{}' is not an origin (scheme://host[:port], no path) or '*'",
                o.escape_debug()
            )));
        }
        if let Some(t) = &client.user_tokens {
            if t.max_lifetime_s == 0 || t.max_lifetime_s > 31 * 86_400 || t.skew_s > 3_600 {
                return Err(at(
                    "user_tokens: max_lifetime_s must be 1 s to 31 days, skew_s at most an hour",
                ));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]` as browsers send it in `Origin` (no path, no trailing slash), or `*`.
fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn check_ms(field: &str, ms: Option<u64>) -> Result<(), String> {
    match ms {
        Some(ms) if ms > MAX_CONFIG_MS => Err(format!(
            "{field}: {ms} ms is more than a day ({MAX_CONFIG_MS} ms)"
        )),
        _ => Ok(()),
    }
}

/// Upstream and account ids: letters, digits, `.`, `_`, `-` (they name buckets and URLs).
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}': ids of upstreams and accounts take letters, digits, '.', '_' and '-' (at most 64)",
            id.escape_debug()
        ))
    }
}

/// Model names go into response headers: visible ASCII only, no spaces.
fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model '{}': model names must be 1-256 visible ASCII characters (they are sent as header values)",
            name.escape_debug()
        ))
    }
}
