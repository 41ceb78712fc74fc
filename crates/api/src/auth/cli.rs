//! `offload-api keys create | list | revoke`: straight on the store OFFLOAD_DATABASE_URL names
//! (no broker; the API may be running). `create` prints the token on stdout and nothing else;
//! everything else goes to stderr, and the token never to a log.

use std::io::Write as _;

use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use offload_shared::{JobId, Settings, settings::KeysCommand};

use super::token;
use crate::store::{
    Store, StoreError,
    keys::{CreateKeyError, KeyRecord},
    redact_url,
};

/// Why a `keys` command failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The store could not be opened or failed.
    #[error("job store {url}: {source}")]
    Store {
        /// OFFLOAD_DATABASE_URL, its password hidden.
        url: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The key could not be created.
    #[error(transparent)]
    Create(#[from] CreateKeyError),
    /// No token could be made.
    #[error(transparent)]
    Random(#[from] token::NoRandomness),
    /// No unrevoked key has the name.
    #[error("no key named {0:?} to revoke (see `offload-api keys list`)")]
    NoSuchKey(String),
    /// stdout could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs a `keys` command against the store `settings` name.
pub async fn run(settings: &Settings, command: &KeysCommand) -> Result<(), KeysError> {
    let store_failed = |source| KeysError::Store {
        url: redact_url(&settings.database_url),
        source,
    };
    let store = Store::connect(&settings.database_url)
        .await
        .map_err(store_failed)?;
    let now = OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Create {
            name,
            scopes,
            expires_in_days,
            rate_per_s,
            burst,
        } => {
            let mut scopes = scopes.clone();
            scopes.sort_unstable();
            scopes.dedup();
            let rate = (rate_per_s.is_some() || burst.is_some()).then(|| {
                (
                    rate_per_s.unwrap_or(settings.rate_limit_per_s),
                    burst.unwrap_or(settings.rate_limit_burst),
                )
            });
            let key = KeyRecord {
                id: JobId::new().to_string(),
                name: name.clone(),
                scopes,
                created_at: now,
                expires_at: expires_in_days.map(|d| now + Duration::days(i64::from(d))),
                revoked_at: None,
                rate,
            };
            let secret = token::new_token()?;
            store.create_key(&key, &token::hash(&secret)).await?;
            tracing::info!(key = %key.name, "API key created");
            writeln!(out, "{secret}")?;
        }
        KeysCommand::List => {
            let keys = store.keys().await.map_err(store_failed)?;
            writeln!(
                out,
                "{:<24} {:<22} {:<20} {:<20} {:<20} RATE",
                "NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED"
            )?;
            let when = |t: Option<OffsetDateTime>| {
                t.and_then(|t| t.replace_nanosecond(0).ok())
                    .and_then(|t| t.format(&Rfc3339).ok())
                    .unwrap_or_else(|| "-".to_owned())
            };
            for key in keys {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                let rate = key
                    .rate
                    .map_or_else(|| "default".to_owned(), |(r, b)| format!("{r}/s burst {b}"));
                let expired = key.expires_at.is_some_and(|t| t <= now);
                writeln!(
                    out,
                    "{:<24} {:<22} {:<20} {:<20} {:<20} {rate}",
                    key.name,
                    scopes.join(","),
                    when(Some(key.created_at)),
                    format!(
                        "{}{}",
                        when(key.expires_at),
                        if expired { " (expired)" } else { "" }
                    ),
                    when(key.revoked_at),
                )?;
            }
        }
        KeysCommand::Revoke { name } => {
            if !store.revoke_key(name, now).await.map_err(store_failed)? {
                return Err(KeysError::NoSuchKey(name.clone()));
            }
            tracing::info!(key = %name, "API key revoked");
            eprintln!("revoked key {name:?}: its token and browser sessions no longer work");
        }
    }
    out.flush()?;
    Ok(())
}
