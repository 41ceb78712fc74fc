//! The crate's one error type, [`WorkerError`]: why a worker could not be built or stopped
//! with an error.

use std::net::SocketAddr;

use offload_shared::session::OpenError;

/// Why a worker could not start, or stopped with an error.
///
/// ```
/// use offload_worker::WorkerError;
///
/// let e = WorkerError::InvalidJob { kind: "Resize".into(), reason: "not a valid name".into() };
/// assert_eq!(e.to_string(), "cannot run job kind \"Resize\": not a valid name");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A registered job cannot be run: its kind or queue name is invalid, the kind was
    /// registered twice, or its spec (payload schema, defaults) does not compile. Found by
    /// `build` before connecting.
    #[error("cannot run job kind {kind:?}: {reason}")]
    InvalidJob {
        /// The kind's name as written in the code.
        kind: String,
        /// What is wrong, and what to do about it.
        reason: String,
    },
    /// `OFFLOAD_QUEUES` lists a queue no built-in kind uses (the stock worker only).
    #[error(
        "OFFLOAD_QUEUES lists {unknown}, which no built-in kind uses; the built-in kinds' \
         queues are {known} (leave OFFLOAD_QUEUES empty to serve them all)"
    )]
    UnknownQueues {
        /// The listed queues no built-in kind uses, comma-separated.
        unknown: String,
        /// The built-in kinds' queues, comma-separated.
        known: String,
    },
    /// `build` was called without any job.
    #[error("no job kinds registered: add at least one with WorkerBuilder::job")]
    NoJobs,
    /// The broker is unreachable, or its queues exist with other arguments.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The metrics address could not be bound.
    #[error(
        "cannot listen on {addr} (OFFLOAD_METRICS_ADDR): {source}. Free the port, or set \
         OFFLOAD_METRICS_ADDR to another address (port 0 picks a free one), or leave it unset \
         to use 0.0.0.0:9090 or else a free port."
    )]
    Bind {
        /// The address asked for (`OFFLOAD_METRICS_ADDR`, or the default).
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}
