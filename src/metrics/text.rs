//! The Prometheus text exposition format (version 0.0.4), written by hand for the series that
//! are rendered from the snapshot: a family header, then one line per series. Label values are
//! escaped here and nowhere else, so a user or node name with a quote, a backslash or a newline
//! can never break the output.
//!
//! Writing the text directly (instead of building a `prometheus` crate vector per family per
//! scrape) keeps a scrape of 10,000 jobs to one pass over the snapshot with no allocation per
//! series; see `BENCHMARKS.md`.

/// Prometheus metric types as the `# TYPE` line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    /// A Go-service name kept for compatibility whose suffix does not fit its real type.
    Untyped,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Untyped => "untyped",
        }
    }
}

/// Writes `# HELP` and `# TYPE` of a family. `help` is escaped (backslash and newline).
pub fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// Appends `name="value"` (with a leading comma unless `out` is empty or ends in `{`), the value
/// escaped as the exposition format requires: backslash, double quote and line feed.
pub fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() && !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A label set built from pairs, e.g. `job_id="1",node="n1"`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        label(&mut out, name, value);
    }
    out
}

/// One series line: `name{labels} value`. Non-finite values are skipped: a figure that is not a
/// number was not measured, and is never exported as one.
pub fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if !value.is_finite() {
        return;
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

/// Writes a finite value as the shortest text that reads back to it: whole numbers (most
/// figures: bytes, counts, seconds) as integers, others in `ryu`'s shortest form (which may
/// use an exponent, `1e-7`; the Prometheus parser reads both). A scrape writes hundreds of
/// thousands of values, and this is several times faster than `f64`'s `Display`.
fn push_value(out: &mut String, value: f64) {
    // Below 2^53 every whole f64 is exactly an i64.
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        out.push_str(itoa::Buffer::new().format(value as i64));
    } else {
        out.push_str(ryu::Buffer::new().format_finite(value));
    }
}

/// Like [`sample`] with one extra label appended to a prepared label set (written straight
/// into `out`: no label set is built per line).
pub fn sample_with(out: &mut String, name: &str, labels: &str, extra: (&str, &str), value: f64) {
    if !value.is_finite() {
        return;
    }
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    // `label` puts the comma unless `out` ends in `{`: right for an empty `labels` too.
    label(out, extra.0, extra.1);
    out.push_str("} ");
    push_value(out, value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let set = labels(&[("user", "a\"b\\c\nd"), ("node", "n1")]);
        assert_eq!(set, r#"user="a\"b\\c\nd",node="n1""#);
        let mut out = String::new();
        sample(&mut out, "m", &set, 1.5);
        assert_eq!(out, "m{user=\"a\\\"b\\\\c\\nd\",node=\"n1\"} 1.5\n");
        // UTF-8 passes through unchanged
        assert_eq!(labels(&[("user", "jürgen")]), "user=\"jürgen\"");
    }

    #[test]
    fn an_extra_label_joins_the_set_or_stands_alone() {
        let mut out = String::new();
        sample_with(&mut out, "m", "node=\"n1\"", ("state", "idle"), 1.0);
        sample_with(&mut out, "m", "", ("state", "a\"b"), 0.0);
        assert_eq!(
            out,
            "m{node=\"n1\",state=\"idle\"} 1\nm{state=\"a\\\"b\"} 0\n"
        );
    }

    #[test]
    fn help_is_escaped_and_type_written() {
        let mut out = String::new();
        header(&mut out, "m_total", Kind::Counter, "a\\b\nc");
        assert_eq!(out, "# HELP m_total a\\\\b\\nc\n# TYPE m_total counter\n");
    }

    #[test]
    fn values_are_plain_numbers_and_non_finite_ones_are_skipped() {
        let mut out = String::new();
        sample(&mut out, "m", "", 1e21);
        sample(&mut out, "m", "", 0.1);
        sample(&mut out, "m", "", 3.0);
        sample(&mut out, "m", "", f64::NAN);
        sample(&mut out, "m", "", f64::INFINITY);
        sample(&mut out, "m", "", -2.5e-7);
        sample(&mut out, "m", "", 9_007_199_254_740_991.0);
        assert_eq!(out, "m 1e21\nm 0.1\nm 3\nm -2.5e-7\nm 9007199254740991\n");
        // What is written reads back as the same value.
        for v in [0.1, 1e21, -2.5e-7, 123456.789, 5e-324, f64::MAX] {
            let mut line = String::new();
            sample(&mut line, "m", "", v);
            assert_eq!(line.trim_end()[2..].parse::<f64>().unwrap(), v);
        }
    }
}
