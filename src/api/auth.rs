//! Bearer-token authentication: the tokens file, roles, and the filter each route uses to say
//! which roles may call it. Tokens are compared in constant time and never logged.

use super::error::ApiError;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use warp::Filter;

/// What a token may do. `Admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Slurm hooks: the job lifecycle events.
    Hook,
    /// Node agents: samples.
    Agent,
    /// Read-only access to jobs, samples and audit trails.
    Reader,
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "hook" => Some(Role::Hook),
            "agent" => Some(Role::Agent),
            "reader" => Some(Role::Reader),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured tokens. `Debug` prints only how many there are.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<Vec<(Role, Vec<u8>)>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

impl Tokens {
    /// Parses `ROLE TOKEN` lines; `#` starts a comment, blank lines are skipped. Errors name the
    /// line, never the token.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(Role, Vec<u8>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lineno = n + 1;
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {lineno}: expected `ROLE TOKEN`"));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!(
                    "line {lineno}: unknown role {role:?} (expected hook, agent, reader or admin)"
                )
            })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {lineno}: token is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            if entries
                .iter()
                .any(|(_, t)| t.as_slice() == token.as_bytes())
            {
                return Err(format!("line {lineno}: the same token appears twice"));
            }
            entries.push((role, token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Tokens {
            entries: Arc::new(entries),
        })
    }

    /// The role of `token`, comparing against every configured token in constant time (the
    /// time depends on the lengths, never on where a guess first differs).
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let mut found = None;
        for (role, candidate) in self.entries.iter() {
            if bool::from(constant_time_eq(candidate, token)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Equality that looks at every byte of the longer input whatever the contents, so neither the
/// position of the first difference nor a length mismatch shows in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    let len = a.len().max(b.len());
    let mut same = (a.len() as u64).ct_eq(&(b.len() as u64));
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        same &= x.ct_eq(&y);
    }
    same
}

/// The bearer token of an `Authorization` header.
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `token` has one of `roles` (an admin token always does).
fn check_role(tokens: &Tokens, token: Option<&str>, roles: &[Role]) -> Result<(), ApiError> {
    match token.and_then(|t| tokens.role_of(t.as_bytes())) {
        None => Err(ApiError::Unauthorized),
        Some(Role::Admin) => Ok(()),
        Some(role) if roles.contains(&role) => Ok(()),
        Some(_) => Err(ApiError::Forbidden),
    }
}

/// Passes when no tokens are configured, or when the request's bearer token has one of `roles`
/// (or is an admin token); rejects with 401/403 otherwise.
pub fn require(
    tokens: Option<Tokens>,
    roles: &'static [Role],
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let tokens = tokens.clone();
            async move {
                let Some(tokens) = tokens else { return Ok(()) };
                check_role(&tokens, bearer(header.as_deref()), roles).map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// Authentication of `GET /metrics`: open when neither tokens nor a metrics token are
/// configured; otherwise the bearer token must be the metrics token (`--metrics-token`, which
/// may read nothing else) or a reader's (or an admin's).
pub fn require_metrics(
    tokens: Option<Tokens>,
    metrics_token: Option<Arc<str>>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let tokens = tokens.clone();
            let metrics_token = metrics_token.clone();
            async move {
                if tokens.is_none() && metrics_token.is_none() {
                    return Ok(());
                }
                let presented = bearer(header.as_deref());
                if let (Some(expected), Some(presented)) = (&metrics_token, presented) {
                    if bool::from(constant_time_eq(expected.as_bytes(), presented.as_bytes())) {
                        return Ok(());
                    }
                }
                let result = match &tokens {
                    Some(tokens) => check_role(tokens, presented, &[Role::Reader]),
                    None => Err(ApiError::Unauthorized),
                };
                result.map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// How long a stream ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Short-lived, single-use credentials for the streams. Browsers' EventSource cannot send an
/// `Authorization` header, and a long-lived token in a URL ends up in proxy logs and browser
/// history; a ticket in the URL is worthless a minute later or once used.
#[derive(Clone, Default)]
pub struct Tickets {
    issued: Arc<Mutex<HashMap<String, Instant>>>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tickets")
    }
}

impl Tickets {
    /// A new ticket (244 random bits), valid for [`TICKET_TTL`].
    pub fn issue(&self) -> String {
        let ticket = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, expires| *expires > now);
        issued.insert(ticket.clone(), now + TICKET_TTL);
        ticket
    }

    /// Uses up `ticket`: true once, if it was issued and has not expired.
    pub fn redeem(&self, ticket: &str) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued
            .remove(ticket)
            .is_some_and(|expires| expires > Instant::now())
    }
}

/// Authentication of the stream routes: a bearer header with one of `roles`, or in the URL a
/// ticket (`?ticket=`, from `POST /v1/stream/tickets`) or a token (`?access_token=`). The
/// request log never contains query strings, so neither is logged.
pub fn require_stream(
    tokens: Option<Tokens>,
    tickets: Tickets,
    roles: &'static [Role],
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(super::request::query_map())
        .and_then(
            move |header: Option<String>, params: HashMap<String, String>| {
                let tokens = tokens.clone();
                let tickets = tickets.clone();
                async move {
                    let Some(tokens) = tokens else { return Ok(()) };
                    let result = if header.is_some() {
                        check_role(&tokens, bearer(header.as_deref()), roles)
                    } else if let Some(ticket) = params.get("ticket") {
                        if tickets.redeem(ticket) {
                            Ok(())
                        } else {
                            Err(ApiError::Unauthorized)
                        }
                    } else {
                        check_role(
                            &tokens,
                            params.get("access_token").map(String::as_str),
                            roles,
                        )
                    };
                    result.map_err(warp::reject::custom)
                }
            },
        )
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_finds_tokens() {
        let t =
            Tokens::parse("# c\n\nadmin aaaaaaaaaaaaaaaa\n reader bbbbbbbbbbbbbbbb \n").unwrap();
        assert_eq!(t.role_of(b"aaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(t.role_of(b"bbbbbbbbbbbbbbbb"), Some(Role::Reader));
        assert_eq!(t.role_of(b"bbbbbbbbbbbbbbb"), None);
        assert_eq!(t.role_of(b""), None);
        assert_eq!(format!("{t:?}"), "Tokens(2 configured)");
    }

    #[test]
    fn tickets_are_single_use() {
        let tickets = Tickets::default();
        let t = tickets.issue();
        assert_eq!(t.len(), 64);
        assert!(tickets.redeem(&t));
        assert!(!tickets.redeem(&t), "a ticket works once");
        assert!(!tickets.redeem("made-up"));
    }

    #[test]
    fn rejects_bad_lines_without_echoing_tokens() {
        for (text, want) in [
            ("root cccccccccccccccc", "unknown role"),
            ("admin short", "shorter"),
            ("admin", "expected"),
            ("admin a b", "expected"),
            ("admin dddddddddddddddd\nhook dddddddddddddddd", "twice"),
            ("# only comments", "no tokens"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("cccc") && !err.contains("dddd"), "{err}");
        }
    }
}
