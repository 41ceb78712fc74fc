//! The kinds and workers tables: what kinds the API accepts (built in, announced by workers,
//! pinned by the operator) and which workers announced themselves. Written once for both
//! databases over the [`Dialect`] seam, beside the job writer: each write is one small
//! statement, at most one per announcement.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use offload_shared::{
    Priority,
    announce::{Announcement, WorkerState},
    kinds::{KindSpec, QueueName},
};

use super::{
    StoreError,
    dialect::{Dialect, Stmt},
    ops::Db,
};

/// Where a recorded kind came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KindSource {
    /// A built-in kind of the stock worker, recorded at the API's start.
    Builtin,
    /// Announced by a worker.
    Announced,
    /// Listed in the operator's kinds file (`OFFLOAD_KINDS_FILE`).
    Pinned,
}

impl KindSource {
    /// The name stored in the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            KindSource::Builtin => "builtin",
            KindSource::Announced => "announced",
            KindSource::Pinned => "pinned",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [
            KindSource::Builtin,
            KindSource::Announced,
            KindSource::Pinned,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// A recorded kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindRecord {
    /// Its spec as recorded.
    pub spec: KindSpec,
    /// Where it came from.
    pub source: KindSource,
    /// The worker whose announcement recorded it, for announced kinds.
    pub announced_by: Option<String>,
    /// When it was first recorded.
    pub first_seen_at: OffsetDateTime,
    /// When its spec last changed.
    pub updated_at: OffsetDateTime,
    /// Why a differing announcement was not taken, if one was not.
    pub conflict: Option<String>,
}

/// A worker as its latest announcement described it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    /// Its name.
    pub name: String,
    /// Running or leaving.
    pub state: WorkerState,
    /// The kind specs it announced (those that parsed).
    pub kinds: Vec<KindSpec>,
    /// The queues it consumes.
    pub queues: Vec<QueueName>,
    /// Jobs it was running.
    pub in_flight: u32,
    /// Its prefetch.
    pub prefetch: u16,
    /// Seconds between its heartbeats.
    pub heartbeat_s: u64,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When the API last received an announcement from it (the API's clock, not the worker's).
    pub last_seen_at: OffsetDateTime,
    /// What it runs.
    pub software: String,
}

/// Heartbeats a worker may miss before it counts as gone.
pub const MISSED_HEARTBEATS: u64 = 3;

impl WorkerRecord {
    /// The record of `announcement`, received at `now`, with the kind specs that parsed.
    pub fn from_announcement(
        announcement: &Announcement,
        kinds: Vec<KindSpec>,
        now: OffsetDateTime,
    ) -> Self {
        WorkerRecord {
            name: announcement.worker.clone(),
            state: announcement.state,
            kinds,
            queues: announcement.queues.clone(),
            in_flight: announcement.in_flight,
            prefetch: announcement.prefetch,
            heartbeat_s: announcement.heartbeat_s,
            started_at: announcement.started_at,
            last_seen_at: now,
            software: announcement.software.clone(),
        }
    }

    /// True while it is running and its heartbeats arrive: state `alive` and seen within
    /// [`MISSED_HEARTBEATS`] heartbeats of `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        let window = time::Duration::seconds(
            i64::try_from(self.heartbeat_s.max(1).saturating_mul(MISSED_HEARTBEATS))
                .unwrap_or(i64::MAX),
        );
        self.state == WorkerState::Alive && now - self.last_seen_at <= window
    }
}

const KIND_COLUMNS: &str = "SELECT name, queue, payload_schema, max_attempts, timeout_s, source, \
     announced_by, first_seen_at, updated_at, conflict, priority, max_running, long FROM kinds ORDER BY name";

/// Records a kind's spec; a kind recorded before keeps its `first_seen_at`.
const PUT_KIND: &str = "INSERT INTO kinds (name, queue, payload_schema, max_attempts, timeout_s, \
         source, announced_by, first_seen_at, updated_at, conflict, priority, max_running, long)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (name) DO UPDATE SET queue = excluded.queue,
         payload_schema = excluded.payload_schema, max_attempts = excluded.max_attempts,
         timeout_s = excluded.timeout_s, source = excluded.source,
         announced_by = excluded.announced_by, updated_at = excluded.updated_at,
         conflict = excluded.conflict, priority = excluded.priority,
         max_running = excluded.max_running, long = excluded.long";

/// Records a kind unless its name is recorded already (another API replica may have recorded
/// it a moment ago): only the replica that recorded it binds it.
const RECORD_KIND: &str =
    "INSERT INTO kinds (name, queue, payload_schema, max_attempts, timeout_s, \
         source, announced_by, first_seen_at, updated_at, conflict, priority, max_running, long)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (name) DO NOTHING";

/// Replaces a kind's spec only if it is still the one read (`updated_at` = `$14`): of two
/// replicas replacing it at once, one does. `first_seen_at` stays; its `$8` is only named so
/// that both databases see every bound parameter.
const REPLACE_KIND: &str = "UPDATE kinds SET queue = $2, payload_schema = $3, max_attempts = $4, \
         timeout_s = $5, source = $6, announced_by = $7, updated_at = $9, conflict = $10,
         priority = $11, max_running = $12, long = $13
     WHERE name = $1 AND updated_at = $14 AND $8 IS NOT NULL";

const SET_CONFLICT: &str = "UPDATE kinds SET conflict = $2 WHERE name = $1";

const WORKER_COLUMNS: &str = "SELECT name, state, kinds, queues, in_flight, prefetch, heartbeat_s, \
     started_at, last_seen_at, software FROM workers ORDER BY name";

const PUT_WORKER: &str = "INSERT INTO workers (name, state, kinds, queues, in_flight, prefetch, \
         heartbeat_s, started_at, last_seen_at, software)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (name) DO UPDATE SET state = excluded.state, kinds = excluded.kinds,
         queues = excluded.queues, in_flight = excluded.in_flight, prefetch = excluded.prefetch,
         heartbeat_s = excluded.heartbeat_s, started_at = excluded.started_at,
         last_seen_at = excluded.last_seen_at, software = excluded.software";

/// Workers not seen since `$1` (gone for good) are forgotten.
const FORGET_WORKERS: &str = "DELETE FROM workers WHERE last_seen_at < $1";

fn to_json<T: Serialize>(value: &T) -> String {
    // Specs, names and `Value`s: serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn int<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl<D: Dialect> Db<D> {
    /// Every recorded kind, by name.
    pub(super) async fn kinds(&self) -> Result<Vec<KindRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, Stmt::new(KIND_COLUMNS)).await?;
        rows.iter().map(kind_row::<D>).collect()
    }

    /// Records `kind` (replacing the spec recorded under its name).
    pub(super) async fn put_kind(&self, kind: &KindRecord) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        D::execute(&mut conn, kind_stmt(PUT_KIND, kind)).await?;
        Ok(())
    }

    /// Records `kind` unless a kind of its name is recorded; true if it was recorded.
    pub(super) async fn record_kind(&self, kind: &KindRecord) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(D::execute(&mut conn, kind_stmt(RECORD_KIND, kind)).await? > 0)
    }

    /// Replaces the kind's spec with `kind`'s if it was last changed at `seen` (nobody replaced
    /// it since it was read); true if it was replaced.
    pub(super) async fn replace_kind(
        &self,
        kind: &KindRecord,
        seen: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = kind_stmt(REPLACE_KIND, kind).time(seen);
        Ok(D::execute(&mut conn, stmt).await? > 0)
    }

    /// Sets (or clears) the conflict text of kind `name`.
    pub(super) async fn set_kind_conflict(
        &self,
        name: &str,
        conflict: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(SET_CONFLICT).str(Some(name)).str(conflict);
        D::execute(&mut conn, stmt).await?;
        Ok(())
    }

    /// Every recorded worker, by name.
    pub(super) async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, Stmt::new(WORKER_COLUMNS)).await?;
        rows.iter().map(worker_row::<D>).collect()
    }

    /// Records `worker`'s latest announcement.
    pub(super) async fn put_worker(&self, worker: &WorkerRecord) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        let state = match worker.state {
            WorkerState::Alive => "alive",
            WorkerState::Leaving => "leaving",
        };
        let stmt = Stmt::new(PUT_WORKER)
            .str(Some(&worker.name))
            .str(Some(state))
            .text(Some(Cow::Owned(to_json(&worker.kinds))))
            .text(Some(Cow::Owned(to_json(&worker.queues))))
            .int(i64::from(worker.in_flight))
            .int(i64::from(worker.prefetch))
            .int(int(worker.heartbeat_s))
            .time(worker.started_at)
            .time(worker.last_seen_at)
            .str(Some(&worker.software));
        D::execute(&mut conn, stmt).await?;
        Ok(())
    }

    /// Forgets the workers last seen before `before`; how many.
    pub(super) async fn forget_workers(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(D::execute(&mut conn, Stmt::new(FORGET_WORKERS).time(before)).await?)
    }
}

/// `sql` with a kind's thirteen columns bound as `$1`…`$13`.
fn kind_stmt<'a>(sql: &'static str, kind: &'a KindRecord) -> Stmt<'a> {
    let spec = &kind.spec;
    Stmt::new(sql)
        .str(Some(spec.name.as_str()))
        .str(Some(spec.queue.as_str()))
        .text(Some(Cow::Owned(to_json(&spec.payload_schema))))
        .int(spec.max_attempts.map(i64::from))
        .int(spec.timeout_s.map(int))
        .str(Some(kind.source.as_str()))
        .str(kind.announced_by.as_deref())
        .time(kind.first_seen_at)
        .time(kind.updated_at)
        .str(kind.conflict.as_deref())
        .str(spec.priority.map(Priority::as_str))
        .int(spec.max_running.map(i64::from))
        .int(Some(i64::from(spec.long)))
}

fn corrupt(what: &str, name: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: format!("{what} {name}"),
        reason: reason.to_string(),
    }
}

fn kind_row<D: Dialect>(row: &D::Row) -> Result<KindRecord, StoreError> {
    let name = D::get_text(row, "name")?.unwrap_or_default();
    let bad = |reason: String| corrupt("kind", &name, reason);
    let text = |col: &str| -> Result<String, StoreError> {
        D::get_text(row, col)?.ok_or_else(|| bad(format!("{col}: NULL")))
    };
    let schema = text("payload_schema")?;
    let spec = KindSpec {
        name: name.parse().map_err(|e| bad(format!("name: {e}")))?,
        queue: text("queue")?
            .parse()
            .map_err(|e| bad(format!("queue: {e}")))?,
        payload_schema: serde_json::from_str(&schema)
            .map_err(|e| bad(format!("payload_schema: {e}")))?,
        max_attempts: D::get_int(row, "max_attempts")?
            .map(|n| u32::try_from(n).map_err(|e| bad(format!("max_attempts: {e}"))))
            .transpose()?,
        timeout_s: D::get_int(row, "timeout_s")?
            .map(|n| u64::try_from(n).map_err(|e| bad(format!("timeout_s: {e}"))))
            .transpose()?,
        priority: D::get_text(row, "priority")?
            .map(|p| Priority::parse(&p).map_err(|e| bad(format!("priority: {e}"))))
            .transpose()?,
        max_running: D::get_int(row, "max_running")?
            .map(|n| u32::try_from(n).map_err(|e| bad(format!("max_running: {e}"))))
            .transpose()?,
        long: D::get_int(row, "long")?.is_some_and(|n| n != 0),
    };
    let source = text("source")?;
    Ok(KindRecord {
        spec,
        source: KindSource::parse(&source).ok_or_else(|| bad(format!("source {source:?}")))?,
        announced_by: D::get_text(row, "announced_by")?,
        first_seen_at: D::get_time(row, "first_seen_at")?
            .ok_or_else(|| bad("first_seen_at: NULL".into()))?,
        updated_at: D::get_time(row, "updated_at")?
            .ok_or_else(|| bad("updated_at: NULL".into()))?,
        conflict: D::get_text(row, "conflict")?,
    })
}

fn worker_row<D: Dialect>(row: &D::Row) -> Result<WorkerRecord, StoreError> {
    let name = D::get_text(row, "name")?.unwrap_or_default();
    let bad = |reason: String| corrupt("worker", &name, reason);
    let text = |col: &str| -> Result<String, StoreError> {
        D::get_text(row, col)?.ok_or_else(|| bad(format!("{col}: NULL")))
    };
    let number = |col: &str| -> Result<i64, StoreError> {
        D::get_int(row, col)?.ok_or_else(|| bad(format!("{col}: NULL")))
    };
    let state = match text("state")?.as_str() {
        "alive" => WorkerState::Alive,
        "leaving" => WorkerState::Leaving,
        other => return Err(bad(format!("state {other:?}"))),
    };
    Ok(WorkerRecord {
        state,
        kinds: serde_json::from_str(&text("kinds")?).map_err(|e| bad(format!("kinds: {e}")))?,
        queues: serde_json::from_str(&text("queues")?).map_err(|e| bad(format!("queues: {e}")))?,
        in_flight: u32::try_from(number("in_flight")?).unwrap_or(u32::MAX),
        prefetch: u16::try_from(number("prefetch")?).unwrap_or(u16::MAX),
        heartbeat_s: u64::try_from(number("heartbeat_s")?).unwrap_or(0),
        started_at: D::get_time(row, "started_at")?
            .ok_or_else(|| bad("started_at: NULL".into()))?,
        last_seen_at: D::get_time(row, "last_seen_at")?
            .ok_or_else(|| bad("last_seen_at: NULL".into()))?,
        software: text("software")?,
        name,
    })
}
