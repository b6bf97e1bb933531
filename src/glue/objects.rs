//! The gateway's Durable Objects from both sides: a call in time, and the one stored row.

use crate::glue::log;
use crate::protocol;
use futures_util::future::{select, Either};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::time::Duration;
use worker::js_sys;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{DurableObject, DurableObjectNamespace};
use worker::{Delay, Env, Result, SqlStorage, SqlStorageValue, State};

/// Where a call goes: the namespace binding, the object's name and its placement hint.
pub struct Object<'a> {
    /// The binding (`BUCKET`, `METER`).
    pub binding: &'a str,
    /// The object's name within it.
    pub name: &'a str,
    /// Placement hint for a new object.
    pub location_hint: Option<&'a str>,
}

/// Sends `call` and waits at most `timeout_ms` for the reply; `Err` says what failed, for
/// the log.
pub async fn call<C: Serialize, R: DeserializeOwned>(
    env: &Env,
    to: Object<'_>,
    call: &C,
    timeout_ms: u64,
) -> std::result::Result<R, String> {
    let exchange = async {
        // By RPC (src/index.js): a call through the stub's `fetch` costs a Request, a Response
        // and a body read on each side.
        let body =
            serde_json::to_string(call).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let stub: Rpc = stub(env, &to)?.unchecked_into();
        let reply = JsFuture::from(stub.call(&body)?).await?;
        let reply = reply
            .as_string()
            .ok_or_else(|| worker::Error::RustError("the reply is not text".into()))?;
        serde_json::from_str(&reply).map_err(|e| worker::Error::RustError(e.to_string()))
    };
    let timer = Delay::from(Duration::from_millis(timeout_ms.max(1)));
    futures_util::pin_mut!(exchange);
    match select(exchange, timer).await {
        Either::Left((Ok(reply), _)) => Ok(reply),
        Either::Left((Err(e), _)) => Err(e.to_string()),
        Either::Right(_) => Err("timed out".to_string()),
    }
}

#[wasm_bindgen]
extern "C" {
    /// An object's stub, as src/index.js's classes answer it: `call(text)`, the reply's text.
    type Rpc;
    #[wasm_bindgen(method, catch)]
    fn call(this: &Rpc, text: &str) -> std::result::Result<js_sys::Promise, JsValue>;
}

/// A call through an object's `fetch` (an isolate of a previous deployment during a rollout):
/// its body applied by `handle`, the reply's text answered.
pub async fn answer_fetch(
    mut req: worker::Request,
    handle: impl FnOnce(&str) -> Result<String>,
) -> Result<worker::Response> {
    let text = req.text().await?;
    worker::Response::ok(handle(&text)?)
}

/// The error of a call by RPC, thrown to the caller.
pub fn thrown(e: worker::Error) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The stub of the object `to` names (`getByName`, with its placement hint).
fn stub(env: &Env, to: &Object<'_>) -> worker::Result<DurableObject> {
    let namespace = js_sys::Reflect::get(env, &JsValue::from_str(to.binding))?;
    if namespace.is_undefined() {
        return Err(format!("binding {} is not set", to.binding).into());
    }
    let namespace: DurableObjectNamespace = namespace.unchecked_into();
    let stub = match to.location_hint {
        None => namespace.get_by_name(to.name)?,
        Some(hint) => {
            let options = js_sys::Object::new();
            js_sys::Reflect::set(&options, &"locationHint".into(), &hint.into())?;
            namespace.get_by_name_with_options(to.name, &options)?
        }
    };
    Ok(stub)
}

/// An object's state as one JSON row in its SQLite storage, written only when it changed.
/// A failed write is logged and tried again on the next change; memory stays authoritative.
pub struct Row {
    sql: SqlStorage,
    /// The table (`bucket`, `meter`): one row, id 1.
    table: &'static str,
    /// The JSON last written (or read).
    last: RefCell<String>,
}

impl Row {
    /// Opens the object's row (the table is created on first use).
    pub fn open(state: &State, table: &'static str) -> Row {
        let sql = state.storage().sql();
        // A failure here surfaces on the first load, as an error rather than a panic.
        let _ = sql.exec(
            &format!("CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL)"),
            None,
        );
        Row {
            sql,
            table,
            last: RefCell::new(String::new()),
        }
    }

    /// The stored JSON ("" when none).
    pub fn load(&self) -> Result<String> {
        let query = format!("SELECT state FROM {} WHERE id = 1", self.table);
        // The row read as its values: `to_array` would read it through a serde deserialiser of
        // JS values, a second one in the bundle.
        let stored = match self.sql.exec(&query, None)?.raw().next() {
            Some(row) => match row?.into_iter().next() {
                Some(SqlStorageValue::String(state)) => state,
                _ => return Err("the stored state is not text".into()),
            },
            None => String::new(),
        };
        *self.last.borrow_mut() = stored.clone();
        Ok(stored)
    }

    /// Writes `state` if its JSON differs from what was last written; `name` is for the log.
    pub fn save<T: Serialize>(&self, state: &T, name: &str) {
        let Some(json) = protocol::changed(state, &self.last.borrow()) else {
            return;
        };
        let written = self.sql.exec(
            &format!("INSERT INTO {}(id, state) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state", self.table),
            vec![json.as_str().into()],
        );
        match written {
            Ok(_) => *self.last.borrow_mut() = json,
            Err(e) => log::warn(
                &format!("{}_write_failed", self.table),
                "",
                serde_json::json!({"object": name, "error": e.to_string()}),
            ),
        }
    }
}
