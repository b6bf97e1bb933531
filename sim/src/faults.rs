//! Faults queued on demand: their JSON form, matching against a request, and use counts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shape of a mid-stream error frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorShape {
    /// `data: {"error":{...}}` (compatible mode).
    #[default]
    Compat,
    /// `id:1\nevent:error\n:HTTP_STATUS/429\ndata:{...}` (native API).
    Native,
}

/// What a fault does to the request it catches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this status; `body` replaces the default body verbatim.
    Status {
        /// HTTP status, 200..=599.
        status: u16,
        /// Verbatim body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Wait `ms` real milliseconds, then serve normally (limits checked after).
    Delay {
        /// Real milliseconds.
        ms: u64,
    },
    /// Read the request, then close the connection without any answer.
    Reset,
    /// Streams only: 200, `after_chunks` content chunks, then an error frame.
    StreamError {
        /// Frame shape.
        #[serde(default)]
        shape: StreamErrorShape,
        /// Content chunks sent before the frame (0: the frame comes first).
        #[serde(default)]
        after_chunks: u32,
        /// Compat frame `code` (and `type`) override.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Compat frame `message` override.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Streams only: 200, `after_chunks` content chunks, then an aborted body.
    StreamCut {
        /// Content chunks sent before the cut.
        #[serde(default)]
        after_chunks: u32,
    },
    /// Wait `ms` real milliseconds before the first event (or the whole answer).
    SlowFirstToken {
        /// Real milliseconds.
        ms: u64,
    },
    /// Streams only: wait `ms` real milliseconds between events (a long, slow answer).
    SlowStream {
        /// Real milliseconds between events.
        ms: u64,
    },
}

impl FaultKind {
    /// Faults that only make sense for `stream: true` requests.
    fn stream_only(&self) -> bool {
        matches!(
            self,
            FaultKind::StreamError { .. }
                | FaultKind::StreamCut { .. }
                | FaultKind::SlowStream { .. }
        )
    }

    /// Faults that replace the answer (and so occupy no window and count as `fault`).
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            FaultKind::Delay { .. }
                | FaultKind::SlowFirstToken { .. }
                | FaultKind::SlowStream { .. }
        )
    }
}

/// A queued fault with its matchers and remaining uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// Only requests to this account, if set.
    pub account: Option<String>,
    /// Only requests with this key, if set.
    pub key: Option<String>,
    /// Only requests for this model, if set.
    pub model: Option<String>,
    /// Uses left; `None` means until cleared.
    pub remaining: Option<u32>,
}

/// The request facts a fault matches on.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Account of the key.
    pub account: &'a str,
    /// The key.
    pub key: &'a str,
    /// Requested model.
    pub model: &'a str,
    /// Whether it asked for a stream.
    pub stream: bool,
}

impl Fault {
    /// Parses `{"kind":..., "account"?, "key"?, "model"?, "times"?}`.
    pub fn from_json(v: &Value) -> Result<Fault, String> {
        let kind: FaultKind =
            serde_json::from_value(v.clone()).map_err(|e| format!("invalid fault: {e}"))?;
        if let FaultKind::Status { status, .. } = kind {
            if !(200..=599).contains(&status) {
                return Err(format!("invalid fault: status {status} is not 200..=599"));
            }
        }
        let matcher = |name: &str| match &v[name] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(format!("invalid fault: `{name}` must be a string")),
        };
        let remaining = match &v["times"] {
            Value::Null => Some(1),
            t => match t.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(0) => None,
                Some(n) => Some(n),
                None => return Err("invalid fault: `times` must be a count".into()),
            },
        };
        Ok(Fault {
            kind,
            account: matcher("account")?,
            key: matcher("key")?,
            model: matcher("model")?,
            remaining,
        })
    }

    /// Parses one fault object or an array of them.
    pub fn list_from_json(v: &Value) -> Result<Vec<Fault>, String> {
        match v {
            Value::Array(items) => items.iter().map(Fault::from_json).collect(),
            one => Ok(vec![Fault::from_json(one)?]),
        }
    }

    fn matches(&self, t: &Target<'_>) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.account, t.account)
            && ok(&self.key, t.key)
            && ok(&self.model, t.model)
            && (t.stream || !self.kind.stream_only())
    }

    /// JSON form for listing: the kind's fields plus matchers and `times`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.kind).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("account".into(), self.account.clone().into());
            map.insert("key".into(), self.key.clone().into());
            map.insert("model".into(), self.model.clone().into());
            map.insert("times".into(), self.remaining.unwrap_or(0).into());
        }
        v
    }
}

/// Faults in the order they were queued; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct FaultQueue {
    faults: Vec<Fault>,
}

impl FaultQueue {
    /// Appends faults.
    pub fn push(&mut self, faults: Vec<Fault>) {
        self.faults.extend(faults);
    }

    /// Removes every fault.
    pub fn clear(&mut self) {
        self.faults.clear();
    }

    /// Uses up one application of the first fault matching `target`.
    pub fn take(&mut self, target: &Target<'_>) -> Option<FaultKind> {
        let i = self.faults.iter().position(|f| f.matches(target))?;
        let fault = &mut self.faults[i];
        let kind = fault.kind.clone();
        if let Some(left) = &mut fault.remaining {
            *left -= 1;
            if *left == 0 {
                self.faults.remove(i);
            }
        }
        Some(kind)
    }

    /// Queued faults as JSON.
    pub fn to_json(&self) -> Value {
        Value::Array(self.faults.iter().map(Fault::to_json).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(stream: bool) -> Target<'static> {
        Target {
            account: "acct-a",
            key: "sk-a1",
            model: "qwen3-max",
            stream,
        }
    }

    #[test]
    fn times_and_matchers() {
        let mut q = FaultQueue::default();
        let faults = Fault::list_from_json(&json!([
            {"kind":"status","status":500,"account":"acct-b"},
            {"kind":"stream_cut","after_chunks":2},
            {"kind":"delay","ms":5,"times":2},
            {"kind":"reset","times":0,"model":"qwen3-max"}
        ]))
        .unwrap();
        q.push(faults);
        assert_eq!(q.take(&target(false)), Some(FaultKind::Delay { ms: 5 }));
        assert_eq!(
            q.take(&target(true)),
            Some(FaultKind::StreamCut { after_chunks: 2 })
        );
        assert_eq!(q.take(&target(false)), Some(FaultKind::Delay { ms: 5 }));
        for _ in 0..3 {
            assert_eq!(q.take(&target(false)), Some(FaultKind::Reset));
        }
        assert_eq!(q.to_json().as_array().unwrap().len(), 2);
        q.clear();
        assert_eq!(q.take(&target(true)), None);
    }

    #[test]
    fn rejects_bad_faults() {
        for bad in [
            json!({"kind":"explode"}),
            json!({"kind":"status","status":99}),
            json!({"kind":"delay"}),
            json!({"kind":"reset","times":-1}),
            json!({"kind":"reset","key":5}),
        ] {
            assert!(Fault::from_json(&bad).is_err(), "{bad}");
        }
    }
}
