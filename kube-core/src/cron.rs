//! Cron schedules as Kubernetes' CronJobs accept them: the standard parser of
//! `github.com/robfig/cron/v3` (`cron.ParseStandard`), which kube-controller-manager and the
//! API server's validation use.
//!
//! - Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or `JAN`-`DEC`),
//!   day of week (0-6 or `SUN`-`SAT`; 7 is refused, as Kubernetes refuses it). Names are
//!   case-insensitive.
//! - In each field: `*` or `?` (every value), a value, a range `a-b`, a step `*/n`, `a-b/n` or
//!   `a/n` (from `a` to the field's maximum), and comma-separated lists of these.
//! - Day of month and day of week: if either field starts with `*` or `?` a day must match
//!   both, otherwise either (`0 0 1 * MON` runs on the 1st and on Mondays), as in Vixie cron.
//! - Descriptors: `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//!   `@hourly`, and `@every <duration>` (Go durations such as `90s`, `1h30m`).
//!
//! Times are computed in a time zone (IANA names such as `Europe/Berlin`, from the system's
//! tz database or a bundled copy). A wall-clock time a DST change skips runs shifted by the
//! gap (02:30 becomes 03:30), as Go's `time.Date` resolves it; a time it repeats runs once,
//! at its first occurrence.
//!
//! Why not a cron crate: `croner` accepts a superset (`L`, `W`, `#`, day of week 7, optional
//! seconds) and gives `?` another meaning, and `cron` wants seconds and numbers weekdays from
//! 1; either would accept schedules Kubernetes rejects. Parsing is robfig's grammar, written
//! here; time zone arithmetic is jiff's.
//!
//! ```
//! use kube_core::cron::Schedule;
//! let schedule = Schedule::parse("*/15 9-17 * * MON-FRI").unwrap();
//! let tz = kube_core::cron::time_zone(Some("UTC")).unwrap();
//! let t: jiff::Timestamp = "2026-01-05T09:07:00Z".parse().unwrap(); // a Monday
//! assert_eq!(schedule.next_after(t, &tz).unwrap().to_string(), "2026-01-05T09:15:00Z");
//! assert!(Schedule::parse("0 0 * * 7").is_err());
//! ```

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};

/// Why a schedule or time zone was refused, in robfig/cron's and Go's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// A five-field (or descriptor) schedule.
    Spec(Spec),
    /// `@every <duration>`: a constant delay in whole seconds (at least one).
    Every(u64),
}

/// The sets of a five-field schedule as bit masks; bit 63 marks a field written `*` or `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

const STAR: u64 = 1 << 63;

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
/// Month names, from 1.
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// Weekday names, from 0.
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn err(message: impl Into<String>) -> CronError {
    CronError(message.into())
}

/// The time zone of a CronJob's `spec.timeZone` (`None`: UTC, the zone our controller
/// manager runs in). Unknown names are refused as Go's `time.LoadLocation` refuses them.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None | Some("" | "UTC") => Ok(TimeZone::UTC),
        // Go treats "Local" as the process's zone; ours is UTC.
        Some("Local") => Ok(TimeZone::UTC),
        Some(name) => {
            // Go refuses names that are paths rather than zone names.
            if name.starts_with('/') || name.contains("..") || name.contains('\\') {
                return Err(err(format!("unknown time zone {name}")));
            }
            TimeZone::get(name).map_err(|_| err(format!("unknown time zone {name}")))
        }
    }
}

fn parse_number(text: &str) -> Result<u32, CronError> {
    // Go's strconv.Atoi: an optional sign, then decimal digits.
    let digits = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') {
        return Err(err(format!("negative number ({text}) not allowed")));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!(
            "failed to parse int from {text}: invalid syntax"
        )));
    }
    digits.parse().map_err(|_| {
        err(format!(
            "failed to parse int from {text}: value out of range"
        ))
    })
}

fn parse_value(text: &str, bounds: &Bounds) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        let index = u32::try_from(i).unwrap_or(0);
        return Ok(index + bounds.min);
    }
    parse_number(text)
}

fn parse_range(expr: &str, bounds: &Bounds) -> Result<u64, CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        start = bounds.min;
        end = bounds.max;
        extra = STAR;
    } else {
        start = parse_value(low_and_high[0], bounds)?;
        end = match low_and_high.len() {
            1 => start,
            2 => parse_value(low_and_high[1], bounds)?,
            _ => return Err(err(format!("too many hyphens: {expr}"))),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_number(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = bounds.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(err(format!("too many slashes: {expr}"))),
    };
    if start < bounds.min {
        return Err(err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        )));
    }
    if end > bounds.max {
        return Err(err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        )));
    }
    if start > end {
        return Err(err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(err(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits | extra)
}

fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, CronError> {
    field
        .split(',')
        .try_fold(0u64, |bits, expr| Ok(bits | parse_range(expr, bounds)?))
}

/// Go's `time.ParseDuration`, for `@every`: a sequence of decimal numbers with units (`ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`), in seconds (fractions dropped).
fn parse_go_duration(text: &str) -> Result<f64, CronError> {
    let invalid = || {
        err(format!(
            "failed to parse duration {text}: time: invalid duration \"{text}\""
        ))
    };
    let mut rest = text;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Ok(if negative { -total } else { total })
}

impl Schedule {
    /// Parses a schedule as `cron.ParseStandard` does.
    pub fn parse(spec: &str) -> Result<Self, CronError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(err("empty spec string"));
        }
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(err(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
        if let Some(descriptor) = spec.strip_prefix('@') {
            let fields = match descriptor {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(duration) = descriptor.strip_prefix("every ") {
                        let seconds = parse_go_duration(duration.trim())?;
                        // robfig: at least one second, sub-second parts dropped.
                        let whole = if seconds < 1.0 { 1 } else { seconds as u64 };
                        return Ok(Self::Every(whole));
                    }
                    return Err(err(format!("unrecognized descriptor: {spec}")));
                }
            };
            return Self::parse(fields);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        Ok(Self::Spec(Spec {
            minute: parse_field(fields[0], &MINUTES)?,
            hour: parse_field(fields[1], &HOURS)?,
            dom: parse_field(fields[2], &DOM)?,
            month: parse_field(fields[3], &MONTHS)?,
            dow: parse_field(fields[4], &DOW)?,
        }))
    }

    /// The first scheduled time strictly after `t`, in `tz`; `None` if there is none within
    /// five years (a schedule such as `0 0 30 2 *`), as robfig gives up.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Self::Every(seconds) => {
                let secs = i64::try_from(*seconds).ok()?;
                Timestamp::from_second(t.as_second().checked_add(secs)?).ok()
            }
            Self::Spec(spec) => spec.next_after(t, tz),
        }
    }
}

fn has(bits: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 63 && bits & (1 << v) != 0)
}

impl Spec {
    fn day_matches(&self, day: DateTime) -> bool {
        let dom = has(self.dom, day.day());
        let dow = has(self.dow, day.weekday().to_sunday_zero_offset());
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Walk wall-clock time in `tz` from the next whole minute, skipping whole months,
        // days and hours that cannot match.
        let local = tz.to_datetime(t);
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year().checked_add(5)?;
        let step = |dt: DateTime, span: Span| dt.checked_add(span).ok();
        while dt.year() <= limit {
            if !has(self.month, dt.month()) {
                dt = step(dt.first_of_month(), 1.month())?.start_of_day();
                continue;
            }
            if !self.day_matches(dt) {
                dt = step(dt.start_of_day(), 1.day())?;
                continue;
            }
            if !has(self.hour, dt.hour()) {
                dt = step(dt.with().minute(0).build().ok()?, 1.hour())?;
                continue;
            }
            if !has(self.minute, dt.minute()) {
                dt = step(dt, 1.minute())?;
                continue;
            }
            // A time skipped by a DST change is shifted by the gap; a repeated one is its
            // first occurrence.
            let at = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if at > t {
                return Some(at);
            }
            dt = step(dt, 1.minute())?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, tz: &str) -> String {
        let tz = time_zone(Some(tz)).unwrap();
        Schedule::parse(spec)
            .unwrap()
            .next_after(ts(after), &tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn kubernetes_syntax_is_accepted() {
        for spec in [
            "* * * * *",
            "*/1 * * * *",
            "0 */2 * * *",
            "5,10-20/5,59 0-23 1-31 JAN-dec sun-SAT",
            "0 0 ? * ?",
            "30 6/4 * * 1-5",
            "0 0 1 1 *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "  0   0 * * *  ",
        ] {
            assert!(Schedule::parse(spec).is_ok(), "{spec}");
        }
    }

    #[test]
    fn what_kubernetes_refuses_is_refused() {
        for (spec, message) in [
            ("0 0 * * 7", "end of range (7) above maximum (6)"),
            ("60 * * * *", "above maximum (59)"),
            ("* * 0 * *", "below minimum (1)"),
            ("* * * * * *", "expected exactly 5 fields, found 6"),
            ("* * * *", "expected exactly 5 fields, found 4"),
            ("0 0 L * *", "failed to parse int from L"),
            ("0 0 * * 1#2", "failed to parse int from 1#2"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1)",
            ),
            ("*/0 * * * *", "step of range should be a positive number"),
            ("1-2-3 * * * *", "too many hyphens"),
            ("*/2/3 * * * *", "too many slashes"),
            ("@reboot", "unrecognized descriptor"),
            ("TZ=UTC * * * * *", "use timeZone"),
            ("", "empty spec string"),
        ] {
            let e = Schedule::parse(spec).unwrap_err().to_string();
            assert!(e.contains(message), "{spec}: {e}");
        }
    }

    #[test]
    fn next_times_follow_the_fields() {
        assert_eq!(
            next("*/1 * * * *", "2026-03-01T10:00:30Z", "UTC"),
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            next("*/1 * * * *", "2026-03-01T10:01:00Z", "UTC"),
            "2026-03-01T10:02:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-03-01T10:00:00Z", "UTC"),
            "2026-03-01T11:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2026-01-31T12:00:00Z", "UTC"),
            "2026-02-01T00:00:00Z"
        );
        // 2026-01-01 is a Thursday; dom and dow both restricted: either matches.
        assert_eq!(
            next("0 0 15 * MON", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-05T00:00:00Z"
        );
        // One of them a star: both must match (a Monday that is in 1-7).
        assert_eq!(
            next("0 0 * * MON", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 0 ? * 0", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next("0 12 29 FEB *", "2026-01-01T00:00:00Z", "UTC"),
            "2028-02-29T12:00:00Z"
        );
        // "N/step" is N to the maximum.
        assert_eq!(
            next("50/5 * * * *", "2026-01-01T00:56:00Z", "UTC"),
            "2026-01-01T01:50:00Z"
        );
        assert_eq!(
            next("@every 90s", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-01T00:01:30Z"
        );
        let tz = time_zone(None).unwrap();
        assert!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(ts("2026-01-01T00:00:00Z"), &tz)
                .is_none()
        );
    }

    #[test]
    fn time_zones_shift_wall_clock_times_and_dst_gaps_run_after_them() {
        // 09:00 in New York in January is 14:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2026-01-10T00:00:00Z", "America/New_York"),
            "2026-01-10T14:00:00Z"
        );
        // On 2026-03-08 New York skips 02:00-03:00: a 02:30 run happens at 03:00 EDT.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T05:00:00Z", "America/New_York"),
            "2026-03-08T07:30:00Z"
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
        assert!(time_zone(Some("../etc/passwd")).is_err());
        assert!(time_zone(Some("Europe/Berlin")).is_ok());
    }
}
