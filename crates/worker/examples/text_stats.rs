//! A worker with one kind of its own, `text.stats` on the queue `text`: counts the words of a
//! text and names the most frequent ones. Copy it to start a worker of your own.
//!
//! Run it next to the API (same broker, same `OFFLOAD_QUEUE_PREFIX`):
//!
//! ```text
//! OFFLOAD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example text_stats
//! curl -s localhost:8080/jobs -H 'content-type: application/json' \
//!   -d '{"kind":"text.stats","payload":{"text":"the cat and the hat","top":2}}'
//! ```

use std::{collections::HashMap, process::ExitCode};

use offload_worker::{Job, JobContext, JobError, Settings, Worker, shutdown, telemetry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most words a result may list.
const MAX_TOP: u8 = 50;

/// The kind `text.stats`.
struct TextStats;

/// What to count. The API checks submitted payloads against this type's JSON Schema (announced
/// by the worker), so a payload with a misspelt field is refused with a 422 before it is queued.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TextPayload {
    /// The text whose words are counted.
    text: String,
    /// How many of the most frequent words to list (default 5, at most 50).
    #[schemars(range(max = 50))]
    top: Option<u8>,
}

/// What the job returns: its result in `GET /jobs/{id}`.
#[derive(Debug, Serialize, PartialEq)]
struct TextStatsResult {
    /// Words in the text.
    words: usize,
    /// Distinct words, ignoring case.
    distinct: usize,
    /// The most frequent words, most frequent first (ties in alphabetical order).
    top: Vec<WordCount>,
}

/// One word and how often it occurs.
#[derive(Debug, Serialize, PartialEq)]
struct WordCount {
    word: String,
    count: usize,
}

impl Job for TextStats {
    const KIND: &'static str = "text.stats";
    type Payload = TextPayload;
    type Output = TextStatsResult;

    fn queue(&self) -> &str {
        "text"
    }

    fn max_attempts(&self) -> Option<u32> {
        Some(3)
    }

    async fn run(&self, ctx: JobContext, p: TextPayload) -> Result<TextStatsResult, JobError> {
        let top = p.top.unwrap_or(5);
        if top > MAX_TOP {
            // The schema already says so; a producer that bypassed the API still gets a reason.
            return Err(JobError::permanent(format!(
                "top is {top}, at most {MAX_TOP}"
            )));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut words = 0;
        for (n, word) in p
            .text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            // A long text checks now and then whether the worker is stopping; giving up with an
            // error then returns the job to the queue without spending an attempt.
            if n % 10_000 == 0 && ctx.is_cancelled() {
                return Err(JobError::retryable("the worker is shutting down"));
            }
            *counts.entry(word.to_lowercase()).or_default() += 1;
            words += 1;
        }
        let distinct = counts.len();
        let mut ranked: Vec<WordCount> = counts
            .into_iter()
            .map(|(word, count)| WordCount { word, count })
            .collect();
        ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
        ranked.truncate(usize::from(top));
        Ok(TextStatsResult {
            words,
            distinct,
            top: ranked,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = shutdown::on_signal();
    let outcome = match Worker::builder(settings).job(TextStats).build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "text-stats worker cannot run");
            eprintln!("text_stats: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn counts_words_and_ranks_the_most_frequent() {
        let ctx = JobContext::standalone(TextStats::KIND, Duration::from_secs(5));
        let payload = TextPayload {
            text: "The cat and the hat. THE END".into(),
            top: Some(2),
        };
        let result = TextStats.run(ctx, payload).await.expect("counts");
        assert_eq!(result.words, 7);
        assert_eq!(result.distinct, 5);
        assert_eq!(
            result.top,
            [
                WordCount {
                    word: "the".into(),
                    count: 3
                },
                WordCount {
                    word: "and".into(),
                    count: 1
                },
            ]
        );
    }
}
