//! The bucket Durable Object: one per (account, model) quota budget, persisted in SQLite.

use crate::glue::respond;
use crate::openai::ApiError;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, wasm_bindgen, DurableObject, Env, Method, Request, RequestInit, Response,
    Result, SqlStorage, State,
};

/// Live counters of one bucket, as the admin API shows them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Requests admitted since the bucket was created.
    pub admitted: i64,
}

/// One quota budget (account x model).
#[durable_object]
pub struct BucketDo {
    sql: SqlStorage,
}

impl DurableObject for BucketDo {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        // A failure here surfaces on the first query, as an error rather than a panic.
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            None,
        );
        Self { sql }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/acquire") => {
                self.sql.exec(
                    "INSERT INTO counters(name, value) VALUES ('admitted', 1) \
                     ON CONFLICT(name) DO UPDATE SET value = value + 1",
                    None,
                )?;
                Response::from_json(&self.counters()?)
            }
            (Method::Get, "/state") => Response::from_json(&self.counters()?),
            _ => Response::error("unknown bucket operation", 404),
        }
    }
}

impl BucketDo {
    fn counters(&self) -> Result<Counters> {
        #[derive(Deserialize)]
        struct Row {
            value: i64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT value FROM counters WHERE name = 'admitted'", None)?
            .to_array()?;
        Ok(Counters {
            admitted: rows.first().map_or(0, |r| r.value),
        })
    }
}

async fn call(env: &Env, account: &str, model: &str, method: Method, op: &str) -> Result<Response> {
    let namespace = env.durable_object("BUCKET")?;
    let stub = namespace
        .id_from_name(&format!("bucket:{account}:{model}"))?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(method);
    let req = Request::new_with_init(&format!("https://bucket{op}"), &init)?;
    stub.fetch_with_request(req).await
}

/// Takes one admission from the bucket; the only DO round trip on the request path.
pub async fn acquire(
    env: &Env,
    account: &str,
    model: &str,
) -> std::result::Result<Counters, ApiError> {
    let mut resp = call(env, account, model, Method::Post, "/acquire")
        .await
        .map_err(respond::internal)?;
    resp.json().await.map_err(respond::internal)
}

/// The admin view of one bucket.
pub async fn snapshot(
    env: &Env,
    account: &str,
    model: &str,
) -> std::result::Result<Response, ApiError> {
    let mut resp = call(env, account, model, Method::Get, "/state")
        .await
        .map_err(respond::internal)?;
    let counters: Counters = resp.json().await.map_err(respond::internal)?;
    let body = serde_json::json!({"account": account, "model": model, "counters": counters});
    respond::json(200, body.to_string())
}
