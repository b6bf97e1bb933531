//! Hides API keys in text the gateway shows: an upstream's error message, a config error.

/// Replaces every key-like token with `[redacted]`: `sk-` followed by key characters, at a word
/// start, or anywhere when they hold a digit or are long (a key glued to a word still leaks);
/// words like "task-force" stay. Words are ASCII (letters, digits, `-`, `_`): after any other
/// character, `sk-` starts a token (the Unicode tables of `char::is_alphanumeric` cost the
/// bundle over 1 KB gzip, and redacting more is the safe side).
pub fn keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("sk-") {
        out.push_str(before);
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
            .unwrap_or(after.len());
        let word_start = !out
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        let run = after.get(..len).unwrap_or("");
        let key_like = run.len() >= 16 || run.contains(|c: char| c.is_ascii_digit());
        if len > 0 && (word_start || key_like) {
            out.push_str("[redacted]");
            rest = after.get(len..).unwrap_or("");
        } else {
            out.push_str("sk-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether `text` holds something [`keys`] would hide.
pub fn has_key(text: &str) -> bool {
    keys(text) != text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_like_tokens_are_hidden_and_words_stay() {
        assert_eq!(keys("密钥sk-abc, ésk-x"), "密钥[redacted], é[redacted]");
        assert_eq!(
            keys("key sk-2f8a0c1d, task-force, desk-top, sk- alone"),
            "key [redacted], task-force, desk-top, sk- alone"
        );
        assert!(has_key("sk-1234") && !has_key("DASHSCOPE_KEY_A"));
    }
}
