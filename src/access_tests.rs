//! Authentication: keys by digest, `GATEWAY_KEYS`, user tokens narrowing their client.

use super::*;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const WEB_KEY: &str = "gk-web-0123456789";
const SIGNING: &str = "signing-secret-for-web";

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config() -> Config {
    let value: Value = json!({
        "upstreams": {"sim": {"base_url": "http://127.0.0.1:9/v1", "profile": "dashscope"}},
        "accounts": {"a": {"upstream": "sim", "keys": ["K"], "limits": {"qwen3-max": {}, "qwen-plus": {}}}},
        "models": {"qwen3-max": {"fallback": ["qwen3-max"]}, "qwen-plus": {"fallback": ["qwen-plus"]}},
        "clients": {
            "web": {
                "key_sha256": sha256_hex(WEB_KEY),
                "models": ["qwen3-max", "qwen-plus"],
                "rpm": 60, "tpm": 10000, "daily_tokens": 100000, "monthly_usd": 5.5,
                "origins": ["http://localhost:5173"],
                "user_tokens": {"secret": "WEB_SIGNING", "max_lifetime_s": 900}
            },
            "batch": {"key_secret": "BATCH_KEY"}
        }
    });
    Config::from_value(&value).unwrap()
}

fn secrets(name: &str) -> Option<String> {
    match name {
        "GATEWAY_KEYS" => Some("legacy-1, legacy-2".into()),
        "BATCH_KEY" => Some("gk-batch".into()),
        "WEB_SIGNING" => Some(SIGNING.into()),
        _ => None,
    }
}

fn auth<'a>(c: &'a Config, bearer: &str) -> Result<Identity<'a>, ApiError> {
    authenticate(c, &Keyring::new(c, &secrets), Some(bearer), &secrets, NOW)
}

#[test]
fn keys_find_their_client_by_digest_or_secret_and_legacy_keys_still_work() {
    let c = config();
    let web = auth(&c, WEB_KEY).unwrap();
    assert_eq!(web.client, "web");
    assert_eq!(web.client_limits.rpm, Some(60));
    assert_eq!(web.client_limits.monthly_micro_usd, Some(5_500_000));
    assert!(web.may_call("qwen3-max") && web.user.is_none());
    assert_eq!(auth(&c, "gk-batch").unwrap().client, "batch");
    let legacy = auth(&c, "legacy-2").unwrap();
    assert_eq!(legacy.client, GATEWAY_KEYS_CLIENT);
    assert!(legacy.client_limits.is_unlimited() && legacy.origins().is_empty());
    for wrong in ["gk-web-012345678", "legacy", "legacy-1, legacy-2", "x"] {
        let e = auth(&c, wrong).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (401, Some("invalid_api_key"))
        );
    }
    assert_eq!(
        authenticate(&c, &Keyring::new(&c, &secrets), None, &secrets, NOW)
            .unwrap_err()
            .status,
        401
    );
}

#[test]
fn revoking_a_client_is_removing_it_from_the_config() {
    let mut c = config();
    c.clients.remove("batch");
    assert_eq!(auth(&c, "gk-batch").unwrap_err().status, 401);
    assert!(auth(&c, WEB_KEY).is_ok());
}

#[test]
fn a_token_narrows_its_client_and_never_widens_it() {
    let c = config();
    let claims = json!({
        "iss": "web", "sub": "user-7", "iat": NOW, "exp": NOW + 600,
        "rpm": 1000, "tpm": 500, "models": ["qwen3-max", "gpt-5"]
    });
    let t = token::sign(&claims.to_string(), SIGNING.as_bytes());
    let id = auth(&c, &t).unwrap();
    assert_eq!((id.client, id.user.as_deref()), ("web", Some("user-7")));
    let user = id.user_limits.unwrap();
    // rpm asked above the client's: clamped to 60; tpm below: kept.
    assert_eq!(
        (user.rpm, user.tpm, user.daily_tokens),
        (Some(60), Some(500), Some(100_000))
    );
    assert_eq!(id.models, Some(vec!["qwen3-max".to_string()]));
    assert!(!id.may_call("qwen-plus") && !id.may_call("gpt-5"));
    assert_eq!(id.model_refused("qwen-plus").status, 403);
}

#[test]
fn bad_tokens_are_401_saying_why_and_nothing_secret() {
    let c = config();
    let sign = |claims: Value| token::sign(&claims.to_string(), SIGNING.as_bytes());
    let cases = [
        (
            sign(json!({"iss": "web", "sub": "u", "exp": NOW - 100})),
            "expired",
        ),
        (
            sign(json!({"iss": "web", "sub": "u", "nbf": NOW + 300, "exp": NOW + 600})),
            "not valid yet",
        ),
        (
            sign(json!({"iss": "web", "sub": "u", "iat": NOW, "exp": NOW + 901})),
            "longer",
        ),
        (
            sign(json!({"iss": "batch", "sub": "u", "exp": NOW + 60})),
            "no client",
        ),
        (
            sign(json!({"iss": "nobody", "sub": "u", "exp": NOW + 60})),
            "no client",
        ),
        (
            token::sign(
                &json!({"iss": "web", "sub": "u", "exp": NOW + 60}).to_string(),
                b"guess",
            ),
            "signature",
        ),
    ];
    for (t, says) in cases {
        let e = auth(&c, &t).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (401, Some("invalid_api_key")),
            "{says}"
        );
        assert!(e.message.contains(says), "{}: {says}", e.message);
        assert!(!e.message.contains(SIGNING) && !e.body().contains(SIGNING));
    }
}

#[test]
fn an_unset_signing_secret_is_a_config_error_naming_only_the_secret() {
    let c = config();
    let t = token::sign(
        &json!({"iss": "web", "sub": "u", "exp": NOW + 60}).to_string(),
        b"x",
    );
    let e = authenticate(&c, &Keyring::default(), Some(&t), &|_| None, NOW).unwrap_err();
    assert_eq!(e.status, 500);
    assert!(e.message.contains("WEB_SIGNING"));
}

#[test]
fn client_config_errors_name_the_field() {
    let bad = |client: Value| {
        let mut v = json!({
            "upstreams": {"sim": {"base_url": "http://127.0.0.1:9/v1", "profile": "dashscope"}},
            "accounts": {"a": {"upstream": "sim", "keys": ["K"], "limits": {"m": {}}}},
            "models": {"m": {"fallback": ["m"]}},
        });
        v["clients"] = json!({ "c": client });
        Config::from_value(&v).unwrap_err()
    };
    assert!(bad(json!({"key_sha256": "abc"})).contains("clients.c.key_sha256"));
    assert!(bad(json!({})).contains("needs a key"));
    assert!(bad(json!({"key_secret": "S", "models": ["x"]})).contains("clients.c.models"));
    assert!(bad(json!({"key_secret": "S", "origins": ["http://a.test/"]})).contains("origins"));
    assert!(bad(json!({"key_secret": "S", "rpm": 0})).contains("clients.c.rpm"));
    assert!(bad(json!({"key_secret": "S", "monthly_usd": -1.0})).contains("monthly_usd"));
    assert!(bad(json!({"key_secret": "S", "unknown": 1})).contains("unknown"));
    let hex = "0".repeat(64);
    assert!(bad(json!({"key_sha256": [hex, "abc"]})).contains("clients.c.key_sha256: must be"));
    assert!(bad(json!({"key_sha256": []})).contains("clients.c.key_sha256: an empty list"));
    assert!(bad(json!({"key_secret": ["A", " "]})).contains("clients.c.key_secret: an empty"));
    let tokens = json!({"key_secret": "S", "user_tokens": {"secret": []}});
    assert!(bad(tokens).contains("clients.c.user_tokens.secret: an empty list"));
    let number = bad(json!({"key_secret": 7}));
    assert!(number.contains("clients.c.key_secret: invalid type: integer `7`, expected a string or a list of strings"), "{number}");
}

/// While a client's key or signing secret is replaced, both are listed: the old and the new
/// key each find the client, a token signed with either is its user's, and with neither it
/// is refused for its signature.
#[test]
fn a_client_mid_rotation_accepts_its_old_and_new_key_and_signing_secret() {
    let mut c = config();
    if let Some(web) = c.clients.get_mut("web") {
        let digests = [sha256_hex("gk-web-next"), sha256_hex(WEB_KEY)];
        web.key_sha256 = Some(crate::config::OneOrMore(digests.to_vec()));
        if let Some(t) = web.user_tokens.as_mut() {
            t.secret =
                crate::config::OneOrMore(vec!["WEB_SIGNING_NEXT".into(), "WEB_SIGNING".into()]);
        }
    }
    if let Some(batch) = c.clients.get_mut("batch") {
        batch.key_secret = Some(crate::config::OneOrMore(vec![
            "BATCH_KEY".into(),
            "BATCH_KEY_NEXT".into(),
        ]));
    }
    let rotating = |name: &str| match name {
        "WEB_SIGNING_NEXT" => Some("next-signing-secret".into()),
        "BATCH_KEY_NEXT" => Some("gk-batch-next".into()),
        other => secrets(other),
    };
    let keyring = Keyring::new(&c, &rotating);
    let auth = |bearer: &str| authenticate(&c, &keyring, Some(bearer), &rotating, NOW);
    for (key, client) in [
        (WEB_KEY, "web"),
        ("gk-web-next", "web"),
        ("gk-batch", "batch"),
        ("gk-batch-next", "batch"),
    ] {
        assert_eq!(auth(key).unwrap().client, client, "{key}");
    }
    let claims = format!(
        r#"{{"iss":"web","sub":"u","iat":{NOW},"exp":{}}}"#,
        NOW + 60
    );
    for secret in ["next-signing-secret", SIGNING] {
        let user = auth(&token::sign(&claims, secret.as_bytes())).unwrap();
        assert_eq!(user.user.as_deref(), Some("u"), "{secret}");
    }
    let stranger = auth(&token::sign(&claims, b"another")).unwrap_err();
    assert!(
        stranger.message.contains("signature"),
        "{}",
        stranger.message
    );
    // A listed secret that is not set is the operator's to fix (500), never a pass.
    let unset = |name: &str| {
        (name != "WEB_SIGNING_NEXT")
            .then(|| rotating(name))
            .flatten()
    };
    let e = authenticate(
        &c,
        &keyring,
        Some(&token::sign(&claims, SIGNING.as_bytes())),
        &unset,
        NOW,
    )
    .unwrap_err();
    assert_eq!(e.status, 500);
    assert!(e.message.contains("WEB_SIGNING_NEXT"));
}

#[test]
fn refusals_are_openai_shaped_with_honest_retry_advice() {
    use meter::Verdict;
    let now = 1_000_000;
    assert!(refusal(
        &Verdict::Go {
            lease: 1,
            credit: None,
            at_ms: None,
            minute_use: Default::default(),
        },
        now,
        "client `web`"
    )
    .is_none());
    let e = refusal(
        &Verdict::Rate {
            until_ms: now + 2_001,
            minute_use: Default::default(),
            credits_open: false,
        },
        now,
        "client `web`",
    )
    .unwrap();
    assert_eq!(
        (e.status, e.code.as_deref(), e.retry_after_s),
        (429, Some("rate_limit_exceeded"), Some(3))
    );
    assert!(e.message.contains("client `web`"));
    let budget = Verdict::Budget {
        which: "daily_tokens".into(),
        until_ms: now + 3_600_000,
        credits_open: false,
    };
    let e = refusal(&budget, now, "user `u` of client `web`").unwrap();
    assert_eq!(
        (e.status, e.code.as_deref(), e.should_retry),
        (429, Some("insufficient_quota"), Some(false))
    );
    assert_eq!(e.retry_after_s, Some(3_600));
    assert_eq!(
        refusal(&Verdict::TooLarge, now, "client `web`")
            .unwrap()
            .status,
        400
    );
}
