//! `/`: the overview. Per queue ready, unacked and consumers (the broker's, as the depth watch
//! last read them); of the last hour jobs in and out per second, the failure rate, the oldest
//! waiting job and run-time percentiles (the store's, so every replica shows the same and a
//! restart forgets nothing), with a chart per minute. `GET /ui/live` streams the same section
//! every few seconds over Server-Sent Events, or renders it once (`?fragment=1`) for polling.

use std::{collections::BTreeMap, convert::Infallible, fmt::Write as _, time::Duration};

use askama::Template;
use axum::{
    Extension,
    extract::{RawQuery, State},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use time::OffsetDateTime;

use super::{Chrome, PageError, render, shown_ms, shown_time};
use crate::{auth::Caller, state::AppState, store::dashboard::HourStats};

/// How often the live section is sent again.
pub const LIVE_EVERY: Duration = Duration::from_secs(3);

/// One queue's row.
pub struct QueueRow {
    pub name: String,
    pub kinds: String,
    pub ready: String,
    pub unacked: String,
    pub consumers: String,
}

/// The figures of the last hour, as shown.
pub struct StatsView {
    pub submitted: u64,
    pub finished: u64,
    pub rate_in: String,
    pub rate_out: String,
    pub failure_rate: String,
    pub oldest_waiting: String,
    pub p50: String,
    pub p95: String,
    pub by_status: Vec<(String, u64)>,
}

#[derive(Template)]
#[template(path = "overview_live.html")]
struct Live {
    queues: Vec<QueueRow>,
    stats: StatsView,
    chart: String,
    read_at: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    live: String,
}

/// Every queue of a known kind, with its kinds and depth.
pub(crate) fn queue_rows(state: &AppState) -> Vec<QueueRow> {
    let names = offload_shared::topology::Names::for_settings(&state.settings);
    let mut queues: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for known in state.kinds.all() {
        queues
            .entry(known.spec.queue.to_string())
            .or_default()
            .push(known.spec.name.to_string());
    }
    queues
        .into_iter()
        .map(|(queue, kinds)| {
            let depth = state
                .queue_stats
                .get(&names.work_queue(&queue.parse().unwrap_or_default()));
            let or_dash = |n: Option<String>| n.unwrap_or_else(|| "–".to_owned());
            QueueRow {
                ready: or_dash(depth.map(|d| d.ready.to_string())),
                unacked: or_dash(depth.and_then(|d| d.unacked).map(|n| n.to_string())),
                consumers: or_dash(depth.map(|d| d.consumers.to_string())),
                kinds: kinds.join(", "),
                name: queue,
            }
        })
        .collect()
}

/// Per second over an hour, as shown.
fn per_second(n: u64) -> String {
    format!("{:.2}", n as f64 / 3600.0)
}

/// The figures as shown.
fn stats_view(stats: &HourStats, now: OffsetDateTime) -> StatsView {
    let submitted: u64 = stats.submitted.iter().map(|(_, n)| n).sum();
    let finished: u64 = stats.finished.iter().map(|(_, n, _)| n).sum();
    let bad: u64 = stats.finished.iter().map(|(_, _, b)| b).sum();
    StatsView {
        submitted,
        finished,
        rate_in: per_second(submitted),
        rate_out: per_second(finished),
        failure_rate: if finished == 0 {
            "–".to_owned()
        } else {
            format!("{:.1} %", bad as f64 * 100.0 / finished as f64)
        },
        oldest_waiting: stats.oldest_waiting.map_or_else(
            || "none waiting".to_owned(),
            |t| {
                let ms = (now - t).whole_milliseconds().max(0);
                format!("{} ago", shown_ms(i64::try_from(ms).unwrap_or(i64::MAX)))
            },
        ),
        p50: stats
            .run_ms
            .map_or("–".to_owned(), |(p50, _)| shown_ms(p50)),
        p95: stats
            .run_ms
            .map_or("–".to_owned(), |(_, p95)| shown_ms(p95)),
        by_status: stats.by_status.clone(),
    }
}

/// An SVG bar chart of the last hour, a pair of bars per minute: submitted and finished (the
/// failed part of finished in red). Drawn on the server: no chart library, no script.
pub fn chart(stats: &HourStats) -> String {
    let mut submitted = [0u64; 60];
    let mut finished = [0u64; 60];
    let mut bad = [0u64; 60];
    for &(m, n) in &stats.submitted {
        if let Ok(i @ 0..60) = usize::try_from(m) {
            submitted[i] += n;
        }
    }
    for &(m, n, b) in &stats.finished {
        if let Ok(i @ 0..60) = usize::try_from(m) {
            finished[i] += n;
            bad[i] += b;
        }
    }
    let top = submitted
        .iter()
        .chain(finished.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height) = (600.0_f64, 120.0_f64);
    let slot = width / 60.0;
    let scale = |n: u64| (n as f64 / top as f64) * (height - 10.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {h}\" role=\"img\" aria-labelledby=\"chart-t\">\
         <title id=\"chart-t\">Jobs submitted (blue) and finished (green; failed or dead in red) per \
         minute over the last hour, at most {top} in a minute</title>",
        h = height + 14.0
    );
    for i in 0..60 {
        let x = i as f64 * slot;
        let (hi, ho, hb) = (scale(submitted[i]), scale(finished[i]), scale(bad[i]));
        let _ = write!(
            svg,
            "<rect class=\"in\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hi:.1}\"/>\
             <rect class=\"out\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ho:.1}\"/>\
             <rect class=\"bad\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hb:.1}\"/>",
            height - hi,
            slot * 0.45,
            x + slot * 0.45,
            height - ho,
            slot * 0.45,
            x + slot * 0.45,
            height - hb,
            slot * 0.45,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{y}\" font-size=\"11\" fill=\"#4a4a4a\">60 min ago</text>\
         <text x=\"{width}\" y=\"{y}\" font-size=\"11\" fill=\"#4a4a4a\" text-anchor=\"end\">now</text></svg>",
        y = height + 12.0
    );
    svg
}

/// The live section, rendered.
async fn live_section(state: &AppState) -> Result<String, PageError> {
    let now = OffsetDateTime::now_utc();
    let stats = state.store.hour_stats(now - time::Duration::HOUR).await?;
    let live = Live {
        queues: queue_rows(state),
        stats: stats_view(&stats, now),
        chart: chart(&stats),
        read_at: shown_time(Some(now)),
    };
    live.render()
        .map_err(|e| PageError(crate::error::ApiError::Internal(e.to_string()), None))
}

/// `GET /`: the overview (signed in), else the sign-in form.
pub async fn page(state: &AppState, caller: &Caller) -> Response {
    match live_section(state).await {
        Ok(live) => render(&Overview {
            chrome: Chrome::new(Some(caller), "/").live("overview"),
            live,
        }),
        Err(PageError(e, _)) => PageError(e, Some(caller.clone())).into_response(),
    }
}

/// `GET /ui/live`: the overview's live section every [`LIVE_EVERY`] over Server-Sent Events
/// (event `overview`, its HTML as data), or once with `?fragment=1`.
pub async fn live(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    if query.as_deref().is_some_and(|q| q.contains("fragment")) {
        return Ok(Html(live_section(&state).await?).into_response());
    }
    Ok(Sse::new(stream_of(state))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn stream_of(state: AppState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(LIVE_EVERY) => {}
                () = state.shutdown.cancelled() => return None,
            }
        }
        let event = match live_section(&state).await {
            Ok(html) => Event::default().event("overview").data(html),
            // The store is away for a moment: say so and keep the stream.
            Err(_) => Event::default()
                .event("unavailable")
                .data("the store is unavailable"),
        };
        Some((Ok(event), (state, false)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_bar_pair_per_minute_scaled_to_the_busiest() {
        let stats = HourStats {
            submitted: vec![(0, 10), (59, 5), (60, 99), (-1, 99)],
            finished: vec![(59, 10, 2)],
            ..HourStats::default()
        };
        let svg = chart(&stats);
        assert_eq!(svg.matches("class=\"in\"").count(), 60);
        assert!(
            svg.contains("at most 10 in a minute"),
            "out-of-range minutes are left out"
        );
        assert!(svg.contains("<title id=\"chart-t\">"));
    }

    #[test]
    fn the_hours_figures_read_plainly() {
        let now = OffsetDateTime::now_utc();
        let stats = HourStats {
            submitted: vec![(0, 3600)],
            finished: vec![(1, 100, 5)],
            oldest_waiting: Some(now - time::Duration::seconds(90)),
            run_ms: Some((120, 2500)),
            ..HourStats::default()
        };
        let v = stats_view(&stats, now);
        assert_eq!(v.rate_in, "1.00");
        assert_eq!(v.failure_rate, "5.0 %");
        assert_eq!(v.oldest_waiting, "1.5 min ago");
        assert_eq!((v.p50.as_str(), v.p95.as_str()), ("120 ms", "2.5 s"));
        assert_eq!(stats_view(&HourStats::default(), now).failure_rate, "–");
    }
}
