//! The typed job trait: a kind's name, its payload and output types, and its `run`.

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use crate::{JobContext, JobError};

/// A kind of job this worker runs: its name, queue and defaults, the types of its payload and
/// result, and the code that runs one attempt.
///
/// The payload's JSON Schema (from `schemars`) is announced with the kind, so the API refuses a
/// payload that does not fit before it is queued; a payload that still does not deserialize here
/// fails the job permanently, naming serde's message. Delivery is at-least-once: `run` must be
/// idempotent per [`JobContext::id`].
///
/// ```
/// use offload_worker::{Job, JobContext, JobError};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// /// Adds two numbers.
/// struct Add;
///
/// /// What to add.
/// #[derive(Deserialize, JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Numbers {
///     /// The first term.
///     a: i64,
///     /// The second term.
///     b: i64,
/// }
///
/// #[derive(Serialize)]
/// struct Sum {
///     sum: i64,
/// }
///
/// impl Job for Add {
///     const KIND: &'static str = "math.add";
///     type Payload = Numbers;
///     type Output = Sum;
///
///     fn queue(&self) -> &str {
///         "math"
///     }
///
///     async fn run(&self, _ctx: JobContext, p: Numbers) -> Result<Sum, JobError> {
///         let sum = p.a.checked_add(p.b).ok_or_else(|| JobError::permanent("overflow"))?;
///         Ok(Sum { sum })
///     }
/// }
/// ```
pub trait Job: Send + Sync + 'static {
    /// The kind's name: `[a-z][a-z0-9_.-]{0,63}`, e.g. `"pdf.render"`; `"job"` is reserved.
    const KIND: &'static str;

    /// What a job of this kind carries; its JSON Schema is announced to the API.
    type Payload: DeserializeOwned + JsonSchema + Send + 'static;

    /// What a successful attempt returns: the job's result, as JSON.
    type Output: Serialize + Send + 'static;

    /// The queue this kind's jobs wait in (`"default"` is `<prefix>.jobs`, any other name
    /// `<prefix>.jobs.<name>`). Kinds that share a queue share its workers.
    fn queue(&self) -> &str {
        offload_shared::kinds::QueueName::DEFAULT
    }

    /// Runs allowed per job when the request names none (`None`: the API's default).
    fn max_attempts(&self) -> Option<u32> {
        None
    }

    /// Time limit of one attempt, in seconds, when the request names none (`None`: the API's
    /// default).
    fn timeout_s(&self) -> Option<u64> {
        None
    }

    /// Priority of this kind's jobs when the request names none (`None`: `normal`). A `high`
    /// job starts before every waiting `normal` job of its queue.
    fn priority(&self) -> Option<crate::Priority> {
        None
    }

    /// At most this many jobs of this kind queued or running at once across every worker
    /// (`None`: no limit); the rest wait in the API's store until one finishes.
    fn max_running(&self) -> Option<u32> {
        None
    }

    /// True if this kind's jobs may run for hours (a `timeout_s` up to 24 hours, past the
    /// broker's consumer timeout). The worker then acknowledges a job's delivery once the API has
    /// been told it started, and holds the job by a lease it renews with heartbeats
    /// (`OFFLOAD_LEASE_S`): while this worker is alive the job is never started twice; if it
    /// dies, the API starts the job again, as its next attempt, once the lease lapses.
    fn long(&self) -> bool {
        false
    }

    /// Runs one attempt. A [`JobError::Retryable`] is tried again with back-off until the
    /// job's attempts run out; a [`JobError::Permanent`] ends the job dead at once.
    fn run(
        &self,
        ctx: JobContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}
