//! Signed short-lived user tokens: HS256 JWTs minted by an app's backend, verified here.
//!
//! The promise: a token is accepted only if its header says exactly `HS256` (never `none`,
//! never an algorithm the token picks), its signature is the HMAC-SHA256 of its first two
//! parts under the client's secret (compared in constant time), it names a subject and an
//! expiry, it is within its `nbf`/`exp` (give or take `skew_s`), and it lives no longer than
//! `max_lifetime_s` (from `iat`, else `nbf`, else now).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// How a client's tokens are checked (config `clients.<id>.user_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Longest a token may live.
    pub max_lifetime_s: u64,
    /// Clock difference tolerated on `exp`, `nbf` and `iat`.
    pub skew_s: u64,
}

/// What a verified token says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The client whose secret signed it (its id).
    #[serde(default)]
    pub iss: Option<String>,
    /// The user.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Public model names the user may call (narrows the client's).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// The user's requests per minute (narrows the client's).
    #[serde(default)]
    pub rpm: Option<u64>,
    /// The user's tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// The user's tokens per UTC day.
    #[serde(default)]
    pub daily_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Why a token was refused: each says which check failed, and nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts holding JSON.
    Malformed,
    /// The header's `alg` is not exactly HS256.
    Algorithm(String),
    /// No `iss` naming the client.
    NoIssuer,
    /// The signature does not match.
    Signature,
    /// No `sub`.
    NoSubject,
    /// No `exp`.
    NoExpiry,
    /// Past `exp`.
    Expired,
    /// Before `nbf` (or issued in the future).
    NotYetValid,
    /// Lives longer than the client allows.
    TooLong {
        /// The client's maximum, seconds.
        max_s: u64,
    },
}

impl TokenError {
    /// The message a client sees.
    pub fn message(&self) -> String {
        match self {
            TokenError::Malformed => "The user token is malformed: expected a JWT (three base64url parts).".into(),
            TokenError::Algorithm(alg) => {
                let alg: String = alg.chars().filter(char::is_ascii_alphanumeric).take(16).collect();
                format!("The user token's alg is '{alg}'; only HS256 is accepted.")
            }
            TokenError::NoIssuer => "The user token has no `iss` naming its client.".into(),
            TokenError::Signature => "The user token's signature does not match (tampered, or signed with another secret).".into(),
            TokenError::NoSubject => "The user token has no `sub`.".into(),
            TokenError::NoExpiry => "The user token has no `exp`.".into(),
            TokenError::Expired => "The user token has expired.".into(),
            TokenError::NotYetValid => "The user token is not valid yet (`nbf` or `iat` in the future).".into(),
            TokenError::TooLong { max_s } => {
                format!("The user token lives longer than its client allows ({max_s} s).")
            }
        }
    }
}

/// True when `bearer` has a JWT's shape (three parts), so it is checked as a token, not a key.
pub fn looks_like_token(bearer: &str) -> bool {
    bearer.split('.').count() == 3 && bearer.starts_with("eyJ")
}

/// The token's claims before any check, only to learn which client's secret to verify with.
pub fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let (_, payload, _) = parts(token)?;
    let claims: Claims = decode_json(payload)?;
    claims.iss.ok_or(TokenError::NoIssuer)
}

/// Verifies `token`, signed under any of `secrets` (a client's new signing secret beside its
/// old one), at `now_s` (seconds since the epoch).
pub fn verify(
    token: &str,
    secrets: &[Vec<u8>],
    now_s: u64,
    rules: Rules,
) -> Result<Claims, TokenError> {
    let (header, payload, signature) = parts(token)?;
    let header: Header = decode_json(header)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signed = token.len().saturating_sub(signature_len(token));
    let signed = token
        .as_bytes()
        .get(..signed)
        .ok_or(TokenError::Malformed)?;
    let signed_by = |secret: &Vec<u8>| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(signed);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).is_ok()
    };
    if !secrets.iter().any(signed_by) {
        return Err(TokenError::Signature);
    }
    let claims: Claims = decode_json(payload)?;
    if claims.sub.as_deref().is_none_or(str::is_empty) {
        return Err(TokenError::NoSubject);
    }
    let exp = claims.exp.ok_or(TokenError::NoExpiry)?;
    if now_s >= exp.saturating_add(rules.skew_s) {
        return Err(TokenError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now_s.saturating_add(rules.skew_s));
    if future(claims.nbf) || future(claims.iat) {
        return Err(TokenError::NotYetValid);
    }
    let start = claims.iat.or(claims.nbf).unwrap_or(now_s);
    if exp.saturating_sub(start) > rules.max_lifetime_s {
        return Err(TokenError::TooLong {
            max_s: rules.max_lifetime_s,
        });
    }
    Ok(claims)
}

/// The three dot-separated parts.
fn parts(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty() => {
            Ok((h, p, s))
        }
        _ => Err(TokenError::Malformed),
    }
}

/// Length of the signature part and its dot.
fn signature_len(token: &str) -> usize {
    token.rsplit('.').next().map_or(0, |s| s.len() + 1)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    crate::json::from_bytes(&bytes).map_err(|_| TokenError::Malformed)
}

/// Signs `claims` (JSON text) as an HS256 token: what an app's backend does (tests, the demo).
pub fn sign(claims_json: &str, secret: &[u8]) -> String {
    sign_with_header(r#"{"alg":"HS256","typ":"JWT"}"#, claims_json, secret)
}

/// Signs with any header (tests forge `alg: none` and friends with it).
pub fn sign_with_header(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let signature = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
