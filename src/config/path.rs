//! Names where in the config text a parse error is: the JSON path (`models.qwen3-max.fallback[1]`)
//! of the value at the error's line and column, so the Worker needs no path-tracking
//! deserialiser (`serde_path_to_error`, checked against it in the tests).

/// One open container while scanning: an object's current key, or an array's current index.
enum Frame {
    Object {
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
        started: bool,
    },
}

/// The path of the value being read at `line` and `column` (1-based, as serde_json counts them:
/// bytes from the line's start) of `text`; empty at the top level.
pub fn at(text: &str, line: usize, column: usize) -> String {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    path_before(text, line_start.saturating_add(column))
}

/// The path of the value being read once the scan has passed byte `end`. A string that starts
/// before `end` is read whole: a key is named even when the error points into it.
fn path_before(text: &str, end: usize) -> String {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end.min(bytes.len()) {
        let Some(&byte) = bytes.get(i) else { break };
        match byte {
            b'{' => {
                start_value(&mut stack);
                stack.push(Frame::Object {
                    key: None,
                    expect_key: true,
                });
            }
            b'[' => {
                start_value(&mut stack);
                stack.push(Frame::Array {
                    index: 0,
                    started: false,
                });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, expect_key }) => {
                    *key = None;
                    *expect_key = true;
                }
                Some(Frame::Array { index, .. }) => *index += 1,
                None => {}
            },
            b'"' => {
                let close = string_end(bytes, i);
                match stack.last_mut() {
                    Some(Frame::Object {
                        key,
                        expect_key: true,
                    }) => {
                        let raw = text.get(i..close).unwrap_or_default();
                        *key = serde_json::from_str::<String>(raw).ok();
                    }
                    _ => start_value(&mut stack),
                }
                i = close;
                continue;
            }
            b if b.is_ascii_whitespace() => {}
            // A number or a literal.
            _ => start_value(&mut stack),
        }
        i += 1;
    }
    // serde_json points at the last byte it consumed: a value it refused on sight (peeked, not
    // consumed) starts at the next byte that is not blank.
    let rest = bytes.get(i..).unwrap_or_default();
    if let Some(b) = rest.iter().find(|b| !b.is_ascii_whitespace()) {
        if !matches!(b, b',' | b'}' | b']' | b':') {
            start_value(&mut stack);
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Array {
                index,
                started: true,
            } => path.push_str(&format!("[{index}]")),
            _ => {}
        }
    }
    path
}

/// A value begins in the innermost container: an array now has a current element.
fn start_value(stack: &mut [Frame]) {
    if let Some(Frame::Array { started, .. }) = stack.last_mut() {
        *started = true;
    }
}

/// The index just past the closing quote of the string opening at `open` (or the text's end).
fn string_end(bytes: &[u8], open: usize) -> usize {
    let mut j = open.saturating_add(1);
    while let Some(&b) = bytes.get(j) {
        match b {
            b'\\' => j = j.saturating_add(2),
            b'"' => return j.saturating_add(1),
            _ => j += 1,
        }
    }
    bytes.len()
}
