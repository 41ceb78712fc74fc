//! Lifecycle events: workers publish them to the events queue, the API applies them to its store.
//!
//! Delivery is at-least-once and a redelivered job runs again, so events can repeat and arrive
//! late. [`JobStatus::progress`] orders them: the store applies an event only if it moves the job
//! forward, which makes duplicates and stale events harmless.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    artifacts::ArtifactMeta,
    envelope::{JobId, WIRE_VERSION},
    kinds::JobKind,
};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Recorded by the API to run later (`run_at`, `delay_s`, or a schedule's tick still to be
    /// published): it waits in the store, not in the broker, until its time; the API publishes it
    /// then. Workers never report it.
    Scheduled,
    /// Recorded by the API, whose publish the broker has not confirmed yet: the job may or may
    /// not be in the queue. The API resolves it (the confirm arrives late, the job's own events
    /// arrive, or it republishes the job under the same id); workers never report it.
    Pending,
    /// Accepted and waiting in the queue.
    Queued,
    /// A worker is running it.
    Running,
    /// An attempt failed; another attempt is scheduled.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error and not dead-lettered.
    Failed,
    /// Gave up: in the dead-letter queue, with the reason.
    Dead,
    /// Cancelled by a client before it finished: it never runs (or runs no further). Set by the
    /// API first; a worker that meets the job later acks it without running it and reports
    /// `cancelled` too.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Scheduled,
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    /// The status's name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// True once nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        )
    }

    /// True while a cancel still changes something: the job has not finished.
    pub fn is_cancellable(self) -> bool {
        !self.is_terminal()
    }

    /// Position of `(attempt, status)` in the job's life; an event applies only if its progress
    /// is greater than the stored one. A terminal status outranks every other status of the same
    /// attempt, so a late `running` never overwrites `succeeded`. `pending` ranks below
    /// `queued` of its attempt, so any event of the job settles it, and `scheduled` below
    /// `pending`. `cancelled` outranks everything of every attempt ([`CANCELLED_PROGRESS`]):
    /// nothing a worker reports later revives a cancelled job.
    pub fn progress(self, attempt: u32) -> i64 {
        let rank = match self {
            JobStatus::Cancelled => return CANCELLED_PROGRESS,
            JobStatus::Scheduled => -2,
            JobStatus::Pending => -1,
            JobStatus::Queued => 0,
            JobStatus::Running => 1,
            JobStatus::Retrying => 2,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead => 3,
        };
        i64::from(attempt) * 4 + rank
    }
}

/// The progress of a cancelled job: above any `(attempt, status)`, so no event moves it on.
pub const CANCELLED_PROGRESS: i64 = i64::MAX;

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.chars().take(32).collect()))
    }
}

/// One step of a job's life, reported by the worker that took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Wire version; see [`WIRE_VERSION`].
    pub v: u32,
    /// The job.
    pub job_id: JobId,
    /// Which attempt this is about.
    pub attempt: u32,
    /// The status the job reached.
    pub status: JobStatus,
    /// When the worker observed it.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The worker's name.
    pub worker: String,
    /// The handler's output, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job's kind, for metrics by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
    /// Runs the job allows, on a start: with `submitted_at`, lets the API record a job that
    /// another producer published straight to the exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// When the job was submitted (the envelope's `submitted_at`), on a start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub submitted_at: Option<OffsetDateTime>,
    /// How long the handler ran, on an attempt's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// When the attempt started, on an attempt's end whose `running` event was folded into this
    /// one (a short job's start and end reported together); the store counts it as a run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// The artifacts of a success, each published (and confirmed) on the artifacts queue
    /// before this event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactMeta>,
    /// Set on a progress report: a `running` event with this field says how far the running
    /// attempt has got and changes nothing else (it is not a start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// On a long job's `running` events (its start and its heartbeats): the worker holds the
    /// attempt for this many milliseconds from when the API applies the event, and renews the
    /// lease before it lapses. The
    /// API starts the job again, as its next attempt, once a lease has lapsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Set on a heartbeat: a `running` event with this flag renews the running attempt's lease
    /// (`lease_ms`) and changes nothing else (it is not a start).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heartbeat: bool,
}

/// How far a running attempt has got, as its handler said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0 (nothing done) to 1 (all done).
    pub fraction: f64,
    /// What the handler is doing, in a few words; at most [`MAX_PROGRESS_MESSAGE_CHARS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Longest progress message kept, in characters.
pub const MAX_PROGRESS_MESSAGE_CHARS: usize = 200;

impl Progress {
    /// A progress report as it is kept: `fraction` within 0..=1 (a value that is not a number
    /// counts as 0), `message` cut to [`MAX_PROGRESS_MESSAGE_CHARS`] and absent when empty.
    pub fn new(fraction: f64, message: &str) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let message: String = message.chars().take(MAX_PROGRESS_MESSAGE_CHARS).collect();
        Progress {
            fraction,
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// This report with its bounds applied (one from another producer may be out of them).
    pub fn bounded(&self) -> Self {
        Progress::new(self.fraction, self.message.as_deref().unwrap_or(""))
    }
}

impl JobEvent {
    /// An event stamped now, without result or error.
    pub fn now(job_id: JobId, attempt: u32, status: JobStatus, worker: &str) -> Self {
        JobEvent {
            v: WIRE_VERSION,
            job_id,
            attempt,
            status,
            at: OffsetDateTime::now_utc(),
            worker: worker.to_owned(),
            result: None,
            error: None,
            kind: None,
            max_attempts: None,
            submitted_at: None,
            run_ms: None,
            started_at: None,
            artifacts: Vec::new(),
            progress: None,
            lease_ms: None,
            heartbeat: false,
        }
    }

    /// A progress report of a running attempt, stamped now.
    pub fn progress_report(job_id: JobId, attempt: u32, worker: &str, progress: Progress) -> Self {
        JobEvent {
            progress: Some(progress),
            ..JobEvent::now(job_id, attempt, JobStatus::Running, worker)
        }
    }

    /// A long job's heartbeat, stamped now: its worker still runs `attempt` and holds it for
    /// `lease_ms` more.
    pub fn heartbeat(job_id: JobId, attempt: u32, worker: &str, lease_ms: u64) -> Self {
        JobEvent {
            lease_ms: Some(lease_ms),
            heartbeat: true,
            ..JobEvent::now(job_id, attempt, JobStatus::Running, worker)
        }
    }

    /// True if this is a progress report, not a step of the job's life.
    pub fn is_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// True if this is a report about a running attempt (its progress, or a heartbeat), not a
    /// step of the job's life.
    pub fn is_report(&self) -> bool {
        self.is_progress() || self.heartbeat
    }

    /// Until when the worker holds this attempt, on a long job's start or heartbeat: `lease_ms`
    /// counted from `received` (when the API applies the event, so that the worker's clock does
    /// not matter).
    pub fn lease_until(&self, received: OffsetDateTime) -> Option<OffsetDateTime> {
        let ms = i64::try_from(self.lease_ms?).ok()?;
        received.checked_add(time::Duration::milliseconds(ms))
    }

    /// When the attempt started, if this event reports a start: a `running` event, or an end
    /// with its start folded in. The store counts each such event as a run.
    pub fn start(&self) -> Option<OffsetDateTime> {
        if self.is_report() {
            None
        } else if self.status == JobStatus::Running {
            Some(self.at)
        } else {
            self.started_at
        }
    }

    /// Folds `running`, the start of the same attempt, into this end of it: the store then
    /// records the start from this one event. False (and nothing changed) when `running` is not
    /// the start of this event's attempt or this event is not the attempt's end.
    pub fn fold_start(&mut self, running: &JobEvent) -> bool {
        let folds = running.status == JobStatus::Running
            && !running.is_report()
            && running.lease_ms.is_none()
            && self.status != JobStatus::Running
            && running.job_id == self.job_id
            && running.attempt == self.attempt;
        if folds {
            self.started_at = Some(running.at);
            // What the start says about the job travels with it: the API records a job it
            // has not seen (another producer published it) from these.
            self.kind = self.kind.take().or_else(|| running.kind.clone());
            self.max_attempts = self.max_attempts.or(running.max_attempts);
            self.submitted_at = self.submitted_at.or(running.submitted_at);
        }
        folds
    }

    /// Serialises the event for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an event body.
    pub fn from_bytes(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Serialises several events as one message body: a JSON array.
    pub fn batch_to_bytes(events: &[JobEvent]) -> Vec<u8> {
        serde_json::to_vec(events).unwrap_or_default()
    }

    /// Parses an event message: one event (an object) or a batch of them (an array). Each
    /// event is parsed on its own, so one that does not parse (malformed, nested too deep, of a
    /// newer version) never takes the others with it: it comes back as an [`UnreadableEvent`]
    /// in its place. A body that is neither an object nor an array is one unreadable event.
    pub fn parse_message(body: &[u8]) -> Vec<Result<Self, UnreadableEvent>> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            // A worker's batch almost always reads whole, in one pass.
            if let Ok(events) = serde_json::from_slice::<Vec<JobEvent>>(body)
                && events.iter().all(|e| e.v == WIRE_VERSION)
            {
                return events.into_iter().map(Ok).collect();
            }
            // Splitting into raw elements skips over each one without recursing, so an element
            // nested past serde_json's depth limit fails alone, below.
            match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
                Ok(raw) => raw
                    .into_iter()
                    .map(|r| Self::parse_one(r.get().as_bytes()))
                    .collect(),
                Err(e) => vec![Err(UnreadableEvent::new(body, &e))],
            }
        } else {
            vec![Self::parse_one(body)]
        }
    }

    fn parse_one(body: &[u8]) -> Result<Self, UnreadableEvent> {
        let event: JobEvent =
            serde_json::from_slice(body).map_err(|e| UnreadableEvent::new(body, &e))?;
        if event.v != WIRE_VERSION {
            return Err(UnreadableEvent {
                body: body.to_vec(),
                reason: format!(
                    "event version {} is not supported (this build reads version {WIRE_VERSION})",
                    event.v
                ),
            });
        }
        Ok(event)
    }
}

/// An event (or a whole event message) that does not parse: kept with the reason, to be parked
/// where an operator can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEvent {
    /// The bytes that did not parse.
    pub body: Vec<u8>,
    /// Why.
    pub reason: String,
}

impl UnreadableEvent {
    fn new(body: &[u8], error: &serde_json::Error) -> Self {
        UnreadableEvent {
            body: body.to_vec(),
            reason: format!("not a lifecycle event: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_renews_a_lease_and_is_neither_a_start_nor_folded() {
        let id = JobId::new();
        let beat = JobEvent::heartbeat(id, 2, "w1", 30_000);
        let back = JobEvent::from_bytes(&beat.to_bytes()).expect("round trip");
        assert_eq!(back, beat);
        assert!(back.heartbeat && back.is_report() && !back.is_progress());
        assert_eq!(back.start(), None, "a heartbeat is not a run");
        let received = OffsetDateTime::now_utc();
        assert_eq!(
            back.lease_until(received),
            Some(received + time::Duration::seconds(30)),
            "counted from when the API applies it"
        );
        let mut end = JobEvent::now(id, 2, JobStatus::Succeeded, "w1");
        assert!(
            !end.fold_start(&beat),
            "a heartbeat is not the attempt's start"
        );
        let mut long_start = JobEvent::now(id, 2, JobStatus::Running, "w1");
        long_start.lease_ms = Some(30_000);
        assert!(
            !end.fold_start(&long_start),
            "a long start is sent on its own, before the ack"
        );
        // Old producers' events have neither field.
        let plain = JobEvent::now(id, 1, JobStatus::Running, "w1");
        let text = String::from_utf8(plain.to_bytes()).expect("utf-8");
        assert!(
            !text.contains("lease_ms") && !text.contains("heartbeat"),
            "{text}"
        );
        assert_eq!(plain.lease_until(received), None);
    }

    #[test]
    fn progress_orders_the_lifecycle() {
        use JobStatus::*;
        assert!(Queued.progress(1) > Pending.progress(1));
        // A late end of attempt 1 does not overwrite a redrive's pending attempt 2 (an event
        // applies only when its progress is greater).
        assert!(Pending.progress(2) >= Dead.progress(1));
        assert!(Running.progress(1) > Queued.progress(1));
        assert!(Succeeded.progress(1) > Running.progress(1));
        assert!(Dead.progress(1) > Running.progress(1));
        // A late `running` of attempt 1 never overwrites the end of attempt 1...
        assert!(Running.progress(1) < Succeeded.progress(1));
        // ...but a later attempt moves past an earlier attempt's retry.
        assert!(Running.progress(2) > Retrying.progress(1));
        assert!(Queued.progress(2) > Dead.progress(1));
        // A scheduled job waits below pending: its publish settles it like a pending one's.
        assert!(Scheduled.progress(1) < Pending.progress(1));
        assert!(
            Scheduled.progress(1) > 0,
            "above a job adopted from its events"
        );
    }

    #[test]
    fn nothing_a_worker_reports_revives_a_cancelled_job() {
        use JobStatus::*;
        for status in JobStatus::ALL {
            for attempt in [1, 2, 1000, u32::MAX] {
                assert!(
                    status.progress(attempt) <= Cancelled.progress(1),
                    "{status} {attempt}"
                );
            }
        }
        assert!(Cancelled.is_terminal() && !Cancelled.is_cancellable());
        assert!(Scheduled.is_cancellable() && Running.is_cancellable());
        assert!(!Succeeded.is_cancellable());
    }

    #[test]
    fn statuses_round_trip_by_name() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn events_round_trip() {
        let mut ev = JobEvent::now(JobId::new(), 2, JobStatus::Succeeded, "w1");
        ev.result = Some(serde_json::json!({"ok": true}));
        let back = JobEvent::from_bytes(&ev.to_bytes()).expect("parses");
        assert_eq!(back.job_id, ev.job_id);
        assert_eq!(back.result, ev.result);
        assert_eq!(back.status, JobStatus::Succeeded);
    }

    #[test]
    fn a_message_holds_one_event_or_a_batch() {
        let a = JobEvent::now(JobId::new(), 1, JobStatus::Running, "w1");
        let b = JobEvent::now(JobId::new(), 1, JobStatus::Succeeded, "w1");
        let one = JobEvent::parse_message(&a.to_bytes());
        assert_eq!(one, vec![Ok(a.clone())]);
        let batch = JobEvent::batch_to_bytes(&[a.clone(), b.clone()]);
        assert_eq!(
            JobEvent::parse_message(&batch),
            vec![Ok(a.clone()), Ok(b.clone())]
        );
        for bad in [&b"nonsense"[..], b"[1,2", b"", b"\"text\""] {
            let parsed = JobEvent::parse_message(bad);
            assert!(matches!(parsed.as_slice(), [Err(_)]), "{bad:?}: {parsed:?}");
        }
    }

    #[test]
    fn one_bad_event_in_a_batch_never_takes_the_others_with_it() {
        let a = JobEvent::now(JobId::new(), 1, JobStatus::Running, "w1");
        let b = JobEvent::now(JobId::new(), 1, JobStatus::Succeeded, "w1");
        // Nested past serde_json's limit of 128 levels: the whole batch would fail to parse.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut newer = a.clone();
        newer.v = 2;
        let body = format!(
            "[{}, {deep}, {{\"v\":1}}, {}, {}]",
            String::from_utf8(a.to_bytes()).expect("utf-8"),
            String::from_utf8(newer.to_bytes()).expect("utf-8"),
            String::from_utf8(b.to_bytes()).expect("utf-8"),
        );
        let parsed = JobEvent::parse_message(body.as_bytes());
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[0], Ok(a));
        assert_eq!(parsed[4], Ok(b));
        for (i, bad) in parsed[1..4].iter().enumerate() {
            let why = bad.as_ref().expect_err("unreadable");
            assert!(!why.reason.is_empty(), "{i}");
        }
        assert!(
            parsed[3]
                .as_ref()
                .expect_err("newer")
                .reason
                .contains("version 2")
        );
        assert_eq!(parsed[1].as_ref().expect_err("deep").body, deep.as_bytes());
    }

    #[test]
    fn only_the_start_of_the_same_attempt_folds_into_its_end() {
        let id = JobId::new();
        let mut running = JobEvent::now(id, 2, JobStatus::Running, "w1");
        running.max_attempts = Some(4);
        running.submitted_at = Some(running.at);
        let mut end = JobEvent::now(id, 2, JobStatus::Succeeded, "w1");
        let mut other_attempt = JobEvent::now(id, 3, JobStatus::Succeeded, "w1");
        let mut other_job = JobEvent::now(JobId::new(), 2, JobStatus::Dead, "w1");
        assert!(!other_attempt.fold_start(&running));
        assert!(!other_job.fold_start(&running));
        assert_eq!(other_attempt.started_at, None);
        assert!(end.fold_start(&running));
        assert_eq!(end.started_at, Some(running.at));
        let back = JobEvent::from_bytes(&end.to_bytes()).expect("parses");
        assert_eq!(back.started_at, Some(running.at));
        // The start's facts about the job travel with the end.
        assert_eq!(back.max_attempts, Some(4));
        assert_eq!(back.submitted_at, Some(running.at));
    }
}
