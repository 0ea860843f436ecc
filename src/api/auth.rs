//! Bearer-token authentication: the tokens file, roles, and the filter each route uses to say
//! which roles may call it. Tokens are compared in constant time and never logged.
//!
//! A token may also name a person: a `user:NAME TOKEN` line, or a Slurm JWT when
//! `--slurm-jwt-key-file` is set ([`super::jwt`]); see [`Identity`] for what a person may see.
//! Failed authentications are logged at most once per source address per minute.

use super::error::ApiError;
pub use super::identity::Identity;
use super::jwt::JwtKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
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

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hook => "hook",
            Role::Agent => "agent",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured tokens. `Debug` prints only how many there are.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<Vec<(Identity, Vec<u8>)>>,
    /// The cluster's Slurm JWT key (`--slurm-jwt-key-file`).
    jwt: Option<JwtKey>,
    /// `--users-see-all-jobs`: users may list every job's lifecycle.
    pub users_see_all_jobs: bool,
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
        let mut entries: Vec<(Identity, Vec<u8>)> = Vec::new();
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
            let who = match role.strip_prefix("user:") {
                Some(user) if super::jwt::sane_user(user) => Identity::User(user.to_owned()),
                Some(_) => {
                    return Err(format!(
                        "line {lineno}: a user name is letters, digits, `.`, `_` and `-`"
                    ))
                }
                None => Identity::Role(Role::parse(role).ok_or_else(|| {
                    format!(
                        "line {lineno}: unknown role {role:?} (expected hook, agent, reader, admin or user:NAME)"
                    )
                })?),
            };
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
            entries.push((who, token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Tokens {
            entries: Arc::new(entries),
            jwt: None,
            users_see_all_jobs: false,
        })
    }

    /// No tokens file, only Slurm JWTs: users may sign in, nobody else.
    pub fn jwt_only(key: JwtKey) -> Tokens {
        Tokens {
            entries: Arc::new(Vec::new()),
            jwt: Some(key),
            users_see_all_jobs: false,
        }
    }

    /// Also accepts Slurm JWTs verified with `key`.
    pub fn with_jwt(mut self, key: Option<JwtKey>) -> Tokens {
        self.jwt = key;
        self
    }

    /// The role of `token`, comparing against every configured token in constant time (the
    /// time depends on the lengths, never on where a guess first differs).
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        match self.static_identity(token)? {
            Identity::Role(role) => Some(role),
            _ => None,
        }
    }

    fn static_identity(&self, token: &[u8]) -> Option<Identity> {
        let mut found = None;
        for (who, candidate) in self.entries.iter() {
            if bool::from(constant_time_eq(candidate, token)) {
                found = Some(who);
            }
        }
        found.cloned()
    }

    /// Who `token` is: a tokens-file entry, or (when a key is configured) a Slurm JWT's user.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        if let Some(who) = self.static_identity(token.as_bytes()) {
            return Some(who);
        }
        let key = self.jwt.as_ref()?;
        if !super::jwt::looks_like_jwt(token) {
            return None;
        }
        key.verify(token).ok().map(Identity::User)
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

/// Whether `token` has one of `roles` (an admin token always does); users pass only when
/// `users` is true.
fn check_identity(
    tokens: &Tokens,
    token: Option<&str>,
    roles: &[Role],
    users: bool,
) -> Result<Identity, ApiError> {
    match token.and_then(|t| tokens.identify(t)) {
        None => Err(ApiError::Unauthorized),
        Some(who @ Identity::Role(Role::Admin)) => Ok(who),
        Some(Identity::Role(role)) if roles.contains(&role) => Ok(Identity::Role(role)),
        Some(who @ Identity::User(_)) if users => Ok(who),
        Some(_) => Err(ApiError::Forbidden),
    }
}

fn check_role(tokens: &Tokens, token: Option<&str>, roles: &[Role]) -> Result<(), ApiError> {
    check_identity(tokens, token, roles, false).map(|_| ())
}

/// When each source address last had a failed authentication logged.
static FAILURES_LOGGED: Mutex<Option<HashMap<std::net::IpAddr, Instant>>> = Mutex::new(None);
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs a failed authentication from `source`, at most once a minute per source (the token is
/// never logged). Returns whether it was logged.
pub fn log_failure(source: Option<std::net::SocketAddr>, error: &ApiError) -> bool {
    if *error != ApiError::Unauthorized {
        return false;
    }
    let ip = source.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |s| s.ip());
    let now = Instant::now();
    let mut logged = FAILURES_LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    let logged = logged.get_or_insert_with(HashMap::new);
    if logged.len() > 10_000 {
        logged.retain(|_, at| now.duration_since(*at) < FAILURE_LOG_EVERY);
    }
    match logged.get(&ip) {
        Some(at) if now.duration_since(*at) < FAILURE_LOG_EVERY => false,
        _ => {
            logged.insert(ip, now);
            tracing::warn!(source = %ip, "failed authentication (further ones from this source are not logged for a minute)");
            true
        }
    }
}

/// The request's identity: with tokens configured, a bearer token with one of `roles` (or an
/// admin's, or a user's); 401/403 otherwise. Without tokens, [`Identity::Open`].
pub fn identify(tokens: Option<Tokens>, roles: &'static [Role]) -> BoxedFilter<(Identity,)> {
    identity(tokens, roles, true)
}

/// Like [`require`], but yields the caller's identity (for the audit log's actor); user
/// tokens do not pass.
pub fn require_role(tokens: Option<Tokens>, roles: &'static [Role]) -> BoxedFilter<(Identity,)> {
    identity(tokens, roles, false)
}

/// [`identify`] (`users`: user tokens pass too) and [`require_role`] (they do not).
fn identity(
    tokens: Option<Tokens>,
    roles: &'static [Role],
    users: bool,
) -> BoxedFilter<(Identity,)> {
    warp::header::optional::<String>("authorization")
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>, source: Option<std::net::SocketAddr>| {
                let tokens = tokens.clone();
                async move {
                    let Some(tokens) = tokens else {
                        return Ok(Identity::Open);
                    };
                    check_identity(&tokens, bearer(header.as_deref()), roles, users).map_err(|e| {
                        log_failure(source, &e);
                        warp::reject::custom(e)
                    })
                }
            },
        )
        .boxed()
}

/// Passes when no tokens are configured, or when the request's bearer token has one of `roles`
/// (or is an admin token); rejects with 401/403 otherwise.
pub fn require(tokens: Option<Tokens>, roles: &'static [Role]) -> BoxedFilter<()> {
    warp::header::optional::<String>("authorization")
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>, source: Option<std::net::SocketAddr>| {
                let tokens = tokens.clone();
                async move {
                    let Some(tokens) = tokens else { return Ok(()) };
                    check_role(&tokens, bearer(header.as_deref()), roles).map_err(|e| {
                        log_failure(source, &e);
                        warp::reject::custom(e)
                    })
                }
            },
        )
        .untuple_one()
        .boxed()
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
    issued: Arc<Mutex<HashMap<String, (Instant, Identity)>>>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tickets")
    }
}

impl Tickets {
    /// A new ticket (244 random bits) for `who`, valid for [`TICKET_TTL`].
    pub fn issue(&self, who: Identity) -> String {
        let ticket = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, (expires, _)| *expires > now);
        issued.insert(ticket.clone(), (now + TICKET_TTL, who));
        ticket
    }

    /// Uses up `ticket`: the identity it was issued to, once, if it has not expired.
    pub fn redeem(&self, ticket: &str) -> Option<Identity> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued
            .remove(ticket)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, who)| who)
    }
}

/// Authentication of the stream routes: a bearer header with one of `roles` (or a user's), or
/// in the URL a ticket (`?ticket=`, from `POST /v1/stream/tickets`, carrying the identity it
/// was issued to) or a token (`?access_token=` or `?token=`). The request log never contains
/// query strings, so none of them is logged.
pub fn require_stream(
    tokens: Option<Tokens>,
    tickets: Tickets,
    roles: &'static [Role],
) -> BoxedFilter<(Identity,)> {
    warp::header::optional::<String>("authorization")
        .and(super::request::query_map())
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>,
                  params: HashMap<String, String>,
                  source: Option<std::net::SocketAddr>| {
                let tokens = tokens.clone();
                let tickets = tickets.clone();
                async move {
                    let Some(tokens) = tokens else {
                        return Ok(Identity::Open);
                    };
                    let result = if header.is_some() {
                        check_identity(&tokens, bearer(header.as_deref()), roles, true)
                    } else if let Some(ticket) = params.get("ticket") {
                        tickets.redeem(ticket).ok_or(ApiError::Unauthorized)
                    } else {
                        let token = params.get("access_token").or_else(|| params.get("token"));
                        check_identity(&tokens, token.map(String::as_str), roles, true)
                    };
                    result.map_err(|e| {
                        log_failure(source, &e);
                        warp::reject::custom(e)
                    })
                }
            },
        )
        .boxed()
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
        let u = Tokens::parse("user:alice eeeeeeeeeeeeeeee\n").unwrap();
        assert_eq!(
            u.identify("eeeeeeeeeeeeeeee"),
            Some(Identity::User("alice".into()))
        );
        assert_eq!(u.role_of(b"eeeeeeeeeeeeeeee"), None);
    }

    #[test]
    fn failures_are_logged_once_a_minute_per_source() {
        let source: std::net::SocketAddr = "192.0.2.77:1234".parse().unwrap();
        assert!(log_failure(Some(source), &ApiError::Unauthorized));
        assert!(!log_failure(Some(source), &ApiError::Unauthorized));
        assert!(!log_failure(Some(source), &ApiError::Forbidden));
        let other: std::net::SocketAddr = "192.0.2.78:1".parse().unwrap();
        assert!(log_failure(Some(other), &ApiError::Unauthorized));
    }

    #[test]
    fn tickets_are_single_use() {
        let tickets = Tickets::default();
        let alice = Identity::User("alice".into());
        let t = tickets.issue(alice.clone());
        assert_eq!(t.len(), 64);
        assert_eq!(
            tickets.redeem(&t),
            Some(alice),
            "a ticket carries its identity"
        );
        assert_eq!(tickets.redeem(&t), None, "a ticket works once");
        assert_eq!(tickets.redeem("made-up"), None);
    }

    #[test]
    fn rejects_bad_lines_without_echoing_tokens() {
        for (text, want) in [
            ("root cccccccccccccccc", "unknown role"),
            ("user:a\u{7}b cccccccccccccccc", "user name"),
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
