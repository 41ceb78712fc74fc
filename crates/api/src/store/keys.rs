//! The API keys and browser sessions tables, beside the job writer (each write is one small
//! statement, made by the `keys` command or a sign-in). Tokens and session ids are never
//! stored: only their SHA-256 ([`crate::auth::token`]).

use std::borrow::Cow;

use time::OffsetDateTime;

use offload_shared::settings::Scope;

use super::{
    StoreError,
    dialect::{Dialect, Stmt},
    ops::Db,
};

/// An API key as the store holds it (no token: only its hash, which never leaves the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its id (a UUID v7), the `owner` of the jobs it submits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Its own rate limit (per second, burst), if it has one.
    pub rate: Option<(u32, u32)>,
}

impl KeyRecord {
    /// True if it may be used at `now`: not revoked, not expired.
    pub fn is_usable(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    /// Another key has the name.
    #[error("a key named {0:?} exists already: choose another name, or revoke it first")]
    NameTaken(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const INSERT_KEY: &str = "INSERT INTO keys (id, name, token_hash, scopes, created_at, expires_at, \
     revoked_at, rate_per_s, burst) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)
     ON CONFLICT (name) DO NOTHING";

const LIST_KEYS: &str = "SELECT id, name, scopes, created_at, expires_at, revoked_at, \
     rate_per_s, burst FROM keys ORDER BY name";

/// A lookup by the token's hash, on its unique index: the hash is compared by the database, not
/// in constant time. That is fine: a timing difference could only tell an attacker how much of
/// a SHA-256 they guessed, and finding an input for a chosen hash prefix is as hard as guessing
/// the 256-bit token.
const KEY_BY_HASH: &str = "SELECT id, name, scopes, created_at, expires_at, revoked_at, \
     rate_per_s, burst FROM keys WHERE token_hash = $1";

const REVOKE_KEY: &str = "UPDATE keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";

const INSERT_SESSION: &str =
    "INSERT INTO sessions (id_hash, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";

/// The key of a live session (looked up by hash, as [`KEY_BY_HASH`]).
const SESSION_KEY: &str = "SELECT k.id, k.name, k.scopes, k.created_at, k.expires_at, \
     k.revoked_at, k.rate_per_s, k.burst
     FROM sessions s JOIN keys k ON k.id = s.key_id
     WHERE s.id_hash = $1 AND s.expires_at > $2";

const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";

const DELETE_SESSIONS_OF_KEY: &str =
    "DELETE FROM sessions WHERE key_id IN (SELECT id FROM keys WHERE name = $1)";

const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";

impl<D: Dialect> Db<D> {
    /// Records a new key under the hash of its token.
    pub(super) async fn create_key(
        &self,
        key: &KeyRecord,
        token_hash: &str,
    ) -> Result<(), CreateKeyError> {
        let mut conn = self.pool().acquire().await.map_err(StoreError::from)?;
        let (rate, burst) = key.rate.unzip();
        let stmt = Stmt::new(INSERT_KEY)
            .str(Some(&key.id))
            .str(Some(&key.name))
            .str(Some(token_hash))
            .text(Some(Cow::Owned(scopes_text(&key.scopes))))
            .time(key.created_at)
            .time(key.expires_at)
            .int(rate.map(i64::from))
            .int(burst.map(i64::from));
        if D::execute(&mut conn, stmt)
            .await
            .map_err(StoreError::from)?
            == 0
        {
            return Err(CreateKeyError::NameTaken(key.name.clone()));
        }
        Ok(())
    }

    /// Every key, by name.
    pub(super) async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, Stmt::new(LIST_KEYS)).await?;
        rows.iter().map(key_row::<D>).collect()
    }

    /// The key whose token hashes to `token_hash`, usable or not.
    pub(super) async fn key_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let row =
            D::fetch_optional(&mut conn, Stmt::new(KEY_BY_HASH).str(Some(token_hash))).await?;
        row.as_ref().map(key_row::<D>).transpose()
    }

    /// Revokes the key `name` and ends its sessions; false if no unrevoked key has the name.
    pub(super) async fn revoke_key(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let revoked =
            D::execute(&mut conn, Stmt::new(REVOKE_KEY).str(Some(name)).time(now)).await?;
        D::execute(&mut conn, Stmt::new(DELETE_SESSIONS_OF_KEY).str(Some(name))).await?;
        Ok(revoked > 0)
    }

    /// Records a session of key `key_id` under the hash of its id; forgets expired sessions.
    pub(super) async fn create_session(
        &self,
        id_hash: &str,
        key_id: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        D::execute(&mut conn, Stmt::new(PURGE_SESSIONS).time(now)).await?;
        let stmt = Stmt::new(INSERT_SESSION)
            .str(Some(id_hash))
            .str(Some(key_id))
            .time(now)
            .time(expires_at);
        D::execute(&mut conn, stmt).await?;
        Ok(())
    }

    /// The key of the session whose id hashes to `id_hash`, if it has not expired at `now`.
    pub(super) async fn session_key(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(SESSION_KEY).str(Some(id_hash)).time(now);
        let row = D::fetch_optional(&mut conn, stmt).await?;
        row.as_ref().map(key_row::<D>).transpose()
    }

    /// Ends the session whose id hashes to `id_hash`.
    pub(super) async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        D::execute(&mut conn, Stmt::new(DELETE_SESSION).str(Some(id_hash))).await?;
        Ok(())
    }
}

/// Scopes as stored: their names, space-separated.
fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_row<D: Dialect>(row: &D::Row) -> Result<KeyRecord, StoreError> {
    let name = D::get_text(row, "name")?.unwrap_or_default();
    let bad = |reason: String| StoreError::Corrupt {
        id: format!("key {name}"),
        reason,
    };
    let scopes = D::get_text(row, "scopes")?
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| Scope::parse(s).ok_or_else(|| bad(format!("scope {s:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let positive = |col: &str| -> Result<Option<u32>, StoreError> {
        D::get_int(row, col)?
            .map(|n| u32::try_from(n).map_err(|e| bad(format!("{col}: {e}"))))
            .transpose()
    };
    let rate = positive("rate_per_s")?.zip(positive("burst")?);
    Ok(KeyRecord {
        id: D::get_text(row, "id")?.ok_or_else(|| bad("id: NULL".into()))?,
        scopes,
        created_at: D::get_time(row, "created_at")?
            .ok_or_else(|| bad("created_at: NULL".into()))?,
        expires_at: D::get_time(row, "expires_at")?,
        revoked_at: D::get_time(row, "revoked_at")?,
        rate,
        name,
    })
}
