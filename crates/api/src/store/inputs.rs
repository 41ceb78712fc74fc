//! A job's input files (multipart uploads) in the table `job_inputs`: written with the job,
//! read back whole for a republish or redrive, and listed without their bytes in the job's JSON.

use axum::body::Bytes;
use serde::Serialize;

use offload_shared::{JobId, envelope::EnvelopeFile};

use super::{
    StoreError,
    dialect::{Dialect, Stmt},
    sql,
};

/// An input file as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The form field it was uploaded under.
    pub field: String,
    /// The file name the client gave, if any.
    pub filename: Option<String>,
    /// Its declared media type.
    pub content_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its bytes.
    pub data: Bytes,
}

impl StoredFile {
    /// A file of `data`, its size and SHA-256 computed.
    pub fn new(field: String, filename: Option<String>, content_type: String, data: Bytes) -> Self {
        StoredFile {
            field,
            filename,
            content_type,
            size: data.len() as u64,
            sha256: offload_shared::envelope::sha256_hex(&data),
            data,
        }
    }

    /// The file as the job envelope carries it (base64).
    pub fn to_envelope(&self) -> EnvelopeFile {
        EnvelopeFile::new(
            self.field.clone(),
            self.filename.clone(),
            self.content_type.clone(),
            &self.data,
        )
    }

    /// What the job's JSON shows of it.
    pub fn meta(&self) -> InputMeta {
        InputMeta {
            field: self.field.clone(),
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// An input file as `GET /jobs/{id}` lists it: everything but its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InputMeta {
    /// The form field it was uploaded under (handlers find it by this name).
    pub field: String,
    /// The file name the client gave, if any.
    pub filename: Option<String>,
    /// Its declared media type.
    pub content_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
}

/// Records `files` for job `id`.
pub(super) async fn insert<D: Dialect>(
    tx: &mut D::Connection,
    id: JobId,
    files: &[StoredFile],
) -> Result<(), StoreError> {
    for (position, f) in files.iter().enumerate() {
        let stmt = Stmt::new(sql::INSERT_INPUT)
            .id(id)
            .int(i64::try_from(position).unwrap_or(i64::MAX))
            .str(Some(&f.field))
            .str(f.filename.as_deref())
            .str(Some(&f.content_type))
            .int(i64::try_from(f.size).unwrap_or(i64::MAX))
            .str(Some(&f.sha256))
            .bytes(&f.data);
        D::execute(tx, stmt).await?;
    }
    Ok(())
}

/// Job `id`'s files with their bytes, in upload order.
pub(super) async fn load<D: Dialect>(
    conn: &mut D::Connection,
    id: JobId,
) -> Result<Vec<StoredFile>, StoreError> {
    let rows = D::fetch_all(conn, Stmt::new(sql::GET_INPUTS).id(id)).await?;
    rows.iter()
        .map(|row| {
            let corrupt = |reason: String| StoreError::Corrupt {
                id: id.to_string(),
                reason,
            };
            let text = |col: &str| -> Result<String, StoreError> {
                D::get_text(row, col)?.ok_or_else(|| corrupt(format!("job_inputs.{col}: NULL")))
            };
            let data = D::get_bytes(row, "data")?
                .ok_or_else(|| corrupt("job_inputs.data: NULL".into()))?;
            Ok(StoredFile {
                field: text("field")?,
                filename: D::get_text(row, "filename")?,
                content_type: text("content_type")?,
                size: data.len() as u64,
                sha256: text("sha256")?,
                data: data.into(),
            })
        })
        .collect()
}
