//! Files a job carries in and out: [`InputFile`]s uploaded with the job (a multipart submit's
//! file fields, in the job message) and [`Artifact`]s a handler returns beside its JSON result
//! (kept by the API, served by `GET /jobs/{id}/result`).

use bytes::Bytes;

/// A file uploaded with the job, under its form field's name; the payload refers to it by that
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The form field it was uploaded under.
    pub field: String,
    /// The file name the client gave, if any.
    pub filename: Option<String>,
    /// Its media type as the client gave it (`application/octet-stream` when none).
    pub content_type: String,
    /// Its bytes.
    pub data: Bytes,
}

/// A file a handler returns with its result: a thumbnail, a PDF, a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its file name, e.g. `thumbnail.webp`: unique within the job.
    pub name: String,
    /// Its media type, e.g. `image/webp`.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Bytes,
}

impl Artifact {
    /// An artifact of `bytes` named `name`, of media type `content_type`.
    ///
    /// ```
    /// let png = offload_worker::Artifact::new("dot.png", "image/png", vec![0x89, b'P']);
    /// assert_eq!(png.bytes.len(), 2);
    /// ```
    pub fn new(
        name: impl Into<String>,
        content_type: impl Into<String>,
        bytes: impl Into<Bytes>,
    ) -> Self {
        Artifact {
            name: name.into(),
            content_type: content_type.into(),
            bytes: bytes.into(),
        }
    }
}
