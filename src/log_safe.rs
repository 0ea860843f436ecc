//! Client-supplied text in log lines: [`Esc`] displays a value with control characters (and the
//! Unicode line and paragraph separators) escaped, so a newline in a job id cannot end the log
//! line and forge the next one in the text log. Use it as a tracing field,
//! `job_id = %Esc(&id)`, never by interpolating input into the message.

use std::fmt;

/// Displays the wrapped text with control characters escaped as `\n`, `\r`, `\t` or `\u{..}`
/// (a backslash is doubled, so an escape in the input cannot pass for one of ours).
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let needs = |c: char| c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}';
        if !text.chars().any(needs) {
            return f.write_str(text);
        }
        for c in text.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if needs(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Esc;

    #[test]
    fn control_characters_cannot_break_a_log_line() {
        let forged = "42\n2026-01-01T00:00:00Z ERROR forged line\r\u{1b}[31m\u{2028}\\n";
        let shown = Esc(forged).to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "42\\n2026-01-01T00:00:00Z ERROR forged line\\r\\u{1b}[31m\\u{2028}\\\\n"
        );
        assert_eq!(Esc("plain-id.7").to_string(), "plain-id.7");
    }
}
