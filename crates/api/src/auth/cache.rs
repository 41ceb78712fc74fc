//! The keys this replica looked up lately, so a client's steady stream of requests costs one
//! store read a second rather than one each. A revoked or expired key is refused within
//! [`TTL`] on every replica (the cache keeps a found key that long, then reads it again);
//! unknown tokens are never cached, so random tokens cannot fill it.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::store::keys::KeyRecord;

/// How long a looked-up key is trusted before it is read from the store again.
pub const TTL: Duration = Duration::from_secs(1);

/// Most keys kept; past it the cache starts afresh (a deployment has far fewer keys).
const MAX_ENTRIES: usize = 10_000;

/// Found keys by token hash, with when they were read.
#[derive(Debug, Default)]
pub struct KeyCache(Mutex<HashMap<String, (KeyRecord, Instant)>>);

impl KeyCache {
    /// The key of `token_hash` if it was read within [`TTL`].
    pub fn get(&self, token_hash: &str) -> Option<KeyRecord> {
        let keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        keys.get(token_hash)
            .filter(|(_, read)| read.elapsed() < TTL)
            .map(|(key, _)| key.clone())
    }

    /// Remembers the key read for `token_hash`.
    pub fn put(&self, token_hash: String, key: KeyRecord) {
        let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_ENTRIES {
            keys.retain(|_, (_, read)| read.elapsed() < TTL);
            if keys.len() >= MAX_ENTRIES {
                keys.clear();
            }
        }
        keys.insert(token_hash, (key, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyRecord {
        KeyRecord {
            id: "k1".into(),
            name: "k".into(),
            scopes: vec![],
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            rate: None,
        }
    }

    #[test]
    fn a_key_is_kept_for_the_ttl_only() {
        let cache = KeyCache::default();
        assert_eq!(cache.get("h"), None);
        cache.put("h".into(), key());
        assert_eq!(cache.get("h"), Some(key()));
        let long_ago = Instant::now()
            .checked_sub(TTL)
            .expect("an instant a TTL ago");
        cache.0.lock().expect("lock").get_mut("h").expect("entry").1 = long_ago;
        assert_eq!(cache.get("h"), None, "read again after the TTL");
    }
}
