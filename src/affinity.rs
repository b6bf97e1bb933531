//! A response stored upstream (the Responses API) lives under the account that made it, so
//! the ids the gateway hands out carry that account's tag, and a follow-up naming one
//! (`previous_response_id`) goes back to that account with the upstream's own id.
//!
//! Promise: `untag(&tagged(id, account))` gives back `id` and `tag(account)` for every id;
//! an id the gateway did not tag is never taken for a tagged one unless it ends like one.

use sha2::{Digest, Sha256};

/// Between an upstream's id and the account's tag: `resp_abc` is handed out as
/// `resp_abc.gw0f3a9c21`.
const MARK: &str = ".gw";
/// Hex digits of an account's tag: its SHA-256's first four bytes (account ids are the
/// operator's names: not shown to clients as they are).
const TAG_HEX: usize = 8;

/// The tag of `account`.
pub fn tag(account: &str) -> String {
    Sha256::digest(account.as_bytes())
        .iter()
        .take(TAG_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id the client sees for the upstream's `id`, made by `account`.
pub fn tagged(id: &str, account: &str) -> String {
    format!("{id}{MARK}{}", tag(account))
}

/// An id the gateway handed out: the upstream's id and the account's tag.
pub fn untag(id: &str) -> Option<(&str, &str)> {
    let (upstream, tag) = id.rsplit_once(MARK)?;
    let hex = tag.len() == TAG_HEX && tag.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !upstream.is_empty()).then_some((upstream, tag))
}

/// Of `accounts`, the one that stored the response tagged `stored_at`, if any.
pub fn stored_by<'a>(
    stored_at: &str,
    mut accounts: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    accounts.find(|a| tag(a) == stored_at)
}

/// The id of a Responses API answer (`{"id", "object": "response", ...}`) or stream event
/// (`{"type", "response": {"id", ...}}`).
pub fn response_id(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = crate::json::from_bytes(json).ok()?;
    let response = value.get("response").unwrap_or(&value);
    Some(response.get("id")?.as_str()?.to_string())
}

/// `raw` with every quoted `"id"` written as its tagged form (`Retag`), for one answer.
pub fn retag(raw: &[u8], id: &str, account: &str) -> Option<Vec<u8>> {
    Retag::new(id, account)?.apply(raw)
}

/// Writes one response's id as handed out, in as many answers or events as it appears in:
/// the tag is computed once.
#[derive(Debug, Clone)]
pub struct Retag {
    /// `"id"`, as the upstream wrote it.
    quoted: String,
    /// `"id.gw<tag>"`.
    tagged: String,
}

impl Retag {
    /// None when `id` is empty or would need escaping in JSON (no upstream's id does).
    pub fn new(id: &str, account: &str) -> Option<Retag> {
        let plain = !id.is_empty() && id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        plain.then(|| Retag {
            quoted: format!("\"{id}\""),
            tagged: format!("\"{}\"", tagged(id, account)),
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

    #[test]
    fn tags_are_short_stable_and_apart() {
        assert_eq!(tag("acct-a"), tag("acct-a"));
        assert_ne!(tag("acct-a"), tag("acct-b"));
        assert_eq!(tag("acct-a").len(), TAG_HEX);
        let id = tagged("resp_68a1", "acct-a");
        assert!(id.starts_with("resp_68a1.gw"));
        assert!(
            !id.contains("acct"),
            "the account's name is not shown: {id}"
        );
    }

    #[test]
    fn reads_only_ids_it_made() {
        for plain in [
            "resp_68a1",
            "resp_1.gw",
            "resp_1.gw12345",
            "resp_1.gw0f3a9c2z",
            ".gw0f3a9c21",
            "",
        ] {
            assert_eq!(untag(plain), None, "{plain}");
        }
        let t = tag("acct-a");
        assert_eq!(
            untag(&tagged("a.gw.b", "acct-a")),
            Some(("a.gw.b", t.as_str()))
        );
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
        let out = retag(raw, "resp_1", "acct-a").unwrap();
        let want = format!(
            r#"{{"id":"{0}","previous_response_id":"resp_0","output":[{{"id":"msg_1"}}],"text":"{0}"}}"#,
            tagged("resp_1", "acct-a")
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // Pretty-printed, with the id twice.
        let raw = b"data: {\"response\": {\"id\": \"r\"}, \"again\": \"r\"}\n\n";
        let out = String::from_utf8(retag(raw, "r", "x").unwrap()).unwrap();
        assert_eq!(out.matches(&tagged("r", "x")).count(), 2, "{out}");
        assert_eq!(retag(raw, "resp_9", "x"), None);
        assert_eq!(retag(raw, "", "x"), None);
        assert_eq!(retag(br#"{"id":"a\"b"}"#, "a\"b", "x"), None);
    }

    proptest! {
        #[test]
        fn untag_inverts_tagged(id in "[ -~]{1,40}", account in "[a-z0-9._-]{1,20}") {
            let (t, handed_out) = (tag(&account), tagged(&id, &account));
            prop_assert_eq!(untag(&handed_out), Some((id.as_str(), t.as_str())));
        }

        #[test]
        fn retag_keeps_the_rest_byte_for_byte(
            parts in prop::collection::vec("[a-z {}:,]{0,12}", 1..6),
            id in "resp_[a-z0-9]{1,12}",
        ) {
            let quoted = format!("\"{id}\"");
            let raw = parts.join(&quoted);
            let out = retag(raw.as_bytes(), &id, "acct");
            let want = parts.join(&format!("\"{}\"", tagged(&id, "acct")));
            match out {
                Some(out) => prop_assert_eq!(String::from_utf8(out).unwrap(), want),
                None => prop_assert_eq!(parts.len(), 1),
            }
        }
    }
}
