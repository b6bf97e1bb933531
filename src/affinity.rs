//! A response stored upstream (the Responses API) lives under the account that made it, so
//! the ids the gateway hands out carry that account's tag, and a follow-up naming one
//! (`previous_response_id`) goes back to that account with the upstream's own id. A response
//! a user token's holder stored also carries that user's seal, so no other user of the
//! gateway can retrieve it, delete it or continue it, even knowing its id.
//!
//! Promise: `untag(&tagged(id, account, owner))` gives back `id`, `tag(account)` and the
//! owner's seal for every id; an id the gateway did not tag is never taken for a tagged one
//! unless it ends like one; a sealed id `belongs` to its owner only.

use crate::openai::ApiError;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Between an upstream's id and the account's tag: `resp_abc` is handed out as
/// `resp_abc.gw0f3a9c21` (and to a user as `resp_abc.gw0f3a9c21u<seal>`).
const MARK: &str = ".gw";
/// Hex digits of an account's tag: its SHA-256's first four bytes (account ids are the
/// operator's names: not shown to clients as they are).
const TAG_HEX: usize = 8;
/// Between the account's tag and a user's seal.
const SEAL_MARK: char = 'u';
/// Hex digits of a user's seal: 64 bits of an HMAC-SHA256, which nobody without the
/// client's signing secret can make for another user.
const SEAL_HEX: usize = 16;

/// The caller a stored response belongs to when a user token made it: the token's user and
/// its client's signing secrets (the first seals; a seal by any is the user's, so a response
/// sealed before the secret was replaced stays its user's while the old one is listed). A
/// client key's holder is the app's own server, trusted with every response the app's users
/// stored (as any key of an OpenAI project is): it has no owner, and reaches any id the
/// gateway handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The token's user (`sub`).
    pub user: String,
    /// The client's signing secrets.
    pub secrets: Vec<Vec<u8>>,
}

impl Owner {
    /// The seal of the response `upstream_id` for this user, under its first secret.
    fn seal(&self, upstream_id: &str) -> String {
        self.secrets
            .first()
            .map_or_else(String::new, |secret| self.seal_with(secret, upstream_id))
    }

    fn seal_with(&self, secret: &[u8], upstream_id: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return String::new();
        };
        mac.update(self.user.as_bytes());
        mac.update(&[0]);
        mac.update(upstream_id.as_bytes());
        hex(&mac.finalize().into_bytes(), SEAL_HEX)
    }
}

/// An id the gateway handed out, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tagged<'a> {
    /// The upstream's own id.
    pub upstream_id: &'a str,
    /// The tag of the account that stored it.
    pub account_tag: &'a str,
    /// The seal of the user it belongs to, if a user token made it.
    pub seal: Option<&'a str>,
}

impl Tagged<'_> {
    /// Whether `caller` may use it: a client key always; a user token only its own.
    pub fn belongs(&self, caller: Option<&Owner>) -> bool {
        match (caller, self.seal) {
            (None, _) => true,
            (Some(owner), Some(seal)) => owner.secrets.iter().fold(false, |found, secret| {
                let made = owner.seal_with(secret, self.upstream_id);
                found | bool::from(made.as_bytes().ct_eq(seal.as_bytes()))
            }),
            (Some(_), None) => false,
        }
    }
}

fn hex(bytes: &[u8], digits: usize) -> String {
    bytes
        .iter()
        .take(digits / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tag of `account`.
pub fn tag(account: &str) -> String {
    hex(&Sha256::digest(account.as_bytes()), TAG_HEX)
}

/// The id the client sees for the upstream's `id`, made by `account` for `owner`.
pub fn tagged(id: &str, account: &str, owner: Option<&Owner>) -> String {
    match owner {
        Some(owner) => format!("{id}{MARK}{}{SEAL_MARK}{}", tag(account), owner.seal(id)),
        None => format!("{id}{MARK}{}", tag(account)),
    }
}

/// An id the gateway handed out: the upstream's id, the account's tag, a user's seal.
pub fn untag(id: &str) -> Option<Tagged<'_>> {
    let (upstream_id, tags) = id.rsplit_once(MARK)?;
    let (account_tag, seal) = match tags.split_once(SEAL_MARK) {
        Some((account_tag, seal)) => (account_tag, Some(seal)),
        None => (tags, None),
    };
    let hex = |s: &str, digits| s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ours = hex(account_tag, TAG_HEX) && seal.is_none_or(|s| hex(s, SEAL_HEX));
    (ours && !upstream_id.is_empty()).then_some(Tagged {
        upstream_id,
        account_tag,
        seal,
    })
}

/// Of `accounts`, the one that stored the response tagged `stored_at`, if any.
pub fn stored_by<'a>(
    stored_at: &str,
    mut accounts: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    accounts.find(|a| tag(a) == stored_at)
}

/// The account tag a follow-up naming `previous` (its `previous_response_id`) must go to, for
/// `caller`; an error as the upstream words it when the response is not the caller's: a
/// user's, or one the gateway did not hand out when a user token asks (an upstream's raw id
/// could be anybody's). None: no follow-up, or a client key's id the gateway did not tag
/// (it goes anywhere, and the upstream says whether it knows it).
pub fn follow_up<'a>(
    previous: Option<&'a str>,
    caller: Option<&Owner>,
) -> Result<Option<&'a str>, ApiError> {
    let Some(id) = previous else {
        return Ok(None);
    };
    match untag(id) {
        Some(t) if t.belongs(caller) => Ok(Some(t.account_tag)),
        None if caller.is_none() => Ok(None),
        _ => {
            let mut e = ApiError::new(
                400,
                "invalid_request_error",
                Some("previous_response_not_found"),
                format!("Previous response with id '{id}' not found."),
            );
            e.param = Some("previous_response_id".into());
            e.should_retry = Some(false);
            Err(e)
        }
    }
}

/// The id of a Responses API answer (`{"id", "object": "response", ...}`) or stream event
/// (`{"type", "response": {"id", ...}}`).
pub fn response_id(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = crate::json::from_bytes(json).ok()?;
    let response = value.get("response").unwrap_or(&value);
    Some(response.get("id")?.as_str()?.to_string())
}

/// `raw` with every quoted `"id"` written as its tagged form (`Retag`), for one answer.
pub fn retag(raw: &[u8], id: &str, account: &str, owner: Option<&Owner>) -> Option<Vec<u8>> {
    Retag::new(id, account, owner)?.apply(raw)
}

/// Writes one response's id as handed out, in as many answers or events as it appears in:
/// the tag is computed once.
#[derive(Debug, Clone)]
pub struct Retag {
    /// `"id"`, as the upstream wrote it.
    quoted: String,
    /// `"id.gw<tag>"` (with the owner's seal).
    tagged: String,
}

impl Retag {
    /// None when `id` is empty or would need escaping in JSON (no upstream's id does).
    pub fn new(id: &str, account: &str, owner: Option<&Owner>) -> Option<Retag> {
        Retag::named(id, &tagged(id, account, owner))
    }

    /// Writes `id` as `handed_out` (a caller's stored response back as it named it, already
    /// checked to be its own).
    pub fn named(id: &str, handed_out: &str) -> Option<Retag> {
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        (plain(id) && plain(handed_out)).then(|| Retag {
            quoted: format!("\"{id}\""),
            tagged: format!("\"{handed_out}\""),
        })
    }

    /// `raw` with every quoted id (a JSON string) tagged, the rest byte for byte; None when
    /// the id does not occur.
    pub fn apply(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let needle = self.quoted.as_bytes();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(at) = find(raw, needle, from) {
            out.extend_from_slice(raw.get(from..at)?);
            out.extend_from_slice(self.tagged.as_bytes());
            from = at + needle.len();
        }
        if from == 0 {
            return None;
        }
        out.extend_from_slice(raw.get(from..)?);
        Some(out)
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str) -> Owner {
        Owner {
            user: name.into(),
            secrets: vec![b"signing-secret".to_vec()],
        }
    }

    #[test]
    fn tags_are_short_stable_and_apart() {
        assert_eq!(tag("acct-a"), tag("acct-a"));
        assert_ne!(tag("acct-a"), tag("acct-b"));
        assert_eq!(tag("acct-a").len(), TAG_HEX);
        let id = tagged("resp_68a1", "acct-a", None);
        assert!(id.starts_with("resp_68a1.gw"));
        assert!(
            !id.contains("acct"),
            "the account's name is not shown: {id}"
        );
        let sealed = tagged("resp_68a1", "acct-a", Some(&user("alice")));
        assert!(sealed.starts_with(&format!("{id}u")), "{sealed}");
        assert!(!sealed.contains("alice"), "nor the user's: {sealed}");
        assert_ne!(sealed, tagged("resp_68a1", "acct-a", Some(&user("bob"))));
    }

    #[test]
    fn reads_only_ids_it_made() {
        for plain in [
            "resp_68a1",
            "resp_1.gw",
            "resp_1.gw12345",
            "resp_1.gw0f3a9c2z",
            "resp_1.gw0f3a9c21u",
            "resp_1.gw0f3a9c21u0123",
            "resp_1.gw0f3a9c21u0123456789abcdeg",
            ".gw0f3a9c21",
            "",
        ] {
            assert_eq!(untag(plain), None, "{plain}");
        }
        let t = tag("acct-a");
        let read = untag("a.gw.b.gw0f3a9c21").map(|t| (t.upstream_id, t.account_tag));
        assert_eq!(read, Some(("a.gw.b", "0f3a9c21")));
        let sealed = tagged("a", "acct-a", Some(&user("alice")));
        let read = untag(&sealed).unwrap();
        assert_eq!((read.upstream_id, read.account_tag), ("a", t.as_str()));
        assert_eq!(read.seal.map(str::len), Some(SEAL_HEX));
    }

    #[test]
    fn a_users_response_is_theirs_alone() {
        let (alice, bob) = (user("alice"), user("bob"));
        let sealed = tagged("resp_1", "acct-a", Some(&alice));
        let t = untag(&sealed).unwrap();
        assert!(t.belongs(Some(&alice)));
        assert!(!t.belongs(Some(&bob)));
        // Another client's secret cannot make alice's seal either.
        let other = Owner {
            secrets: vec![b"another".to_vec()],
            ..alice.clone()
        };
        assert!(!t.belongs(Some(&other)));
        // Once the client's secret is replaced (the new one first, the old still listed), the
        // response sealed before stays alice's, and new seals are the new secret's.
        let rotated = Owner {
            secrets: vec![b"another".to_vec(), b"signing-secret".to_vec()],
            ..alice.clone()
        };
        assert!(t.belongs(Some(&rotated)));
        let resealed = tagged("resp_1", "acct-a", Some(&rotated));
        let after = untag(&resealed).unwrap();
        assert!(after.belongs(Some(&other)) && !after.belongs(Some(&alice)));
        // A seal is for one response: moved onto another id it opens nothing.
        let moved = sealed.replace("resp_1", "resp_2");
        assert!(!untag(&moved).unwrap().belongs(Some(&alice)));
        // The app's server (a client key) reaches every response; a user no unsealed one.
        assert!(t.belongs(None));
        let unsealed = tagged("resp_1", "acct-a", None);
        assert!(untag(&unsealed).unwrap().belongs(None));
        assert!(!untag(&unsealed).unwrap().belongs(Some(&alice)));
    }

    #[test]
    fn a_follow_up_goes_to_its_account_if_it_is_the_callers() {
        let alice = user("alice");
        let t = tag("acct-b");
        let mine = tagged("resp_1", "acct-b", Some(&alice));
        assert_eq!(follow_up(None, Some(&alice)), Ok(None));
        assert_eq!(follow_up(Some(&mine), Some(&alice)), Ok(Some(t.as_str())));
        assert_eq!(follow_up(Some(&mine), None), Ok(Some(t.as_str())));
        // A client key's raw id goes anywhere (the upstream says if it knows it); a user's
        // never: it could be anybody's.
        assert_eq!(follow_up(Some("resp_raw"), None), Ok(None));
        for (id, caller) in [
            (mine.as_str(), user("bob")),
            ("resp_raw", user("alice")),
            (&tagged("resp_1", "acct-b", None), user("alice")),
        ] {
            let e = follow_up(Some(id), Some(&caller)).unwrap_err();
            let what = (e.status, e.code.as_deref(), e.param.as_deref());
            assert_eq!(
                what,
                (
                    400,
                    Some("previous_response_not_found"),
                    Some("previous_response_id")
                ),
                "{id}"
            );
        }
    }

    #[test]
    fn finds_the_account_and_the_id() {
        let accounts = ["acct-a", "acct-b"];
        let at = tag("acct-b");
        assert_eq!(stored_by(&at, accounts.into_iter()), Some("acct-b"));
        assert_eq!(stored_by(&tag("gone"), accounts.into_iter()), None);
        let body = br#"{"id":"resp_1","object":"response","output":[{"id":"msg_1"}]}"#;
        assert_eq!(response_id(body).as_deref(), Some("resp_1"));
        let event = br#"{"type":"response.created","response":{"id":"resp_2"}}"#;
        assert_eq!(response_id(event).as_deref(), Some("resp_2"));
        assert_eq!(
            response_id(br#"{"type":"response.output_text.delta"}"#),
            None
        );
        assert_eq!(response_id(b"not json"), None);
    }

    #[test]
    fn retags_each_quoted_occurrence_and_nothing_else() {
        let raw = br#"{"id":"resp_1","previous_response_id":"resp_0","output":[{"id":"msg_1"}],"text":"resp_1"}"#;
        let out = retag(raw, "resp_1", "acct-a", None).unwrap();
        let want = format!(
            r#"{{"id":"{0}","previous_response_id":"resp_0","output":[{{"id":"msg_1"}}],"text":"{0}"}}"#,
            tagged("resp_1", "acct-a", None)
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // Pretty-printed, with the id twice, for a user.
        let raw = b"data: {\"response\": {\"id\": \"r\"}, \"again\": \"r\"}\n\n";
        let alice = user("alice");
        let out = String::from_utf8(retag(raw, "r", "x", Some(&alice)).unwrap()).unwrap();
        let sealed = tagged("r", "x", Some(&alice));
        assert_eq!(out.matches(&sealed).count(), 2, "{out}");
        assert_eq!(retag(raw, "resp_9", "x", None), None);
        assert_eq!(retag(raw, "", "x", None), None);
        assert_eq!(retag(br#"{"id":"a\"b"}"#, "a\"b", "x", None), None);
    }

    proptest! {
        #[test]
        fn untag_inverts_tagged(
            id in "[ -~]{1,40}",
            account in "[a-z0-9._-]{1,20}",
            user in prop::option::of("[ -~]{1,20}"),
        ) {
            let owner = user.map(|user| Owner { user, secrets: vec![b"s".to_vec()] });
            let handed_out = tagged(&id, &account, owner.as_ref());
            let read = untag(&handed_out);
            let account_tag = tag(&account);
            let want = Some((id.as_str(), account_tag.as_str()));
            prop_assert_eq!(read.map(|t| (t.upstream_id, t.account_tag)), want);
            prop_assert_eq!(read.and_then(|t| t.seal).is_some(), owner.is_some());
            prop_assert!(read.is_some_and(|t| t.belongs(owner.as_ref())));
        }

        #[test]
        fn retag_keeps_the_rest_byte_for_byte(
            parts in prop::collection::vec("[a-z {}:,]{0,12}", 1..6),
            id in "resp_[a-z0-9]{1,12}",
        ) {
            let quoted = format!("\"{id}\"");
            let raw = parts.join(&quoted);
            let out = retag(raw.as_bytes(), &id, "acct", None);
            let want = parts.join(&format!("\"{}\"", tagged(&id, "acct", None)));
            match out {
                Some(out) => prop_assert_eq!(String::from_utf8(out).unwrap(), want),
                None => prop_assert_eq!(parts.len(), 1),
            }
        }
    }
}
