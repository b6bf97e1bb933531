//! JSON from bytes, read the one way the whole Worker reads JSON: checked as UTF-8, then
//! parsed from the `&str`. serde_json's parser is generic over its reader, so reading bytes
//! (`from_slice`) beside text (`from_str`, the config, the objects' calls and state) compiled
//! a second copy of it and of every type read both ways: 26 KB of wasm.

use serde::de::DeserializeOwned;

/// `bytes` as a `T`; the error says why not (bad UTF-8, or serde_json's message).
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::from_bytes;
    use serde_json::Value;

    #[test]
    fn reads_json_and_says_why_not() {
        assert_eq!(
            from_bytes::<Value>(br#"{"a":[1]}"#),
            Ok(serde_json::json!({"a": [1]}))
        );
        let bad_utf8 = from_bytes::<Value>(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(bad_utf8.contains("utf-8"), "{bad_utf8}");
        let bad_json = from_bytes::<Value>(b"{\"a\":").unwrap_err();
        assert!(bad_json.contains("line 1 column 5"), "{bad_json}");
    }
}
