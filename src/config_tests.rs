//! Config parsing and validation, compiled only under #[cfg(test)]: every error names its field.

use super::*;
use crate::pace::SlowStart;
use serde_json::json;

fn base() -> Value {
    json!({
        "upstreams": {
            "sim": {"base_url": "http://127.0.0.1:9/compatible-mode/v1", "profile": "dashscope"},
            "relay": {"base_url": "https://relay.example/v1", "profile": "openai-compatible", "priority": 1, "weight": 2.0}
        },
        "accounts": {
            "acct-a": {"upstream": "sim", "keys": ["KEY_A1", "KEY_A2"], "limits": {"qwen3-max": {"rpm": 6}, "qwen-plus": {}}},
            "acct-b": {"upstream": "sim", "keys": ["KEY_B1"], "limits": {"qwen3-max": {"rpm": 6, "tpm": 1000}}},
            "relay-1": {"upstream": "relay", "keys": ["RELAY_KEY"], "limits": {"qwen3-max": {}}}
        },
        "models": {"qwen3-max": {"fallback": ["qwen3-max", {"model": "qwen-plus", "accounts": ["acct-a"]}], "max_wait_ms": 500}},
        "prices": {"qwen3-max": {"tiers": [{"up_to": 32000, "input": 1.2, "output": 6.0}, {"input": 2.4, "output": 12.0}]}}
    })
}

#[test]
fn parses_object_and_json_string() {
    let from_obj = Config::from_value(&base()).unwrap();
    let from_str = Config::from_value(&Value::String(base().to_string())).unwrap();
    assert_eq!(from_obj, from_str);
    assert_eq!(
        from_obj.accounts["acct-b"].limits["qwen3-max"].tpm,
        Some(1000)
    );
    assert_eq!(from_obj.default_max_wait_ms, 2000);
    assert_eq!(from_obj.models["qwen3-max"].max_wait_ms, Some(500));
    let steps = &from_obj.models["qwen3-max"].fallback;
    let first: Vec<_> = from_obj.candidates(&steps[0]).map(|c| c.account).collect();
    assert_eq!(first, ["acct-a", "acct-b", "relay-1"]);
    let second: Vec<_> = from_obj.candidates(&steps[1]).map(|c| c.account).collect();
    assert_eq!(second, ["acct-a"]);
    let only_relay = StepSpec::Detailed {
        model: "qwen3-max".into(),
        accounts: None,
        upstreams: Some(vec!["relay".into()]),
    };
    let relay: Vec<_> = from_obj
        .candidates(&only_relay)
        .map(|c| c.account)
        .collect();
    assert_eq!(relay, ["relay-1"]);
}

#[test]
fn keys_whose_secret_is_not_set_are_left_out_and_an_account_with_none_serves_nothing() {
    let mut config = Config::from_value(&base()).unwrap();
    let left_out = config.leave_out_unset_keys(|k| k != "KEY_A2" && k != "KEY_B1");
    let pair = |a: &str, k: &str| (a.to_string(), k.to_string());
    assert_eq!(
        left_out,
        [pair("acct-a", "KEY_A2"), pair("acct-b", "KEY_B1")]
    );
    // acct-a sends with its one key set only; acct-b is no candidate.
    let a = &config.accounts["acct-a"];
    assert!((0..4).all(|l| a.pick_key(&BTreeSet::new(), l) == Some("KEY_A1")));
    let route = &config.models["qwen3-max"];
    let first: Vec<_> = (config.candidates(&route.fallback[0]))
        .map(|c| c.account)
        .collect();
    assert_eq!(first, ["acct-a", "relay-1"]);
    // A model none of whose accounts has a key says which secrets to set.
    let mut none = Config::from_value(&base()).unwrap();
    let unset = none.leave_out_unset_keys(|k| k == "RELAY_KEY");
    let only_acct_a = &none.models["qwen3-max"].fallback[1];
    assert_eq!(none.candidates(only_acct_a).count(), 0);
    assert!(
        none.can_serve(&none.models["qwen3-max"]),
        "its relay step has a key"
    );
    let route = ModelRoute {
        fallback: vec![only_acct_a.clone()],
        ..none.models["qwen3-max"].clone()
    };
    assert_eq!(
        (none.can_serve(&route), none.no_key_set(&route, &unset).as_str()),
        (false, "No account that can serve this model has a key: set KEY_A1 (accounts.acct-a.keys), KEY_A2 (accounts.acct-a.keys) (`wrangler secret put <NAME>`).")
    );
    // Every secret set: nothing changes.
    let mut all = Config::from_value(&base()).unwrap();
    assert!(all.leave_out_unset_keys(|_| true).is_empty());
    assert_eq!(all, Config::from_value(&base()).unwrap());
}

#[test]
fn keys_take_turns_and_bad_ones_are_skipped() {
    let config = Config::from_value(&base()).unwrap();
    let a = &config.accounts["acct-a"];
    let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    let turns: Vec<_> = (0..4).map(|l| a.pick_key(&set(&[]), l)).collect();
    assert_eq!(
        turns,
        [
            Some("KEY_A1"),
            Some("KEY_A2"),
            Some("KEY_A1"),
            Some("KEY_A2")
        ]
    );
    let bad = set(&["KEY_A1"]);
    assert!((0..4).all(|l| a.pick_key(&bad, l) == Some("KEY_A2")));
    assert_eq!(a.pick_key(&set(&["KEY_A1", "KEY_A2"]), 0), None);
    assert_eq!(
        a.pick_key(&set(&[]), u64::MAX),
        Some("KEY_A2"),
        "no overflow"
    );
}

#[test]
fn slow_start_defaults_by_profile_and_can_be_tuned_or_switched_off() {
    let config = Config::from_value(&base()).unwrap();
    assert_eq!(
        config.upstreams["sim"].slow_start(),
        Some(SlowStart::DASHSCOPE),
        "DashScope: on by default"
    );
    assert_eq!(config.upstreams["relay"].slow_start(), None, "others: off");
    let mut v = base();
    v["upstreams"]["sim"]["slow_start"] = json!(false);
    v["upstreams"]["relay"]["slow_start"] = json!({"floor": 0.5, "growth": 2.0});
    let config = Config::from_value(&v).unwrap();
    assert_eq!(config.upstreams["sim"].slow_start(), None);
    assert_eq!(
        config.upstreams["relay"].slow_start(),
        Some(SlowStart {
            floor: 0.5,
            growth: 2.0
        })
    );
}

#[test]
fn errors_name_the_field() {
    type Case = (fn(&mut Value), &'static str);
    let cases: Vec<Case> = vec![
        (
            |v| v["upstreams"]["sim"]["base_url"] = json!("ftp://x"),
            "upstreams.sim.base_url",
        ),
        (
            |v| v["upstreams"]["sim"]["base_url"] = json!("http://x/v1/"),
            "upstreams.sim.base_url",
        ),
        (
            |v| v["upstreams"]["sim"]["location_hint"] = json!("asia"),
            "upstreams.sim.location_hint: 'asia' is none of Cloudflare's: wnam, enam,",
        ),
        (
            |v| v["upstreams"]["sim"]["base_url"] = json!("http://x/v1/chat/completions"),
            "upstreams.sim.base_url: the API's root, without /chat/completions",
        ),
        (
            |v| v["upstreams"]["sim"]["profile"] = json!("azure"),
            "upstreams.sim.profile: unknown variant `azure`",
        ),
        (
            |v| v["upstreams"]["relay"]["weight"] = json!(0),
            "upstreams.relay.weight",
        ),
        (
            |v| v["accounts"]["acct-a"]["upstream"] = json!("nope"),
            "accounts.acct-a.upstream",
        ),
        (
            |v| v["accounts"]["acct-b"]["keys"] = json!([]),
            "accounts.acct-b.keys",
        ),
        (
            |v| v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpn"] = json!(1),
            "accounts.acct-b.limits.qwen3-max.rpn: unknown field `rpn`",
        ),
        (
            |v| v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpm"] = json!(-1),
            "accounts.acct-b.limits.qwen3-max.rpm: invalid value",
        ),
        (
            |v| v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpm"] = json!(0),
            "accounts.acct-b.limits.qwen3-max: a limit of 0",
        ),
        (
            |v| v["models"]["qwen3-max"]["fallback"] = json!([]),
            "models.qwen3-max.fallback",
        ),
        (
            |v| v["models"]["qwen3-max"]["fallback"] = json!(["qwen3-max", "qwen-turbo"]),
            "models.qwen3-max.fallback[1]: no allowed account lists 'qwen-turbo'",
        ),
        (
            |v| v["models"]["qwen3-max"]["fallback"][1]["accounts"] = json!(["acct-z"]),
            "models.qwen3-max.fallback[1].accounts: no account named 'acct-z'",
        ),
        (
            |v| v["models"]["qwen3-max"]["fallback"][1]["accounts"] = json!(["acct-b"]),
            "models.qwen3-max.fallback[1]: no allowed account",
        ),
        (
            |v| v["prices"]["qwen3-max"]["tiers"][1]["up_to"] = json!(1000),
            "prices.qwen3-max.tiers[1].up_to",
        ),
        (
            |v| {
                v["prices"]["qwen3-max"]["tiers"] =
                    json!([{"input": 1, "output": 1}, {"input": 1, "output": 1}])
            },
            "prices.qwen3-max.tiers[0].up_to",
        ),
        (
            |v| v["prices"]["qwen3-max"]["cache"] = json!({"hit": 0.2, "explicit_hit": -0.1}),
            "prices.qwen3-max.cache.explicit_hit: must be a share >= 0",
        ),
        (
            |v| v["prices"]["qwen3-max"]["cache"] = json!({"hit": 0.2, "read": 0.1}),
            "unknown field `read`",
        ),
        (|v| v["time_scale"] = json!(0.5), "time_scale"),
        (|v| v["colour"] = json!("blue"), "unknown field `colour`"),
        (
            |v| v["models"]["qwen3-max"]["deadline_ms"] = json!(u64::MAX),
            "models.qwen3-max.deadline_ms: 18446744073709551615 ms is more than a day",
        ),
        (
            |v| v["default_max_wait_ms"] = json!(90_000_000u64),
            "default_max_wait_ms",
        ),
        (|v| v["max_body_bytes"] = json!(0), "max_body_bytes"),
        (
            |v| v["upstreams"]["sim"]["slow_start"] = json!({"floor": 0, "growth": 1.5}),
            "upstreams.sim.slow_start: floor must be in (0, 1]",
        ),
        (
            |v| {
                let a = v["accounts"]["acct-a"].clone();
                v["accounts"]["acct:a"] = a;
            },
            "'acct:a': ids of upstreams and accounts",
        ),
        (
            |v| v["accounts"]["acct-b"]["limits"]["qwen 3\n"] = json!({}),
            "model 'qwen 3\\n': model names must be 1-256 visible ASCII",
        ),
        (
            |v| v["models"]["qwen-max\r\nx-evil: 1"] = json!({"fallback": ["qwen3-max"]}),
            "model names must be",
        ),
    ];
    for (mutate, expected) in cases {
        let mut v = base();
        mutate(&mut v);
        let err = Config::from_value(&v).unwrap_err();
        assert!(err.contains(expected), "{err} should mention {expected}");
    }
}

/// Every node of `v` as a JSON pointer, the root included.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                pointers(
                    child,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn a_parse_error_names_the_path_a_path_tracking_deserialiser_names() {
    // Every node of the config replaced by a value of each kind (or given a field no type has),
    // written compact (one line, as a `[vars]` table arrives) and pretty (as a JSON string var
    // may be): where the config is refused, the path read from the error's line and column is
    // serde_path_to_error's.
    let mutations: [fn(&mut Value); 8] = [
        |v| *v = json!("x"),
        |v| *v = json!(-1),
        |v| *v = json!(1.5),
        |v| *v = json!([]),
        |v| *v = json!({}),
        |v| *v = json!(true),
        |v| *v = json!(null),
        |v| match v {
            Value::Object(map) => drop(map.insert("zz_unknown".into(), json!(1))),
            Value::Array(items) => items.push(json!({"zz": 1})),
            other => *other = json!({"zz": [1, {"a": "b"}]}),
        },
    ];
    let mut nodes = Vec::new();
    pointers(&base(), "", &mut nodes);
    let mut compared = 0;
    for node in &nodes {
        for mutate in mutations {
            let mut v = base();
            mutate(v.pointer_mut(node).unwrap());
            for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
                let ours = serde_json::from_str::<Config>(&text).err();
                let mut de = serde_json::Deserializer::from_str(&text);
                let oracle = serde_path_to_error::deserialize::<_, Config>(&mut de).err();
                match (ours, oracle) {
                    (None, None) => {}
                    (Some(e), Some(o)) => {
                        let want = o.path().to_string();
                        let want = if want == "." { "" } else { want.as_str() };
                        let got = path::at(&text, e.line(), e.column());
                        // An enum written as `{"variant": ...}` with an unknown variant: we
                        // name the key too (the oracle stops at the enum).
                        let variant_key = e.to_string().starts_with("unknown variant")
                            && got.strip_prefix(want).is_some_and(|k| k.starts_with('.'));
                        assert!(
                            got == want || variant_key,
                            "{node} in {text}: {e}: {got} vs {want}"
                        );
                        compared += 1;
                    }
                    (ours, oracle) => panic!("{node}: {ours:?} vs {oracle:?}"),
                }
            }
        }
    }
    assert!(compared > 300, "only {compared} refused configs compared");
}

#[test]
fn a_parse_error_says_its_path_and_place() {
    let mut v = base();
    v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpm"] = json!("six");
    let err = Config::from_value(&Value::String(v.to_string())).unwrap_err();
    assert!(
        err.starts_with(
            "invalid GATEWAY config: accounts.acct-b.limits.qwen3-max.rpm: invalid type"
        ) && err.contains(" at line 1 column "),
        "{err}"
    );
    let err = Config::from_value(&Value::String("{\"upstreams\": {".into())).unwrap_err();
    assert!(
        err.starts_with("invalid GATEWAY config: upstreams: EOF"),
        "{err}"
    );
}

/// A key pasted where a secret's name belongs, or into a field of another kind, is refused
/// without being repeated: config errors reach every caller (and `GET /healthz`).
#[test]
fn a_key_in_the_config_is_refused_and_never_echoed() {
    let key = "sk-2f8a0c1d9e7b4a6f8c0d2e4f6a8b0c1d";
    type Case = (fn(&mut Value, &str), &'static str);
    let cases: [Case; 4] = [
        (
            |v, key| v["accounts"]["acct-a"]["keys"] = json!(["KEY_A1", key]),
            "accounts.acct-a.keys: holds an API key itself",
        ),
        (
            |v, key| v["accounts"]["acct-a"]["keys"] = json!(key),
            "accounts.acct-a.keys: invalid type: string \"[redacted]\"",
        ),
        (
            |v, key| v["accounts"]["acct-a"]["weight"] = json!(key),
            "accounts.acct-a.weight: invalid type: string \"[redacted]\"",
        ),
        (
            |v, key| v["clients"] = json!({"web": {"key_secret": key}}),
            "clients.web.key_secret: holds an API key itself",
        ),
    ];
    for (change, says) in cases {
        let mut v = base();
        change(&mut v, key);
        let err = Config::from_value(&Value::String(v.to_string())).unwrap_err();
        assert!(err.contains(says) && !err.contains("2f8a0c1d"), "{err}");
    }
}
