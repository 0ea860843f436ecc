//! A job's output (stdout, stderr) as jobscope keeps it: which stream, how a run of stored
//! chunks renders as text (skipped ranges as one marker line, invalid UTF-8 replaced only
//! here), where a line page starts and ends, and Slurm's output filename patterns. Pure: the
//! store keeps the bytes, the API and the agent use these rules.

use std::fmt;
use std::str::FromStr;

/// One of a job's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub const ALL: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogStream {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            _ => Err(()),
        }
    }
}

/// Why the agent could not read a job's output file; recorded on the job's log as
/// `log_unavailable` (the message), logged once by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogUnavailable {
    /// The file (or what a symlink points at) belongs to another uid.
    NotOwned,
    /// The path is a symlink (opened with `O_NOFOLLOW`).
    Symlink,
    /// A directory, fifo, device or socket: never read by a root agent.
    NotRegularFile,
}

impl LogUnavailable {
    pub const ALL: [LogUnavailable; 3] = [
        LogUnavailable::NotOwned,
        LogUnavailable::Symlink,
        LogUnavailable::NotRegularFile,
    ];

    /// The wire code (`?unavailable=` of the agent's POST).
    pub fn code(self) -> &'static str {
        match self {
            LogUnavailable::NotOwned => "not_owned",
            LogUnavailable::Symlink => "symlink",
            LogUnavailable::NotRegularFile => "not_regular_file",
        }
    }

    /// What the job's log says.
    pub fn message(self) -> &'static str {
        match self {
            LogUnavailable::NotOwned => "not owned by the job's user",
            LogUnavailable::Symlink => "the output path is a symbolic link",
            LogUnavailable::NotRegularFile => "the output path is not a regular file",
        }
    }

    pub fn from_code(code: &str) -> Option<LogUnavailable> {
        LogUnavailable::ALL.into_iter().find(|u| u.code() == code)
    }
}

/// One stored piece of a stream: `length` bytes from `start`; `data: None` is a skipped range
/// (the agent's rate limit, or the per-job cap trimming the oldest tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start: i64,
    pub length: i64,
    pub data: Option<Vec<u8>>,
}

impl Chunk {
    pub fn end(&self) -> i64 {
        self.start + self.length
    }
}

/// The line that stands for `n` skipped bytes.
pub fn skip_marker(n: i64) -> String {
    format!("[jobscope: {n} bytes of output skipped]\n")
}

/// Renders chunks (in offset order) as bytes: data as it is, a skipped range as its marker
/// line. The marker ends the line it falls in (a line cut short by the skip is completed by the
/// marker), so every skipped range is exactly one newline and line numbers can be counted from
/// the stored newline counts. `from` cuts the first chunk (a page that starts inside it); a
/// skipped range is rendered whole or not at all.
pub fn render(chunks: &[Chunk], from: i64, out: &mut Vec<u8>) {
    for chunk in chunks {
        match &chunk.data {
            Some(data) => {
                let skip = (from - chunk.start).clamp(0, chunk.length) as usize;
                out.extend_from_slice(&data[skip.min(data.len())..]);
            }
            None => out.extend_from_slice(skip_marker(chunk.length).as_bytes()),
        }
    }
}

/// How many bytes of `bytes` end on a character boundary: an incomplete UTF-8 sequence at the
/// end (at most 3 bytes, the start of a character whose rest has not arrived) is held back, so
/// a character split between two chunks is not rendered as two replacement characters.
pub fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=3.min(n) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return n, // ASCII or an invalid lead: nothing to wait for
        };
        return if back < needed { n - back } else { n };
    }
    n
}

/// Text of rendered bytes: invalid UTF-8 becomes U+FFFD here and only here.
pub fn to_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of `text` from the 1-based `first` (a negative `first` counts from the end, like
/// `tail -n`: `-10` is the last ten), at most `count`. A last line without its newline is a
/// line. Returns the lines' byte range in `text` and the 1-based number of the first line.
pub fn line_window(text: &[u8], first: i64, count: i64) -> (std::ops::Range<usize>, i64) {
    // Start of every line.
    let mut starts = vec![0usize];
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' && i + 1 < text.len() {
            starts.push(i + 1);
        }
    }
    let total = if text.is_empty() {
        0
    } else {
        starts.len() as i64
    };
    let first_index = if first < 0 {
        (total + first).max(0)
    } else {
        (first - 1).clamp(0, total)
    };
    let end_index = (first_index + count.max(0)).min(total);
    let at = |i: i64| {
        if i >= total {
            text.len()
        } else {
            starts[i as usize]
        }
    };
    (at(first_index)..at(end_index), first_index + 1)
}

/// Expands Slurm's filename patterns in an output path where they are still there (`%j` job
/// id, `%A` array master id, `%a` array index, `%u` user, `%x` job name, `%N` first node,
/// `%%` a percent sign; `%` followed by digits pads, as `%4j`). A pattern whose value is
/// unknown is left as it is; Slurm's other patterns too.
pub fn expand_output_path(pattern: &str, values: &PathValues<'_>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let width: usize = after[..digits].parse().unwrap_or(0).min(10);
        let Some(letter) = after[digits..].chars().next() else {
            out.push_str(&rest[at..]);
            return out;
        };
        let value = match letter {
            '%' if digits == 0 => Some("%".to_owned()),
            'j' => values.job_id.map(str::to_owned),
            'A' => values.array_job_id.or(values.job_id).map(str::to_owned),
            'a' => values.array_task_id.map(str::to_owned),
            'u' => values.user.map(str::to_owned),
            'x' => values.job_name.map(str::to_owned),
            'N' => values.node.map(str::to_owned),
            _ => None,
        };
        let used = 1 + digits + letter.len_utf8();
        match value {
            Some(v) if letter != '%' && v.bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&format!("{v:0>width$}"))
            }
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[at..at + used]),
        }
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    out
}

/// What [`expand_output_path`] substitutes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathValues<'a> {
    pub job_id: Option<&'a str>,
    pub array_job_id: Option<&'a str>,
    pub array_task_id: Option<&'a str>,
    pub user: Option<&'a str>,
    pub job_name: Option<&'a str>,
    pub node: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_reasons_round_trip() {
        for s in LogStream::ALL {
            assert_eq!(s.as_str().parse::<LogStream>(), Ok(s));
        }
        assert!("both".parse::<LogStream>().is_err());
        for u in LogUnavailable::ALL {
            assert_eq!(LogUnavailable::from_code(u.code()), Some(u));
        }
        assert_eq!(
            LogUnavailable::NotOwned.message(),
            "not owned by the job's user"
        );
    }

    #[test]
    fn rendering_marks_skipped_ranges_once() {
        let chunks = vec![
            Chunk {
                start: 0,
                length: 4,
                data: Some(b"ab\nc".to_vec()),
            },
            Chunk {
                start: 4,
                length: 100,
                data: None,
            },
            Chunk {
                start: 104,
                length: 3,
                data: Some(b"xy\n".to_vec()),
            },
        ];
        let mut out = Vec::new();
        render(&chunks, 2, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nc[jobscope: 100 bytes of output skipped]\nxy\n"
        );
    }

    #[test]
    fn split_characters_are_held_back() {
        let snow = "a☃".as_bytes(); // 'a' + 3 bytes
        assert_eq!(complete_utf8_prefix(snow), 4);
        assert_eq!(complete_utf8_prefix(&snow[..3]), 1);
        assert_eq!(complete_utf8_prefix(&snow[..2]), 1);
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        assert_eq!(complete_utf8_prefix(b""), 0);
        // Invalid bytes are not waited for.
        assert_eq!(complete_utf8_prefix(b"a\xff"), 2);
        assert_eq!(to_text(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn line_windows_like_head_and_tail() {
        let text = b"1\n2\n3\n4";
        let pick = |first, count| {
            let (r, n) = line_window(text, first, count);
            (std::str::from_utf8(&text[r]).unwrap().to_owned(), n)
        };
        assert_eq!(pick(1, 2), ("1\n2\n".into(), 1));
        assert_eq!(pick(-2, 10), ("3\n4".into(), 3));
        assert_eq!(pick(-10, 1), ("1\n".into(), 1));
        assert_eq!(pick(4, 5), ("4".into(), 4));
        assert_eq!(pick(9, 5), ("".into(), 5));
        assert_eq!(line_window(b"", -3, 3), (0..0, 1));
        assert_eq!(line_window(b"a\n", -1, 3), (0..2, 1));
    }

    #[test]
    fn slurm_patterns_expand() {
        let v = PathValues {
            job_id: Some("42"),
            array_job_id: Some("40"),
            array_task_id: Some("2"),
            user: Some("alice"),
            job_name: Some("train"),
            node: Some("n01"),
        };
        assert_eq!(
            expand_output_path("/home/%u/%x-%j.%N.out", &v),
            "/home/alice/train-42.n01.out"
        );
        assert_eq!(expand_output_path("%A_%a_%4j%%", &v), "40_2_0042%");
        assert_eq!(expand_output_path("slurm-%j-%s.out", &v), "slurm-42-%s.out");
        assert_eq!(expand_output_path("trail%", &v), "trail%");
        let none = PathValues::default();
        assert_eq!(expand_output_path("out-%j", &none), "out-%j");
    }
}
