//! Input checks shared by every endpoint: lengths, ranges and required values. Each failure is a
//! message meant for the person who sent the request.

use std::fmt;

/// Longest id, name or header value accepted anywhere.
pub const MAX_NAME_LEN: usize = 255;
/// Most nodes one job may list (a whole large cluster fits).
pub const MAX_NODES: usize = 65_536;
/// Most GPU devices one job may list.
pub const MAX_GPU_DEVICES: usize = 1_024;

/// A rejected input value; the text goes to the client as the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(message: impl Into<String>) -> Self {
        ValidationError(message.into())
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValidationError {}

pub type Checked<T> = Result<T, ValidationError>;

/// A required, non-blank name of at most [`MAX_NAME_LEN`] characters, with no control characters.
/// `missing` is the message for an absent or blank value.
pub fn required_name(field: &str, value: Option<&str>, missing: &str) -> Checked<String> {
    match value.map(str::trim) {
        None | Some("") => Err(ValidationError::new(missing)),
        Some(v) => name(field, v).map(str::to_owned),
    }
}

/// An optional name: absent or blank is `None`; otherwise checked like [`required_name`].
pub fn optional_name(field: &str, value: Option<&str>) -> Checked<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => name(field, v).map(|v| Some(v.to_owned())),
    }
}

fn name<'a>(field: &str, value: &'a str) -> Checked<&'a str> {
    if value.chars().count() > MAX_NAME_LEN {
        return Err(ValidationError::new(format!(
            "{field} must be at most {MAX_NAME_LEN} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}

/// A list of names (node list, GPU devices): each checked, blanks refused, duplicates dropped
/// while keeping the first occurrence's order.
pub fn name_list(field: &str, values: &[String], max: usize) -> Checked<Vec<String>> {
    if values.len() > max {
        return Err(ValidationError::new(format!(
            "{field} must have at most {max} entries"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let v = required_name(
            field,
            Some(v),
            &format!("{field} entries must not be blank"),
        )?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// How far ahead of the server's clock a reported time may be (node clocks drift a little). The
/// same allowance applies to a sample taken before its job's recorded start: the start comes
/// from another node's prolog or from the server's clock, the sample from the agent's node.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// The earliest time any reported timestamp may carry: 2000-01-01T00:00:00Z. Nothing jobscope
/// observes is older; the bound keeps both databases' ranges (PostgreSQL refuses years before
/// 4713 BC, SQLite stores any text and would serve a year the API's schema cannot express).
pub const EARLIEST_TIME_SECONDS: i64 = 946_684_800;

/// The earliest accepted timestamp, as a time.
pub fn earliest_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(EARLIEST_TIME_SECONDS, 0).expect("a valid constant")
}

/// A reported time, truncated to microseconds (`now` when absent): before
/// [`EARLIEST_TIME_SECONDS`] or more than [`MAX_CLOCK_SKEW_SECONDS`] in the future is refused,
/// with a message naming `field`.
pub fn reported_time(
    field: &str,
    t: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Checked<chrono::DateTime<chrono::Utc>> {
    let t = t.map(crate::domain::job::truncate_micros).unwrap_or(now);
    if t > now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECONDS) {
        return Err(ValidationError::new(format!("{field} is in the future")));
    }
    past_bound(field, t)
}

/// A time that must not be before [`EARLIEST_TIME_SECONDS`] (query bounds, submit times).
pub fn past_bound(
    field: &str,
    t: chrono::DateTime<chrono::Utc>,
) -> Checked<chrono::DateTime<chrono::Utc>> {
    if t < earliest_time() {
        return Err(ValidationError::new(format!(
            "{field} must not be before 2000-01-01T00:00:00Z"
        )));
    }
    Ok(t)
}

/// A percentage in 0..=100 (finite).
pub fn percent(value: f64, message: &str) -> Checked<f64> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::new(message))
    }
}

/// The most megabytes a memory figure may say: 1 EiB (2^40 MB), so that its bytes (× 2^20)
/// still fit the database's 64-bit integers wherever they are computed (the reports' SQL).
pub const MAX_MEGABYTES: i64 = 1 << 40;

/// A non-negative amount of megabytes, rounded to whole megabytes; `message` for a negative
/// or non-finite value, a bound message past [`MAX_MEGABYTES`].
pub fn megabytes(value: f64, message: &str) -> Checked<i64> {
    if !value.is_finite() || value < 0.0 {
        return Err(ValidationError::new(message));
    }
    let rounded = value.round();
    if rounded > MAX_MEGABYTES as f64 {
        return Err(ValidationError::new(format!(
            "Memory usage must be at most {MAX_MEGABYTES} MB (1 EiB)"
        )));
    }
    Ok(rounded as i64)
}

/// A non-negative count.
pub fn count(field: &str, value: Option<i64>) -> Checked<Option<i64>> {
    match value {
        Some(v) if v < 0 => Err(ValidationError::new(format!(
            "{field} must be non-negative"
        ))),
        other => Ok(other),
    }
}

/// An integer in `lo..=hi`.
pub fn in_range(
    field: &str,
    value: Option<i64>,
    lo: i64,
    hi: i64,
    hint: &str,
) -> Checked<Option<i64>> {
    match value {
        Some(v) if v < lo || v > hi => Err(ValidationError::new(format!(
            "{field} must be between {lo} and {hi}{hint}"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            required_name("user", Some(" alice "), "User is required").unwrap(),
            "alice"
        );
        assert_eq!(
            required_name("user", Some("  "), "User is required")
                .unwrap_err()
                .0,
            "User is required"
        );
        assert_eq!(
            required_name("user", None, "User is required")
                .unwrap_err()
                .0,
            "User is required"
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(required_name("user", Some(&long), "-").is_err());
        assert!(required_name("user", Some(&"x".repeat(MAX_NAME_LEN)), "-").is_ok());
        assert!(required_name("user", Some("a\nb"), "-").is_err());
        assert_eq!(optional_name("account", Some("")).unwrap(), None);
    }

    #[test]
    fn name_lists_drop_duplicates_and_refuse_blanks() {
        let list = vec!["n1".to_string(), "n2".into(), "n1".into()];
        assert_eq!(name_list("node_list", &list, 10).unwrap(), vec!["n1", "n2"]);
        assert!(name_list("node_list", &["".to_string()], 10).is_err());
        assert!(name_list("node_list", &list, 2).is_err());
    }

    #[test]
    fn reported_times_may_not_be_far_in_the_future() {
        let now = chrono::Utc::now();
        let at = |t| reported_time("timestamp", Some(t), now);
        assert!(at(now + chrono::Duration::seconds(60)).is_ok());
        let err = at(now + chrono::Duration::seconds(301)).unwrap_err();
        assert!(err.0.starts_with("timestamp is in the future"), "{err}");
        assert_eq!(reported_time("timestamp", None, now).unwrap(), now);
    }

    #[test]
    fn reported_times_may_not_be_before_2000() {
        let now = chrono::Utc::now();
        let at = |s: &str| reported_time("collected_at", Some(s.parse().unwrap()), now);
        assert!(at("2000-01-01T00:00:00Z").is_ok());
        let err = at("1999-12-31T23:59:59Z").unwrap_err();
        assert_eq!(
            err.0,
            "collected_at must not be before 2000-01-01T00:00:00Z"
        );
        assert!(at("-9999-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn numbers_are_range_checked() {
        assert!(percent(100.0, "m").is_ok());
        assert!(percent(100.1, "m").is_err());
        assert!(percent(-0.1, "m").is_err());
        assert!(percent(f64::NAN, "m").is_err());
        assert_eq!(megabytes(1.6, "m").unwrap(), 2);
        assert!(megabytes(-1.0, "m").is_err());
        assert_eq!(megabytes(MAX_MEGABYTES as f64, "m").unwrap(), MAX_MEGABYTES);
        // One more would overflow a 64-bit byte count once multiplied by 2^20.
        assert!(megabytes(MAX_MEGABYTES as f64 + 1.0, "m").is_err());
        assert!(megabytes(9.0e12, "m").is_err());
        assert!(count("cpus", Some(-1)).is_err());
        assert_eq!(count("cpus", Some(0)).unwrap(), Some(0));
        assert!(in_range("exit_code", Some(256), 0, 255, "").is_err());
        assert!(in_range("exit_code", Some(255), 0, 255, "").is_ok());
    }
}
