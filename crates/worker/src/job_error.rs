//! How a job fails: [`JobError`] is retryable (try again later) or permanent (dead-letter now).
//! Any `std::error::Error` converts into a retryable one, so `?` works in handlers;
//! [`ResultExt`] marks a result's error permanent or retryable explicitly.

use std::fmt;

/// How a job's attempt failed: the worker retries a [`JobError::Retryable`] one with back-off
/// until its attempts run out, and dead-letters a [`JobError::Permanent`] one at once.
///
/// Every `std::error::Error` converts into a retryable `JobError` (its message with its causes),
/// which is why `JobError` itself does not implement `std::error::Error`.
///
/// ```
/// use offload_worker::{JobError, ResultExt};
///
/// fn parse_width(raw: &str) -> Result<u32, JobError> {
///     // A width that is not a number will never become one: no point retrying.
///     let width: u32 = raw.parse().permanent()?;
///     if width == 0 {
///         return Err(JobError::permanent("width must be at least 1"));
///     }
///     Ok(width)
/// }
///
/// fn read_config(path: &str) -> Result<String, JobError> {
///     // An I/O error may be transient: `?` makes it retryable.
///     Ok(std::fs::read_to_string(path)?)
/// }
///
/// assert!(parse_width("wide").unwrap_err().is_permanent());
/// assert!(!read_config("/no/such/file").unwrap_err().is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Might succeed if tried again (a timeout, a busy dependency).
    Retryable(String),
    /// Will never succeed (bad input, a missing resource): dead-letter at once.
    Permanent(String),
}

impl JobError {
    /// A failure that may pass on a later attempt.
    ///
    /// ```
    /// let e = offload_worker::JobError::retryable("the image service is busy");
    /// assert_eq!(e.to_string(), "the image service is busy");
    /// ```
    pub fn retryable(message: impl fmt::Display) -> Self {
        JobError::Retryable(message.to_string())
    }

    /// A failure no retry can fix: the job is dead-lettered with this message.
    ///
    /// ```
    /// let e = offload_worker::JobError::permanent("no such image");
    /// assert!(e.is_permanent());
    /// ```
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError::Permanent(message.to_string())
    }

    /// True for a permanent failure.
    ///
    /// ```
    /// assert!(!offload_worker::JobError::retryable("busy").is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }

    /// The message, as the job's status will show it.
    ///
    /// ```
    /// assert_eq!(offload_worker::JobError::permanent("gone").message(), "gone");
    /// ```
    pub fn message(&self) -> &str {
        match self {
            JobError::Retryable(m) | JobError::Permanent(m) => m,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    /// Any error is retryable unless said otherwise ([`ResultExt::permanent`]).
    fn from(error: E) -> Self {
        JobError::Retryable(describe(&error))
    }
}

/// `error`'s message followed by those of its causes: `a: b: c`.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        // Errors that print their cause in their own message would repeat it.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Marks a `Result`'s error as permanent or retryable, for use with `?` in a handler.
///
/// ```
/// use offload_worker::{JobError, ResultExt};
///
/// fn run(raw: &str) -> Result<i64, JobError> {
///     let n: i64 = raw.trim().parse().permanent()?;
///     Ok(n * 2)
/// }
/// assert_eq!(run("21"), Ok(42));
/// assert!(run("x").unwrap_err().is_permanent());
/// ```
pub trait ResultExt<T> {
    /// The error, if any, as a [`JobError::Permanent`]: the job is dead-lettered without retries.
    fn permanent(self) -> Result<T, JobError>;

    /// The error, if any, as a [`JobError::Retryable`] (what `?` does by itself).
    fn retryable(self) -> Result<T, JobError>;
}

impl<T, E: std::error::Error + 'static> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, JobError> {
        self.map_err(|e| JobError::Permanent(describe(&e)))
    }

    fn retryable(self) -> Result<T, JobError> {
        self.map_err(|e| JobError::Retryable(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the image")]
    struct Outer(#[source] std::io::Error);

    fn question_mark(fail: bool) -> Result<(), JobError> {
        if fail {
            Err(Outer(std::io::Error::other("disk on fire")))?;
        }
        Ok(())
    }

    #[test]
    fn question_mark_makes_a_retryable_error_with_its_causes() {
        assert_eq!(question_mark(false), Ok(()));
        assert_eq!(
            question_mark(true),
            Err(JobError::Retryable(
                "cannot load the image: disk on fire".to_owned()
            ))
        );
    }

    #[test]
    fn the_extension_marks_errors_as_asked() {
        let bad: Result<u8, _> = "300".parse::<u8>();
        let permanent = bad.clone().permanent().expect_err("too large");
        assert!(permanent.is_permanent());
        assert!(permanent.message().contains("too large"), "{permanent}");
        assert!(!bad.retryable().expect_err("too large").is_permanent());
        assert_eq!("7".parse::<u8>().permanent(), Ok(7));
    }

    #[test]
    fn constructors_keep_the_message() {
        assert_eq!(
            JobError::permanent(format_args!("no image {}", 7)),
            JobError::Permanent("no image 7".to_owned())
        );
        assert_eq!(JobError::retryable("busy").to_string(), "busy");
    }
}
