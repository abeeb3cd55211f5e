//! Reads the times a question is bounded by: `24h`, `7d`, an RFC 3339 time or a local date.
//!
//! In: the text a user typed and the moment that counts as now. Out: an instant with its UTC
//! offset. No state.

use chrono::{DateTime, FixedOffset, Local, LocalResult, NaiveDate, NaiveDateTime, TimeZone};

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {text:?}: expected a span before now such as 30m, 24h, 7d or 2w, an RFC 3339 \
     time such as 2026-05-03T14:32:11+02:00, or a local date or time such as 2026-05-03 or \
     \"2026-05-03 14:32:11\""
)]
pub struct TimeError {
    /// What was typed, control characters escaped.
    pub text: String,
}

/// Reads `text` as a time: a span before `now` (`90s`, `30m`, `24h`, `7d`, `2w`), an RFC 3339
/// time, or a date or date and time in the local time zone.
///
/// # Errors
/// Text that is none of these.
pub fn parse_time(
    text: &str,
    now: DateTime<FixedOffset>,
) -> Result<DateTime<FixedOffset>, TimeError> {
    let error = || TimeError {
        text: crate::event::escape_control(text).into_owned(),
    };
    let trimmed = text.trim();

    if let Some(span) = parse_span(trimmed) {
        return now.checked_sub_signed(span).ok_or_else(error);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time);
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(trimmed, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(error)?;
    match Local.from_local_datetime(&naive) {
        LocalResult::Single(time) | LocalResult::Ambiguous(time, _) => Ok(time.fixed_offset()),
        // A time inside a spring-forward gap: the first moment after it.
        LocalResult::None => Local
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|time| time.fixed_offset())
            .ok_or_else(error),
    }
}

/// Reads `24h`, `7d` and their kin into a span.
fn parse_span(text: &str) -> Option<chrono::Duration> {
    let unit = text.chars().last()?;
    let count: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if count < 0 {
        return None;
    }
    let seconds_per_unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    chrono::Duration::try_seconds(count.checked_mul(seconds_per_unit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-05-03T12:00:00+00:00").expect("valid time")
    }

    fn at(text: &str) -> Result<String, TimeError> {
        parse_time(text, now()).map(|t| t.to_rfc3339())
    }

    #[test]
    fn spans_count_back_from_now() {
        assert_eq!(at("24h").as_deref(), Ok("2026-05-02T12:00:00+00:00"));
        assert_eq!(at("7d").as_deref(), Ok("2026-04-26T12:00:00+00:00"));
        assert_eq!(at("2w").as_deref(), Ok("2026-04-19T12:00:00+00:00"));
        assert_eq!(at("30m").as_deref(), Ok("2026-05-03T11:30:00+00:00"));
        assert_eq!(at("0s").as_deref(), Ok("2026-05-03T12:00:00+00:00"));
    }

    #[test]
    fn absolute_times_keep_their_offset() {
        assert_eq!(
            at("2026-05-01T08:00:00+02:00").as_deref(),
            Ok("2026-05-01T08:00:00+02:00")
        );
        assert_eq!(
            at("2026-05-01T06:00:00Z").as_deref(),
            Ok("2026-05-01T06:00:00+00:00")
        );
    }

    #[test]
    fn nonsense_is_an_error_that_says_what_is_accepted() {
        for bad in [
            "",
            "yesterday",
            "24",
            "h",
            "-5d",
            "99999999999999999w",
            "7d\u{1b}[2J",
        ] {
            let err = at(bad).expect_err(bad);
            assert!(err.to_string().contains("24h"), "{err}");
            assert!(!err.to_string().contains('\u{1b}'), "{err}");
        }
    }
}
