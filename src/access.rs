//! Who is calling: a client's key, or a user token signed with its client's secret, to an
//! identity with its models, limits and browser origins.
//!
//! Keys are compared as SHA-256 digests in constant time; the config holds only digests or
//! secret names. The unlimited keys of the `GATEWAY_KEYS` secret keep working as the client
//! `gateway-keys`. A token can only narrow its client: each limit is the tighter of the two,
//! its models the ones both allow (a token asking for more is clamped, not refused, so
//! lowering a client's limits never breaks tokens already out).

pub mod cors;
pub mod meter;
pub mod ratelimit;
pub mod token;

use crate::config::{Client, Config, OneOrMore};
use crate::openai::ApiError;
use meter::MeterLimits;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The client id of the keys in the `GATEWAY_KEYS` secret.
pub const GATEWAY_KEYS_CLIENT: &str = "gateway-keys";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity<'a> {
    /// The client's id.
    pub client: &'a str,
    /// Its settings (None for `GATEWAY_KEYS`).
    pub settings: Option<&'a Client>,
    /// The user (`sub`) of a token.
    pub user: Option<String>,
    /// Public models it may call (None: all).
    pub models: Option<Vec<String>>,
    /// The client's limits (all its users together).
    pub client_limits: MeterLimits,
    /// The user's own limits, for a token (its client's, narrowed by the token).
    pub user_limits: Option<MeterLimits>,
}

impl Identity<'_> {
    /// Whether it may call the public model `model`.
    pub fn may_call(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// The 403 for a model it may not call.
    pub fn model_refused(&self, model: &str) -> ApiError {
        let mut e = ApiError::new(
            403,
            "permission_error",
            Some("model_not_allowed"),
            format!("This client may not call the model `{model}`."),
        );
        e.param = Some("model".into());
        e.should_retry = Some(false);
        e
    }

    /// The limits of its own meter: a user token's (its client's, narrowed by the token), else
    /// its client's.
    pub fn own_limits(&self) -> MeterLimits {
        match self.user {
            Some(_) => self.user_limits.unwrap_or_default(),
            None => self.client_limits,
        }
    }

    /// Browser origins allowed to call as this client.
    pub fn origins(&self) -> &[String] {
        self.settings.map_or(&[], |c| c.origins.as_slice())
    }
}

/// The answer to a request a meter refused; `whose` is "client `web`" or "user `u` of client
/// `web`". None when the verdict admits.
pub fn refusal(verdict: &meter::Verdict, now_ms: u64, whose: &str) -> Option<ApiError> {
    let secs = |until_ms: u64| until_ms.saturating_sub(now_ms).div_ceil(1_000).max(1);
    match verdict {
        meter::Verdict::Go { .. } => None,
        meter::Verdict::Rate { until_ms, .. } => {
            let wait_s = secs(*until_ms);
            let mut e = ApiError::new(
                429,
                "requests",
                Some("rate_limit_exceeded"),
                format!("Rate limit of {whose} reached (requests or tokens per minute). Retry after {wait_s} s."),
            );
            e.retry_after_s = Some(wait_s);
            Some(e)
        }
        meter::Verdict::Budget {
            which, until_ms, ..
        } => {
            let mut e = ApiError::new(
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                format!(
                    "The {} budget of {whose} is used up until the period ends (UTC), or until an operator resets it.",
                    if which == "monthly_usd" { "monthly spend" } else { "daily token" }
                ),
            );
            e.retry_after_s = Some(secs(*until_ms));
            e.should_retry = Some(false);
            Some(e)
        }
        meter::Verdict::TooLarge => {
            let mut e = ApiError::invalid_request(
                format!("This request alone is larger than the token limits of {whose}."),
                Some("max_tokens"),
            );
            e.code = Some("request_too_large".into());
            Some(e)
        }
    }
}

/// The limits a client's config sets.
pub fn client_limits(client: &Client) -> MeterLimits {
    MeterLimits {
        rpm: client.rpm,
        tpm: client.tpm,
        daily_tokens: client.daily_tokens,
        monthly_micro_usd: client.monthly_usd.map(crate::pricing::micro_usd),
    }
}

/// The SHA-256 digests of every key that may call: each client's (its `key_sha256` list, or
/// its `key_secret` ones hashed) and each `GATEWAY_KEYS` entry. Worked out once per isolate (secrets
/// change only with a deployment, which starts new isolates), not on every request.
#[derive(Debug, Default)]
pub struct Keyring {
    /// (client id, digest of one of its keys), in the config's order.
    clients: Vec<(String, Vec<u8>)>,
    /// Digests of the `GATEWAY_KEYS` entries; None when the secret is unset or empty.
    gateway_keys: Option<Vec<Vec<u8>>>,
}

impl Keyring {
    /// The keys of `config`'s clients and of `GATEWAY_KEYS`; `secret` reads a Worker secret.
    pub fn new(config: &Config, secret: &dyn Fn(&str) -> Option<String>) -> Keyring {
        let digest = |key: &str| Sha256::digest(key.as_bytes()).to_vec();
        let mut clients = Vec::new();
        for (id, client) in &config.clients {
            if let Some(hexes) = &client.key_sha256 {
                clients.extend(hexes.iter().filter_map(decode_hex).map(|k| (id.clone(), k)));
            } else if let Some(names) = &client.key_secret {
                let keys = names.iter().filter_map(secret);
                clients.extend(keys.map(|k| (id.clone(), digest(&k))));
            }
        }
        let gateway_keys = secret("GATEWAY_KEYS")
            .filter(|k| !k.trim().is_empty())
            .map(|keys| {
                let listed = keys.split(',').map(str::trim).filter(|k| !k.is_empty());
                listed.map(digest).collect()
            });
        Keyring {
            clients,
            gateway_keys,
        }
    }
}

/// Authenticates the bearer credential at `now_s` (seconds since the epoch) against the
/// `keyring` of `config`; `secret` reads a Worker secret by name (a token's signing secret).
pub fn authenticate<'a>(
    config: &'a Config,
    keyring: &Keyring,
    bearer: Option<&str>,
    secret: &dyn Fn(&str) -> Option<String>,
    now_s: u64,
) -> Result<Identity<'a>, ApiError> {
    if config.clients.is_empty() && keyring.gateway_keys.is_none() {
        return Err(ApiError::unauthorized(
            "This gateway has no clients configured (set the GATEWAY_KEYS secret, or `clients` in the config).",
        ));
    }
    let Some(bearer) = bearer.filter(|b| !b.is_empty()) else {
        return Err(ApiError::unauthorized(
            "Missing credential: send the gateway key or a user token as `Authorization: Bearer <...>`.",
        ));
    };
    if token::looks_like_token(bearer) {
        return by_token(config, bearer, secret, now_s);
    }
    let offered = Sha256::digest(bearer.as_bytes());
    let same = |digest: &[u8]| bool::from(offered.as_slice().ct_eq(digest));
    let client = keyring.clients.iter().find(|(_, digest)| same(digest));
    if let Some((id, client)) = client.and_then(|(id, _)| config.clients.get_key_value(id)) {
        return Ok(Identity {
            client: id,
            settings: Some(client),
            user: None,
            models: client.models.clone(),
            client_limits: client_limits(client),
            user_limits: None,
        });
    }
    let listed = keyring.gateway_keys.iter().flatten();
    let known = listed.fold(false, |hit, digest| hit | same(digest));
    if known {
        return Ok(Identity {
            client: GATEWAY_KEYS_CLIENT,
            settings: None,
            user: None,
            models: None,
            client_limits: MeterLimits::default(),
            user_limits: None,
        });
    }
    Err(ApiError::unauthorized(
        "Incorrect gateway API key: send a configured key or a user token as `Authorization: Bearer <...>`.",
    ))
}

fn by_token<'a>(
    config: &'a Config,
    bearer: &str,
    secret: &dyn Fn(&str) -> Option<String>,
    now_s: u64,
) -> Result<Identity<'a>, ApiError> {
    let refused = |e: token::TokenError| ApiError::unauthorized(e.message());
    let issuer = token::unverified_issuer(bearer).map_err(refused)?;
    let found = config.clients.get_key_value(issuer.as_str());
    let Some((id, client, rules)) =
        found.and_then(|(id, c)| c.user_tokens.as_ref().map(|t| (id, c, t)))
    else {
        return Err(ApiError::unauthorized(
            "The user token's `iss` names no client that accepts user tokens.",
        ));
    };
    let keys = signing_keys(id, &rules.secret, secret)?;
    let check = token::Rules {
        max_lifetime_s: rules.max_lifetime_s,
        skew_s: rules.skew_s,
    };
    let claims = token::verify(bearer, &keys, now_s, check).map_err(refused)?;
    let limits = client_limits(client);
    let asked = MeterLimits {
        rpm: claims.rpm,
        tpm: claims.tpm,
        daily_tokens: claims.daily_tokens,
        monthly_micro_usd: None,
    };
    let models = match (&client.models, claims.models) {
        (Some(mine), Some(asked)) => Some(asked.into_iter().filter(|m| mine.contains(m)).collect()),
        (mine, asked) => asked.or_else(|| mine.clone()),
    };
    Ok(Identity {
        client: id,
        settings: Some(client),
        user: claims.sub,
        models,
        client_limits: limits,
        user_limits: Some(limits.narrowed(asked)),
    })
}

/// The signing keys of client `id`, from the secrets `names` (every one must be set).
pub fn signing_keys(
    id: &str,
    names: &OneOrMore,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let mut keys = Vec::new();
    for name in names.iter() {
        match secret(name).filter(|k| !k.is_empty()) {
            Some(key) => keys.push(key.into_bytes()),
            None => {
                return Err(ApiError::config(format!(
                    "The signing secret of client '{id}' is not set (wrangler secret put {name})."
                )))
            }
        }
    }
    Ok(keys)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
