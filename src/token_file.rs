//! The one rule for reading a client token file (`--token-file` of `agent`, `hook` and `watch`),
//! and `scontrol token` as a source of a user's token for `watch`.
//!
//! The rule, a superset of what the three clients accepted before:
//! - the token is on the first line that is neither empty nor a `#` comment, trimmed;
//! - `scontrol token` output works as it is (`SLURM_JWT=...`: the prefix is dropped), and so does
//!   a `ROLE TOKEN` line copied from the server's tokens file (the last word is the token);
//! - a token must be printable ASCII without spaces (it goes into an HTTP header); anything
//!   else is an error that never shows the file's content;
//! - a file readable by group or others is used, with a warning: the same rule as the server's
//!   tokens file, not the refusal of the JWT key file. A hook's token file may have to be
//!   shared with a Slurm group, and refusing it would lose events; a leaked client token is
//!   one role or one user, the key file is every user.

use anyhow::{anyhow, bail, Context};
use std::path::Path;
use std::time::Duration;

/// The token in a token file's text (see the module doc); an error when there is none.
pub fn parse(text: &str) -> anyhow::Result<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| anyhow!("no token in it (empty, or only comments)"))?;
    let word = line.split_whitespace().last().unwrap_or(line);
    let token = word.strip_prefix("SLURM_JWT=").unwrap_or(word);
    if token.is_empty() {
        bail!("no token in it (SLURM_JWT= with nothing after it)");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token holds characters an HTTP header cannot carry");
    }
    Ok(token.to_owned())
}

/// Reads the token from `path` (see the module doc). Errors name the file, never the token.
pub fn read(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    warn_if_shared(path);
    parse(&text).with_context(|| format!("token file {}", path.display()))
}

/// A warning (not a refusal) when group or others can read the file.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o044 != 0 {
            tracing::warn!(path = %path.display(), "token file is readable by group or others; chmod 600 it");
        }
    }
}

/// Lifespan asked of `scontrol token`, in seconds: long enough for a working session; `watch`
/// fetches a fresh one when the server answers 401.
pub const SCONTROL_LIFESPAN_S: u64 = 3600;

/// Whether an executable `scontrol` is on the PATH.
pub fn scontrol_on_path() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join("scontrol"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The calling user's token from `scontrol token lifespan=...` (Slurm's auth/jwt). Runs on a
/// blocking thread (std's process API: tokio's `process` feature would rebuild the whole
/// tree for one call) and gives up after `timeout` (an unreachable slurmctld).
pub async fn from_scontrol(timeout: Duration) -> anyhow::Result<String> {
    let run = tokio::task::spawn_blocking(|| {
        std::process::Command::new("scontrol")
            .arg("token")
            .arg(format!("lifespan={SCONTROL_LIFESPAN_S}"))
            .stdin(std::process::Stdio::null())
            .output()
    });
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("scontrol token did not answer within {timeout:?}"))?
        .context("scontrol token")?
        .context("cannot run scontrol token")?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        bail!(
            "scontrol token failed ({}): {}",
            output.status,
            err.trim().chars().take(200).collect::<String>()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SLURM_JWT="))
        .ok_or_else(|| anyhow!("scontrol token printed no SLURM_JWT= line"))?;
    parse(line).context("scontrol token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_line_that_is_not_blank_or_a_comment_trimmed() {
        assert_eq!(parse("tok-1\nother\n").unwrap(), "tok-1");
        assert_eq!(parse("  tok-2 \r\n").unwrap(), "tok-2");
        assert_eq!(parse("\n# a comment\n\n  tok-3\n").unwrap(), "tok-3");
        assert_eq!(parse("tok-4").unwrap(), "tok-4", "no final newline");
    }

    #[test]
    fn scontrol_output_and_tokens_file_lines_work_as_they_are() {
        assert_eq!(parse("SLURM_JWT=eyJ.a.b\n").unwrap(), "eyJ.a.b");
        assert_eq!(parse("reader secret-5\n").unwrap(), "secret-5");
        assert_eq!(parse("user:alice secret-6\n").unwrap(), "secret-6");
    }

    #[test]
    fn no_token_is_an_error_that_does_not_show_the_content() {
        for text in ["", "\n\n", "# only\n  # comments\n", "SLURM_JWT=\n"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let err = parse("sécret\n").unwrap_err().to_string();
        assert!(err.contains("cannot carry"), "{err}");
        assert!(!err.contains("sécret"), "{err}");
        assert!(parse("tok\u{7}en\n").is_err(), "control character");
    }

    #[test]
    fn read_names_the_file_and_accepts_a_shared_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(err.contains("cannot read the token file"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");

        std::fs::write(&path, "# hook\nsecret-7\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read(&path).unwrap(), "secret-7", "warned, not refused");

        std::fs::write(&path, "\n").unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(
            err.contains(&path.display().to_string()) && err.contains("no token"),
            "{err}"
        );
    }
}
