use super::*;

const SECRET: &[u8] = b"test-signing-secret-0123456789";
const NOW: u64 = 1_800_000_000;
const RULES: Rules = Rules {
    max_lifetime_s: 3_600,
    skew_s: 30,
};

fn keys(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![secret.to_vec()]
}

fn claims(extra: &str) -> String {
    format!(
        r#"{{"iss":"web","sub":"user-1","iat":{NOW},"exp":{}{extra}}}"#,
        NOW + 600
    )
}

#[test]
fn a_valid_token_verifies_with_its_claims() {
    let token = sign(&claims(r#","rpm":5,"models":["qwen3-max"]"#), SECRET);
    assert!(looks_like_token(&token));
    assert_eq!(unverified_issuer(&token), Ok("web".to_string()));
    let c = verify(&token, &keys(SECRET), NOW, RULES).unwrap();
    assert_eq!(c.sub.as_deref(), Some("user-1"));
    assert_eq!(c.rpm, Some(5));
    assert_eq!(c.models, Some(vec!["qwen3-max".to_string()]));
}

#[test]
fn expiry_and_not_before_hold_with_the_skew() {
    let token = sign(&claims(""), SECRET);
    let exp = NOW + 600;
    assert!(verify(&token, &keys(SECRET), exp + 29, RULES).is_ok());
    assert_eq!(
        verify(&token, &keys(SECRET), exp + 30, RULES),
        Err(TokenError::Expired)
    );
    let later = sign(
        &format!(
            r#"{{"iss":"web","sub":"u","nbf":{},"exp":{}}}"#,
            NOW + 100,
            NOW + 200
        ),
        SECRET,
    );
    assert_eq!(
        verify(&later, &keys(SECRET), NOW, RULES),
        Err(TokenError::NotYetValid)
    );
    assert!(verify(&later, &keys(SECRET), NOW + 75, RULES).is_ok());
    let issued_later = sign(
        &format!(
            r#"{{"iss":"web","sub":"u","iat":{},"exp":{}}}"#,
            NOW + 100,
            NOW + 200
        ),
        SECRET,
    );
    assert_eq!(
        verify(&issued_later, &keys(SECRET), NOW, RULES),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn tampering_with_payload_or_signature_is_refused() {
    let token = sign(&claims(""), SECRET);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    // A payload granting more, with the old signature.
    parts[1] = URL_SAFE_NO_PAD.encode(claims(r#","rpm":100000"#));
    assert_eq!(
        verify(&parts.join("."), &keys(SECRET), NOW, RULES),
        Err(TokenError::Signature)
    );
    // One signature bit flipped.
    let mut sig = URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().unwrap())
        .unwrap();
    sig[0] ^= 1;
    let (head, _) = token.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        verify(&flipped, &keys(SECRET), NOW, RULES),
        Err(TokenError::Signature)
    );
    // Another secret.
    assert_eq!(
        verify(&token, &keys(b"other"), NOW, RULES),
        Err(TokenError::Signature)
    );
    // A truncated signature.
    let short = &token[..token.len() - 4];
    assert!(matches!(
        verify(short, &keys(SECRET), NOW, RULES),
        Err(TokenError::Signature | TokenError::Malformed)
    ));
}

#[test]
fn only_hs256_is_accepted_whatever_the_token_says() {
    for alg in ["none", "None", "RS256", "HS512", "HS384", "hs256", ""] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let token = sign_with_header(&header, &claims(""), SECRET);
        assert_eq!(
            verify(&token, &keys(SECRET), NOW, RULES),
            Err(TokenError::Algorithm(alg.to_string())),
            "{alg}"
        );
    }
    // `alg: none` with an empty signature part is malformed before anything else.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims(""))
    );
    assert_eq!(
        verify(&unsigned, &keys(SECRET), NOW, RULES),
        Err(TokenError::Malformed)
    );
    let no_alg = sign_with_header(r#"{"typ":"JWT"}"#, &claims(""), SECRET);
    assert_eq!(
        verify(&no_alg, &keys(SECRET), NOW, RULES),
        Err(TokenError::Malformed)
    );
}

#[test]
fn missing_claims_and_long_lives_are_refused() {
    let no_exp = sign(r#"{"iss":"web","sub":"u"}"#, SECRET);
    assert_eq!(
        verify(&no_exp, &keys(SECRET), NOW, RULES),
        Err(TokenError::NoExpiry)
    );
    let no_sub = sign(&format!(r#"{{"iss":"web","exp":{}}}"#, NOW + 60), SECRET);
    assert_eq!(
        verify(&no_sub, &keys(SECRET), NOW, RULES),
        Err(TokenError::NoSubject)
    );
    let no_iss = sign(&format!(r#"{{"sub":"u","exp":{}}}"#, NOW + 60), SECRET);
    assert_eq!(unverified_issuer(&no_iss), Err(TokenError::NoIssuer));
    let long = sign(
        &format!(
            r#"{{"iss":"web","sub":"u","iat":{NOW},"exp":{}}}"#,
            NOW + 3_601
        ),
        SECRET,
    );
    assert_eq!(
        verify(&long, &keys(SECRET), NOW, RULES),
        Err(TokenError::TooLong { max_s: 3_600 })
    );
    // Without iat or nbf the lifetime counts from now.
    let far = sign(
        &format!(r#"{{"iss":"web","sub":"u","exp":{}}}"#, NOW + 7_200),
        SECRET,
    );
    assert_eq!(
        verify(&far, &keys(SECRET), NOW, RULES),
        Err(TokenError::TooLong { max_s: 3_600 })
    );
}

#[test]
fn garbage_is_malformed_and_messages_carry_no_secret() {
    for junk in ["", "a.b", "a.b.c.d", "eyJ.eyJ.x", "!!.??.**", "a..c"] {
        assert!(verify(junk, &keys(SECRET), NOW, RULES).is_err(), "{junk}");
    }
    for e in [
        TokenError::Malformed,
        TokenError::Algorithm("RS256<script>".into()),
        TokenError::Signature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::TooLong { max_s: 1 },
    ] {
        let m = e.message();
        assert!(
            !m.contains("test-signing-secret") && !m.contains('<'),
            "{m}"
        );
    }
}

#[test]
fn a_token_signed_with_any_listed_secret_verifies_and_no_other() {
    let (new, old) = (b"new-signing-secret".to_vec(), SECRET.to_vec());
    let listed = [new.clone(), old.clone()];
    for secret in [&new, &old] {
        let token = sign(&claims(""), secret);
        assert!(verify(&token, &listed, NOW, RULES).is_ok());
    }
    let stranger = sign(&claims(""), b"a-third-secret");
    assert_eq!(
        verify(&stranger, &listed, NOW, RULES),
        Err(TokenError::Signature)
    );
    // Signed by the old one and expired: its own check fails, not the signature's.
    let expired = sign(&claims("").replace(&format!("{}", NOW + 600), "1"), &old);
    assert_eq!(
        verify(&expired, &listed, NOW, RULES),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verify(&stranger, &[], NOW, RULES),
        Err(TokenError::Signature)
    );
}
