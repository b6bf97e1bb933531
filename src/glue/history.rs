//! A bucket's (or a meter's) stored history: one SQLite row per closed minute (24 hours kept) and
//! per closed day (90 kept), written when a period closes; a closing day is summarised from
//! its minutes first.

use crate::glue::log;
use crate::history::{self, Closed, Period, Rollup};
use worker::{SqlStorage, SqlStorageValue, State};

/// The object's history tables.
pub struct Tables {
    sql: SqlStorage,
}

impl Tables {
    /// Opens the tables (created on first use).
    pub fn open(state: &State) -> Tables {
        let sql = state.storage().sql();
        for table in ["minutes", "days"] {
            // A failure here surfaces as a failed write or read, logged, never a panic.
            let _ = sql.exec(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {table}(at INTEGER PRIMARY KEY, r TEXT NOT NULL)"
                ),
                None,
            );
        }
        Tables { sql }
    }

    /// Stores what closed, then drops rows past the retention.
    pub fn store(&self, closed: Closed, now_ms: u64, name: &str) {
        let Closed { minutes, days } = closed;
        let mut result = minutes
            .iter()
            .try_for_each(|(at, r)| self.put("minutes", *at, r));
        for (day, mut rollup) in days {
            let (first, end) = history::day_minutes(day);
            let of_day: Vec<Rollup> = self
                .rows("minutes", first, end)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            history::summarise_day(&mut rollup, &of_day);
            result = result.and_then(|()| self.put("days", day, &rollup));
        }
        let (minute, day) = history::horizon(now_ms);
        result = result
            .and_then(|()| {
                self.sql
                    .exec(
                        "DELETE FROM minutes WHERE at < ?",
                        vec![(minute as f64).into()],
                    )
                    .map(|_| ())
            })
            .and_then(|()| {
                self.sql
                    .exec("DELETE FROM days WHERE at < ?", vec![(day as f64).into()])
                    .map(|_| ())
            });
        if let Err(e) = result {
            log::warn(
                "history_write_failed",
                "",
                serde_json::json!({"object": name, "error": e.to_string()}),
            );
        }
    }

    fn put(&self, table: &str, at: u64, rollup: &Rollup) -> worker::Result<()> {
        let json =
            serde_json::to_string(rollup).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.sql.exec(
            &format!("INSERT INTO {table}(at, r) VALUES (?, ?) ON CONFLICT(at) DO UPDATE SET r = excluded.r"),
            vec![(at as f64).into(), json.into()],
        )?;
        Ok(())
    }

    /// Puts the stored minutes (from `minutes_from`) and days before the open ones an object
    /// answered with.
    pub fn add_stored(
        &self,
        now_ms: u64,
        minutes_from: u64,
        minutes: &mut Vec<Period>,
        days: &mut Vec<Period>,
    ) {
        let (minute, day) = history::horizon(now_ms);
        let mut stored = self.rows("minutes", minute.max(minutes_from), u64::MAX >> 12);
        stored.append(minutes);
        *minutes = stored;
        let mut stored = self.rows("days", day, u64::MAX >> 12);
        stored.append(days);
        *days = stored;
    }

    /// The stored rows of `table` with `from <= at < to`, oldest first.
    pub fn rows(&self, table: &str, from: u64, to: u64) -> Vec<Period> {
        let query = format!("SELECT at, r FROM {table} WHERE at >= ? AND at < ? ORDER BY at");
        let Ok(rows) = (self.sql).exec(&query, vec![(from as f64).into(), (to as f64).into()])
        else {
            return Vec::new();
        };
        // Each row read as its values (`at`, a minute or day number: a safe integer, so read as
        // an Integer; `r`): `to_array` would read them through a serde deserialiser of JS
        // values, a second one in the bundle.
        rows.raw()
            .filter_map(|row| match row.ok()?.as_slice() {
                [SqlStorageValue::Integer(at), SqlStorageValue::String(r)] => {
                    Some((u64::try_from(*at).ok()?, serde_json::from_str(r).ok()?))
                }
                _ => None,
            })
            .collect()
    }
}
