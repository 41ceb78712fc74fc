//! Keys, sessions and job owners, run on both backends by `tests.rs`.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use offload_shared::{JobId, JobKind, settings::Scope};

use super::{
    JobFilter, JobRecord, Store, Write,
    keys::{CreateKeyError, KeyRecord},
};

fn now() -> OffsetDateTime {
    // Stored to the microsecond.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .expect("valid")
}

fn key(name: &str, scopes: &[Scope]) -> KeyRecord {
    KeyRecord {
        id: JobId::new().to_string(),
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        rate: None,
    }
}

pub(super) async fn keys_are_found_by_hash_revoked_by_name_and_end_their_sessions(store: Store) {
    let mut a = key("a", &[Scope::Submit, Scope::Read]);
    a.rate = Some((5, 10));
    a.expires_at = Some(now() + Duration::days(1));
    store.create_key(&a, "hash-a").await.expect("create");
    let same_name = key("a", &[Scope::Admin]);
    assert!(matches!(
        store.create_key(&same_name, "hash-b").await,
        Err(CreateKeyError::NameTaken(n)) if n == "a"
    ));
    assert_eq!(
        store.key_by_hash("hash-a").await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(store.key_by_hash("hash-x").await.expect("get"), None);
    assert_eq!(store.keys().await.expect("list"), vec![a.clone()]);

    let t = now();
    store
        .create_session("session-1", &a.id, t, t + Duration::hours(1))
        .await
        .expect("session");
    store
        .create_session(
            "session-old",
            &a.id,
            t - Duration::hours(2),
            t - Duration::hours(1),
        )
        .await
        .expect("session");
    assert_eq!(
        store.session_key("session-1", t).await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(
        store.session_key("session-old", t).await.expect("get"),
        None,
        "expired"
    );
    store.delete_session("session-1").await.expect("end");
    assert_eq!(
        store.session_key("session-1", t).await.expect("get"),
        None,
        "ended"
    );

    store
        .create_session("session-2", &a.id, t, t + Duration::hours(1))
        .await
        .expect("session");
    assert!(store.revoke_key("a", t).await.expect("revoke"));
    assert!(!store.revoke_key("a", t).await.expect("revoke"), "once");
    assert!(!store.revoke_key("nobody", t).await.expect("revoke"));
    let revoked = store
        .key_by_hash("hash-a")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(revoked.revoked_at, Some(t));
    assert!(!revoked.is_usable(t));
    assert_eq!(
        store.session_key("session-2", t).await.expect("get"),
        None,
        "revoking ends sessions"
    );
}

pub(super) async fn a_job_is_seen_and_listed_only_by_its_owner_unless_unfiltered(store: Store) {
    let kind = JobKind::parse("noop").expect("kind");
    let mut ids = Vec::new();
    for owner in ["a", "b", "a"] {
        let id = JobId::new();
        let job = JobRecord::queued(id, kind.clone(), 3, 1000, now()).owned_by(Some(owner.into()));
        let insert = Write::Insert {
            job,
            payload: json!({}),
            key: None,
            resolve_at: None,
            inputs: Vec::new(),
        };
        store.apply(&[insert]).await.expect("insert");
        ids.push(id);
    }
    let job = store.get(ids[1]).await.expect("get").expect("job");
    assert_eq!(job.owner.as_deref(), Some("b"));
    assert!(
        store
            .get_owned(ids[1], Some("b"))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        store
            .get_owned(ids[1], Some("a"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(store.get_owned(ids[1], None).await.expect("get").is_some());
    let listed = |owner: Option<&str>| {
        let store = store.clone();
        let filter = JobFilter {
            limit: 10,
            owner: owner.map(str::to_owned),
            ..Default::default()
        };
        async move {
            store
                .list(&filter)
                .await
                .expect("list")
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some("a")).await, vec![ids[2], ids[0]]);
    assert_eq!(listed(Some("b")).await, vec![ids[1]]);
    assert_eq!(listed(None).await.len(), 3);
}
