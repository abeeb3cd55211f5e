//! Maintenance windows: weekly recurring (`Sun 02:00-04:00`) and one-off ranges, each in an
//! explicit IANA time zone.
//!
//! In: window specifications from the configuration and an instant. Out: whether the instant
//! falls inside. No state.
//!
//! Windows are wall-clock times in their zone. On a spring-forward day a window whose start
//! does not exist opens at the first instant after the gap; on a fall-back day a wall-clock
//! hour that occurs twice is inside the window both times. A weekly window whose end is not
//! after its start ends on the next day (`Sat 23:00-01:00`).

use chrono::{DateTime, Datelike, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

/// A weekly recurring window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    pub day: Weekday,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl WeeklyWindow {
    /// Parses `Sun 02:00-04:00` (day names in English, three letters or full, any case).
    ///
    /// # Errors
    /// Says what part of the specification is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("`{text}` is not a weekly window like `Sun 02:00-04:00`: {why}");
        let (day, range) = text.trim().split_once(' ').ok_or_else(|| bad("no day"))?;
        let day: Weekday = day.parse().map_err(|_| bad("unknown day"))?;
        let (start, end) = range
            .trim()
            .split_once('-')
            .ok_or_else(|| bad("no `-` between times"))?;
        let start = parse_clock(start).ok_or_else(|| bad("bad start time"))?;
        let end = parse_clock(end).ok_or_else(|| bad("bad end time"))?;
        if start == end {
            return Err(bad("the window is empty"));
        }
        Ok(Self { day, start, end })
    }

    /// Returns whether `at` lies inside the window in zone `zone`.
    #[must_use]
    pub fn contains(&self, at: DateTime<Utc>, zone: Tz) -> bool {
        let local = at.with_timezone(&zone).naive_local();
        let (day, time) = (local.weekday(), local.time());
        if self.start < self.end {
            day == self.day && time >= self.start && time < self.end
        } else {
            (day == self.day && time >= self.start) || (day == self.day.succ() && time < self.end)
        }
    }
}

fn parse_clock(text: &str) -> Option<NaiveTime> {
    let text = text.trim();
    if text == "24:00" {
        return NaiveTime::from_hms_opt(23, 59, 59);
    }
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

/// Parses a one-off bound `2026-05-03 14:00` (or with `T`, optionally with seconds).
///
/// # Errors
/// Names the text that is not a date and time.
pub fn parse_local_datetime(text: &str) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time);
        }
    }
    Err(format!(
        "`{text}` is not a local date and time like `2026-05-03 14:00`"
    ))
}

/// Resolves a wall-clock time in `zone` to an instant: the earlier of two in an overlap, the
/// first instant after a gap.
#[must_use]
pub fn resolve(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    if let Some(time) = zone.from_local_datetime(&local).earliest() {
        return time.with_timezone(&Utc);
    }
    // Inside a gap: step forward by minutes to the first wall-clock time that exists.
    let mut probe = local;
    for _ in 0..(24 * 60) {
        probe += chrono::Duration::minutes(1);
        if let Some(time) = zone.from_local_datetime(&probe).earliest() {
            return time.with_timezone(&Utc);
        }
    }
    local.and_utc()
}

/// A one-off window `[from, until)` in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneOffWindow {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl OneOffWindow {
    /// Resolves the two wall-clock bounds in `zone`.
    ///
    /// # Errors
    /// Fails when the window does not end after it starts.
    pub fn new(from: NaiveDateTime, until: NaiveDateTime, zone: Tz) -> Result<Self, String> {
        let window = Self {
            from: resolve(from, zone),
            until: resolve(until, zone),
        };
        if window.until <= window.from {
            return Err(format!(
                "the window ends ({until}) before it starts ({from})"
            ));
        }
        Ok(window)
    }

    /// Returns whether `at` lies inside.
    #[must_use]
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.from && at < self.until
    }
}

/// An IANA time zone read from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub Tz);

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<Tz>().map(Zone).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an IANA time zone such as `Europe/Berlin` or `UTC`"
            ))
        })
    }
}

impl<'de> Deserialize<'de> for WeeklyWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A one-off bound as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime(pub NaiveDateTime);

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_local_datetime(&text)
            .map(LocalTime)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid")
            .with_timezone(&Utc)
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn weekly_windows_parse_and_reject_nonsense() {
        let window = WeeklyWindow::parse("Sun 02:00-04:00").expect("valid");
        assert_eq!(window.day, Weekday::Sun);
        assert!(WeeklyWindow::parse("sunday 2:00-4:00").is_ok());
        for bad in [
            "Sun",
            "Sun 02:00",
            "Funday 02:00-04:00",
            "Sun 25:00-26:00",
            "Sun 02:00-02:00",
            "",
        ] {
            assert!(WeeklyWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_weekly_window_holds_in_its_own_zone() {
        let window = WeeklyWindow::parse("Sun 02:00-04:00").expect("valid");
        // 2026-07-05 is a Sunday; Berlin is UTC+2 in summer.
        assert!(window.contains(utc("2026-07-05T00:30:00Z"), BERLIN));
        assert!(!window.contains(utc("2026-07-05T02:30:00Z"), BERLIN));
        assert!(window.contains(utc("2026-07-05T02:30:00Z"), chrono_tz::UTC));
        assert!(
            !window.contains(utc("2026-07-04T00:30:00Z"), BERLIN),
            "Saturday"
        );
    }

    #[test]
    fn on_spring_forward_the_window_opens_after_the_gap() {
        // 2026-03-29, Berlin: 02:00 jumps to 03:00 (01:00Z). 02:00-04:00 is one real hour.
        let window = WeeklyWindow::parse("Sun 02:00-04:00").expect("valid");
        assert!(
            !window.contains(utc("2026-03-29T00:59:00Z"), BERLIN),
            "01:59 CET"
        );
        assert!(
            window.contains(utc("2026-03-29T01:00:00Z"), BERLIN),
            "03:00 CEST"
        );
        assert!(
            window.contains(utc("2026-03-29T01:59:00Z"), BERLIN),
            "03:59 CEST"
        );
        assert!(
            !window.contains(utc("2026-03-29T02:00:00Z"), BERLIN),
            "04:00 CEST"
        );
    }

    #[test]
    fn on_fall_back_the_repeated_hour_is_inside_twice() {
        // 2026-10-25, Berlin: 03:00 CEST falls back to 02:00 CET (01:00Z).
        let window = WeeklyWindow::parse("Sun 02:00-03:00").expect("valid");
        assert!(
            window.contains(utc("2026-10-25T00:30:00Z"), BERLIN),
            "02:30 CEST"
        );
        assert!(
            window.contains(utc("2026-10-25T01:30:00Z"), BERLIN),
            "02:30 CET"
        );
        assert!(
            !window.contains(utc("2026-10-25T02:00:00Z"), BERLIN),
            "03:00 CET"
        );
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_day() {
        let window = WeeklyWindow::parse("Sat 23:00-01:00").expect("valid");
        assert!(window.contains(utc("2026-07-04T23:30:00Z"), chrono_tz::UTC));
        assert!(window.contains(utc("2026-07-05T00:30:00Z"), chrono_tz::UTC));
        assert!(!window.contains(utc("2026-07-05T01:00:00Z"), chrono_tz::UTC));
        assert!(!window.contains(utc("2026-07-04T22:59:00Z"), chrono_tz::UTC));
    }

    #[test]
    fn one_off_windows_resolve_gaps_and_overlaps() {
        let from = parse_local_datetime("2026-03-29 02:30").expect("valid");
        let until = parse_local_datetime("2026-03-29T05:00").expect("valid");
        let window = OneOffWindow::new(from, until, BERLIN).expect("valid");
        assert_eq!(
            window.from,
            utc("2026-03-29T01:00:00Z"),
            "first instant after the gap"
        );
        assert!(window.contains(utc("2026-03-29T02:59:00Z")));
        assert!(!window.contains(utc("2026-03-29T03:00:00Z")));

        let overlap = parse_local_datetime("2026-10-25 02:30").expect("valid");
        assert_eq!(
            resolve(overlap, BERLIN),
            utc("2026-10-25T00:30:00Z"),
            "the earlier one"
        );

        assert!(OneOffWindow::new(until, from, BERLIN).is_err());
        assert!(parse_local_datetime("yesterday").is_err());
    }
}
