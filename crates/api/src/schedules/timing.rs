//! When a schedule ticks: its cron expression (croner, seconds optional) read in its IANA time
//! zone (jiff, with its own copy of the time zone database, so a container without tzdata reads
//! the same). Pure, so every rule is a unit test.

use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use jiff::{Timestamp, tz::TimeZone};
use time::OffsetDateTime;

/// Longest cron expression accepted.
pub const MAX_CRON_LEN: usize = 200;

/// A schedule's cron expression and time zone, checked.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: TimeZone,
}

impl Timing {
    /// Reads `cron` (5 fields, or 6 with seconds first; croner's syntax, with `L`, `W`, `#` and
    /// names) in the time zone `timezone` (an IANA name such as `Europe/Paris`, or `UTC`).
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, String> {
        if cron.len() > MAX_CRON_LEN {
            return Err(format!(
                "cron is {} characters; at most {MAX_CRON_LEN} are accepted",
                cron.len()
            ));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| {
                format!(
                    "cron {:?} is not a cron expression (5 fields: minute hour day-of-month \
                     month day-of-week, or 6 with seconds first, e.g. \"*/10 * * * * *\"): {e}",
                    cron.chars().take(80).collect::<String>()
                )
            })?;
        let zone = TimeZone::get(timezone).map_err(|_| {
            format!(
                "timezone {:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Paris\")",
                timezone.chars().take(80).collect::<String>()
            )
        })?;
        Ok(Timing { cron: parsed, zone })
    }

    /// The first tick strictly after `after`; `None` if the expression never matches again
    /// (e.g. the 31st of February).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let at = Timestamp::from_nanosecond(after.unix_timestamp_nanos()).ok()?;
        let next = self
            .cron
            .find_next_occurrence(&at.to_zoned(self.zone.clone()), false)
            .ok()?;
        OffsetDateTime::from_unix_timestamp_nanos(next.timestamp().as_nanosecond()).ok()
    }
}

/// Every time zone name [`Timing::parse`] accepts, sorted.
pub fn zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn five_fields_tick_on_the_minute_and_six_on_the_second() {
        let t0 = datetime!(2026-12-04 10:00:30.5 UTC);
        let minutely = Timing::parse("* * * * *", "UTC").expect("valid");
        assert_eq!(
            minutely.next_after(t0),
            Some(datetime!(2026-12-04 10:01:00 UTC))
        );
        let every_ten = Timing::parse("*/10 * * * * *", "UTC").expect("valid");
        assert_eq!(
            every_ten.next_after(t0),
            Some(datetime!(2026-12-04 10:00:40 UTC))
        );
        // Strictly after: a tick at `after` itself is not the next one.
        let on_tick = datetime!(2026-12-04 10:00:40 UTC);
        assert_eq!(
            every_ten.next_after(on_tick),
            Some(datetime!(2026-12-04 10:00:50 UTC))
        );
    }

    #[test]
    fn a_time_zone_moves_the_tick_and_follows_its_daylight_saving() {
        let daily = Timing::parse("0 9 * * *", "Europe/Paris").expect("valid");
        // Winter: UTC+1.
        let winter = datetime!(2026-12-04 00:00 UTC);
        assert_eq!(
            daily.next_after(winter),
            Some(datetime!(2026-12-04 08:00 UTC))
        );
        // Summer: UTC+2.
        let summer = datetime!(2026-07-04 00:00 UTC);
        assert_eq!(
            daily.next_after(summer),
            Some(datetime!(2026-07-04 07:00 UTC))
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_why_and_impossible_dates_never_tick() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "every day",
            "0 0 1 13 *",
        ] {
            let err = Timing::parse(bad, "UTC").expect_err(bad);
            assert!(err.contains("cron"), "{bad}: {err}");
        }
        let err = Timing::parse("* * * * *", "Mars/Olympus").expect_err("no such zone");
        assert!(err.contains("IANA"), "{err}");
        assert!(Timing::parse(&"1,".repeat(150), "UTC").is_err());
        let never = Timing::parse("0 0 31 2 *", "UTC").expect("valid syntax");
        assert_eq!(never.next_after(datetime!(2026-12-04 00:00 UTC)), None);
    }

    #[test]
    fn every_expression_the_documents_pattern_matches_is_accepted() {
        use crate::openapi::rules::CRON_PATTERN;
        let pattern = offload_shared::kinds::KindSchema::compile(
            &serde_json::json!({"type": "string", "pattern": CRON_PATTERN}),
        )
        .expect("the pattern compiles");
        let minute = ["*", "*/1", "*/9", "0", "7", "10", "59"];
        let hour = ["*", "*/5", "0", "9", "19", "20", "23"];
        let dom = ["*", "*/3", "1", "9", "10", "29", "31"];
        let month = ["*", "*/9", "1", "2", "10", "12"];
        let dow = ["*", "*/6", "0", "6"];
        let t0 = time::macros::datetime!(2026-12-04 10:00 UTC);
        let mut seed: u64 = 7;
        let mut pick = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            usize::try_from(seed >> 33).unwrap_or(0) % n
        };
        for i in 0..2000 {
            let mut fields = Vec::new();
            if i % 2 == 0 {
                fields.push(minute[pick(minute.len())]);
            }
            fields.push(minute[pick(minute.len())]);
            fields.push(hour[pick(hour.len())]);
            fields.push(dom[pick(dom.len())]);
            fields.push(month[pick(month.len())]);
            fields.push(dow[pick(dow.len())]);
            let cron = fields.join(" ");
            assert!(
                pattern.check(&serde_json::json!(cron)).is_ok(),
                "{cron} matches"
            );
            let timing = Timing::parse(&cron, "UTC").unwrap_or_else(|e| panic!("{cron}: {e}"));
            // Every one either ticks or says it never does; none hangs.
            let _ = timing.next_after(t0);
        }
        for outside in [
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "a b c d e",
        ] {
            assert!(
                pattern.check(&serde_json::json!(outside)).is_err(),
                "{outside}"
            );
        }
    }

    #[test]
    fn every_listed_zone_is_accepted() {
        let names = zone_names();
        assert!(names.len() > 300, "{}", names.len());
        assert!(names.iter().any(|n| n == "UTC") && names.iter().any(|n| n == "Europe/Paris"));
        for name in &names {
            Timing::parse("0 * * * *", name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
