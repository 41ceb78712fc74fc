//! Store tests of input files, run on both backends by `tests.rs`: a job's files are kept with
//! it for a republish or a redrive, listed without their bytes, and deleted with the job.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use offload_shared::{JobId, JobKind};

use super::*;

fn files() -> Vec<StoredFile> {
    vec![
        StoredFile::new(
            "image".into(),
            Some("a.png".into()),
            "image/png".into(),
            axum::body::Bytes::from_static(b"\x89PNG\r\n\x00\xff"),
        ),
        StoredFile::new(
            "doc".into(),
            None,
            "application/octet-stream".into(),
            axum::body::Bytes::from_static(b""),
        ),
    ]
}

fn with_files(id: JobId, resolve_at: Option<OffsetDateTime>, inputs: Vec<StoredFile>) -> Write {
    let job = JobRecord::queued(
        id,
        JobKind::parse("noop").expect("kind"),
        3,
        1000,
        OffsetDateTime::now_utc(),
    );
    Write::Insert {
        job,
        payload: json!({"file": "image"}),
        key: None,
        resolve_at,
        inputs,
    }
}

pub(super) async fn a_jobs_input_files_are_kept_for_its_republish_and_deleted_with_it(
    store: Store,
) {
    let t0 = OffsetDateTime::now_utc();
    let id = JobId::new();
    store
        .apply(&[with_files(id, Some(t0), files())])
        .await
        .expect("insert");

    // The job's JSON lists them in upload order, without bytes.
    let job = store.get(id).await.expect("get").expect("stored");
    let listed: Vec<InputMeta> = files().iter().map(StoredFile::meta).collect();
    assert_eq!(job.inputs, listed);
    let shown = serde_json::to_value(&job).expect("json");
    assert_eq!(shown["inputs"][0]["sha256"], json!(files()[0].sha256));
    assert!(shown["inputs"][0].get("data").is_none(), "{shown}");

    // The reconciler's republish of the unresolved job carries every byte.
    let claimed = store
        .claim_unresolved(t0 + Duration::from_secs(1), Duration::from_secs(30), 10)
        .await
        .expect("claim");
    let mine = claimed.iter().find(|u| u.job.id == id).expect("claimed");
    assert_eq!(mine.files, files());
    let envelope_file = mine.files[0].to_envelope();
    assert_eq!(
        envelope_file.decode().expect("intact"),
        b"\x89PNG\r\n\x00\xff"
    );
    // And so does a redrive's.
    let input = store.input(id).await.expect("input").expect("stored");
    assert_eq!(input.files, files());

    // Forgotten: the files go with the job (a new job under the id has none).
    store.apply(&[Write::Delete(id)]).await.expect("delete");
    store
        .apply(&[with_files(id, None, Vec::new())])
        .await
        .expect("insert again");
    assert!(
        store
            .get(id)
            .await
            .expect("get")
            .expect("stored")
            .inputs
            .is_empty()
    );

    // Retention: a finished job's files are purged with it.
    let old = JobId::new();
    store
        .apply(&[
            with_files(old, None, files()),
            Write::MarkDead {
                id: old,
                attempt: 1,
                error: "gone".into(),
            },
        ])
        .await
        .expect("insert and finish");
    let purged = store
        .purge(
            OffsetDateTime::now_utc() + Duration::from_secs(60),
            t0 - Duration::from_secs(3600),
            100,
        )
        .await
        .expect("purge");
    assert!(purged.jobs >= 1, "{purged:?}");
    store
        .apply(&[with_files(old, None, Vec::new())])
        .await
        .expect("insert again");
    assert!(
        store
            .get(old)
            .await
            .expect("get")
            .expect("stored")
            .inputs
            .is_empty()
    );
}
