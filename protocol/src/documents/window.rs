//! Maintenance windows (`window` for the whole fleet, `groups/<group>/window` per group):
//! recurring times (days of the week, a local start time, a length, an IANA time zone) in
//! which an upgrade may dispatch new hosts; and the arithmetic on them — whether a window
//! is open at an instant, and when it next opens — done in the window's time zone, so
//! daylight-saving changes move the opening with the local clock.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::{Document, Timestamp, schema};

/// How far ahead the next opening is looked for (a weekly window always opens within it).
const HORIZON_DAYS: i64 = 8;
/// The longest window: a week (longer would always be open).
const MAX_LENGTH: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The shortest window.
const MIN_LENGTH: std::time::Duration = std::time::Duration::from_secs(60);

/// A day of the week, as stored (`mon` … `sun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    fn of(weekday: Weekday) -> Day {
        match weekday {
            Weekday::Monday => Day::Mon,
            Weekday::Tuesday => Day::Tue,
            Weekday::Wednesday => Day::Wed,
            Weekday::Thursday => Day::Thu,
            Weekday::Friday => Day::Fri,
            Weekday::Saturday => Day::Sat,
            Weekday::Sunday => Day::Sun,
        }
    }
}

/// One recurring window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The days it opens on (local to `time_zone`).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub days: Vec<Day>,
    /// Local opening time, `HH:MM` or `HH:MM:SS` (24-hour). On a day the clocks skip it, it opens at the
    /// first local time after the gap; on a day it happens twice, the first time.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")
    )]
    pub start: String,
    /// How long it stays open (elapsed time, e.g. `2h`, `90m`): 1 minute to 7 days.
    pub duration: String,
    /// IANA time zone, e.g. `Europe/Berlin` or `UTC`.
    pub time_zone: String,
}

/// `window` and `groups/<group>/window`: an upgrade dispatches a host only while one of the
/// fleet's windows (if any) and one of its group's windows (if any) are open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Windows {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The windows (at least one).
    pub windows: Vec<Window>,
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When they were set.
    pub since: Timestamp,
}

impl Document for Windows {
    const KIND: &'static str = "maintenance windows";
}

/// A window field that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WindowError {
    /// The field, e.g. `windows[0].time_zone`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A window, checked and ready for arithmetic.
#[derive(Debug, Clone)]
pub struct Rule {
    days: Vec<Day>,
    start: Time,
    length: jiff::SignedDuration,
    tz: TimeZone,
}

impl Window {
    /// Checks every field (errors name it, under `at`, e.g. `windows[1]`).
    pub fn rule(&self, at: &str) -> Result<Rule, WindowError> {
        let refuse = |field: &str, reason: String| WindowError {
            field: format!("{at}.{field}"),
            reason,
        };
        if self.days.is_empty() {
            return Err(refuse(
                "days",
                "must name at least one day (mon … sun)".into(),
            ));
        }
        let start = parse_start(&self.start).ok_or_else(|| {
            refuse(
                "start",
                format!(
                    "must be HH:MM or HH:MM:SS (00:00 … 23:59:59), got {:?}",
                    self.start
                ),
            )
        })?;
        let length = humantime::parse_duration(&self.duration)
            .map_err(|e| refuse("duration", format!("{:?}: {e}", self.duration)))?;
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(refuse(
                "duration",
                format!("must be 1m … 7d, got {}", self.duration),
            ));
        }
        let tz = TimeZone::get(&self.time_zone).map_err(|_| {
            refuse(
                "time_zone",
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)",
                    self.time_zone
                ),
            )
        })?;
        let length = jiff::SignedDuration::try_from(length)
            .map_err(|e| refuse("duration", e.to_string()))?;
        Ok(Rule {
            days: self.days.clone(),
            start,
            length,
            tz,
        })
    }
}

/// `HH:MM` or `HH:MM:SS`, two digits each.
fn parse_start(text: &str) -> Option<Time> {
    let mut parts = text.split(':');
    let mut field = || -> Option<i8> {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (h, m) = (field()?, field()?);
    let s = if text.len() > 5 { field()? } else { 0 };
    if parts.next().is_some() {
        return None;
    }
    Time::new(h, m, s, 0).ok()
}

impl Rule {
    /// The instants it opens at whose local date lies within `from ..= to`.
    fn openings(&self, from: Date, to: Date) -> Vec<jiff::Timestamp> {
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            if self.days.contains(&Day::of(day.weekday()))
                && let Ok(z) = day.to_datetime(self.start).to_zoned(self.tz.clone())
            {
                out.push(z.timestamp());
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        out
    }

    /// Local dates around `t` whose openings can matter: back far enough for a window
    /// still open, ahead for the next opening.
    fn around(&self, t: jiff::Timestamp) -> Vec<jiff::Timestamp> {
        let today = t.to_zoned(self.tz.clone()).date();
        let back = self.length.as_secs() / 86_400 + 1;
        let from = today
            .checked_sub(jiff::Span::new().days(back))
            .unwrap_or(today);
        let to = today
            .checked_add(jiff::Span::new().days(HORIZON_DAYS))
            .unwrap_or(today);
        self.openings(from, to)
    }

    /// Whether it is open at `t` (opening included, closing excluded).
    pub fn is_open(&self, t: jiff::Timestamp) -> bool {
        self.around(t)
            .into_iter()
            .any(|s| s <= t && s.checked_add(self.length).is_ok_and(|end| t < end))
    }

    /// The first opening after `t`.
    pub fn next_opening(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        self.around(t).into_iter().find(|s| *s > t)
    }
}

/// Whether dispatching is allowed at `t` under every set of windows in `sets` (each set: one
/// of its windows is open; an empty set allows everything).
pub fn allowed(sets: &[&[Rule]], t: jiff::Timestamp) -> bool {
    sets.iter()
        .all(|rules| rules.is_empty() || rules.iter().any(|r| r.is_open(t)))
}

/// When dispatching is next allowed under `sets` (see [`allowed`]), from `t` on: `t` itself
/// if allowed now; `None` if not within the next week. Every set being open together starts
/// at one of their openings, so those are the only candidates.
pub fn next_allowed(sets: &[&[Rule]], t: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if allowed(sets, t) {
        return Some(t);
    }
    let mut candidates: Vec<jiff::Timestamp> = sets
        .iter()
        .flat_map(|rules| rules.iter())
        .flat_map(|r| r.around(t))
        .filter(|s| *s > t)
        .collect();
    candidates.sort();
    candidates.into_iter().find(|c| allowed(sets, *c))
}

/// Checks a whole set of windows: at least one, each valid (errors name
/// `windows[i].<field>`).
pub fn rules(windows: &[Window]) -> Result<Vec<Rule>, WindowError> {
    if windows.is_empty() {
        return Err(WindowError {
            field: "windows".into(),
            reason: "must hold at least one window (clear them with DELETE instead)".into(),
        });
    }
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| w.rule(&format!("windows[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[Day], start: &str, duration: &str, tz: &str) -> Window {
        Window {
            days: days.to_vec(),
            start: start.into(),
            duration: duration.into(),
            time_zone: tz.into(),
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("timestamp")
    }

    fn rule(days: &[Day], start: &str, duration: &str, tz: &str) -> Rule {
        window(days, start, duration, tz).rule("w").expect("valid")
    }

    #[test]
    fn open_from_the_start_for_the_length_on_the_listed_days() {
        // 2026-12-07 is a Monday.
        let r = rule(&[Day::Mon], "22:00", "3h", "UTC");
        assert!(!r.is_open(at("2026-12-07T21:59:59Z")));
        assert!(r.is_open(at("2026-12-07T22:00:00Z")));
        // Wraps past midnight into Tuesday, closing after the length.
        assert!(r.is_open(at("2026-12-08T00:30:00Z")));
        assert!(!r.is_open(at("2026-12-08T01:00:00Z")));
        assert!(!r.is_open(at("2026-12-08T22:30:00Z")), "not on Tuesday");
        assert_eq!(
            r.next_opening(at("2026-12-08T01:00:00Z")),
            Some(at("2026-12-14T22:00:00Z"))
        );
    }

    #[test]
    fn a_long_window_wraps_over_the_week_end() {
        // Saturday 20:00 for 36 h: open through Sunday into Monday 08:00.
        let r = rule(&[Day::Sat], "20:00", "36h", "UTC");
        assert!(r.is_open(at("2026-12-13T12:00:00Z")));
        assert!(r.is_open(at("2026-12-14T07:59:00Z")));
        assert!(!r.is_open(at("2026-12-14T08:00:00Z")));
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        // Berlin: 02:00 on 2026-03-29 jumps to 03:00 (CET → CEST); 03:00 on 2026-10-25
        // falls back to 02:00.
        let r = rule(&[Day::Sun, Day::Mon], "01:30", "1h", "Europe/Berlin");
        // Before the change 01:30 local is 00:30 UTC, after it 23:30 UTC the day before.
        assert!(r.is_open(at("2026-03-29T00:30:00Z")));
        assert_eq!(
            r.next_opening(at("2026-03-29T01:00:00Z")),
            Some(at("2026-03-29T23:30:00Z"))
        );
        // A start inside the skipped hour opens right after the gap (03:00 CEST = 01:00Z).
        let gap = rule(&[Day::Sun], "02:30", "1h", "Europe/Berlin");
        assert_eq!(
            gap.next_opening(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:30:00Z"))
        );
        // A start in the repeated hour opens the first time (02:30 CEST = 00:30Z).
        assert_eq!(
            gap.next_opening(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
        // The length is elapsed time: 1 h from 00:30Z, whatever the wall clock does.
        assert!(gap.is_open(at("2026-10-25T01:29:00Z")));
        assert!(!gap.is_open(at("2026-10-25T01:30:00Z")));
    }

    #[test]
    fn fleet_and_group_windows_must_both_be_open() {
        let fleet = [rule(&[Day::Mon], "20:00", "4h", "UTC")];
        let group = [rule(&[Day::Mon], "22:00", "4h", "UTC")];
        let sets: [&[Rule]; 2] = [&fleet, &group];
        assert!(!allowed(&sets, at("2026-12-07T21:00:00Z")));
        assert!(allowed(&sets, at("2026-12-07T23:00:00Z")));
        assert_eq!(
            next_allowed(&sets, at("2026-12-07T19:00:00Z")),
            Some(at("2026-12-07T22:00:00Z"))
        );
        assert!(
            allowed(&[&[], &[]], at("2026-12-07T19:00:00Z")),
            "no windows: always"
        );
        // Windows that never overlap never allow.
        let other = [rule(&[Day::Tue], "20:00", "1h", "UTC")];
        assert_eq!(
            next_allowed(&[&fleet, &other], at("2026-12-07T19:00:00Z")),
            None
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (window(&[], "10:00", "1h", "UTC"), "w.days"),
            (window(&[Day::Mon], "24:00", "1h", "UTC"), "w.start"),
            (window(&[Day::Mon], "9:00", "1h", "UTC"), "w.start"),
            (window(&[Day::Mon], "09:00:60", "1h", "UTC"), "w.start"),
            (window(&[Day::Mon], "09:00:00:00", "1h", "UTC"), "w.start"),
            (window(&[Day::Mon], "+9:00", "1h", "UTC"), "w.start"),
            (window(&[Day::Mon], "10:00", "soon", "UTC"), "w.duration"),
            (window(&[Day::Mon], "10:00", "30s", "UTC"), "w.duration"),
            (window(&[Day::Mon], "10:00", "8days", "UTC"), "w.duration"),
            (
                window(&[Day::Mon], "10:00", "1h", "Mars/Olympus"),
                "w.time_zone",
            ),
        ];
        for (w, field) in cases {
            let err = w.rule("w").expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        assert_eq!(rules(&[]).expect_err("empty").field, "windows");
        assert!(
            window(&[Day::Mon], "09:00:30", "1h", "UTC")
                .rule("w")
                .is_ok()
        );
        let days: Result<Vec<Day>, _> = serde_json::from_str(r#"["mon","sunday"]"#);
        assert!(days.is_err());
    }
}
