//! Request plumbing shared by the routes: the size-limited JSON body, the audit headers of API
//! writes, correlation ids, and parsing of query parameters and path ids.

use super::error::ApiError;
use crate::domain::validate::{self, MAX_NAME_LEN};
use crate::store::{AuditContext, Store};
use bytes::Buf;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use warp::Filter;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The request body parsed as JSON, at most [`MAX_BODY_BYTES`] long whether or not the client
/// sent a Content-Length (a chunked body is cut off as soon as it passes the limit).
pub fn json_body<T: DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    json_body_limited(MAX_BODY_BYTES)
}

/// The request body parsed as JSON, at most `limit` bytes long (for the few endpoints whose
/// bodies are legitimately larger than [`MAX_BODY_BYTES`], such as an agent's sample batch).
pub fn json_body_limited<T: DeserializeOwned + Send>(
    limit: usize,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, body| async move {
            let bytes = read_limited(declared, body, limit)
                .await
                .map_err(warp::reject::custom)?;
            let invalid =
                || warp::reject::custom(ApiError::InvalidRequest("Invalid JSON body".into()));
            if may_hold_nul(&bytes) {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|_| invalid())?;
                if holds_nul(&value) {
                    return Err(warp::reject::custom(ApiError::Validation(
                        NUL_REFUSED.into(),
                    )));
                }
                return serde_json::from_value::<T>(value).map_err(|_| invalid());
            }
            serde_json::from_slice::<T>(&bytes).map_err(|_| invalid())
        })
}

const NUL_REFUSED: &str =
    "Text in the request body may not contain the NUL character (\\u0000): the databases cannot store it";

/// Whether the raw body has a `\u0000` escape anywhere (JSON cannot carry a raw NUL byte, so an
/// escape is the only way one arrives). A cheap scan that keeps the common body on the one-pass
/// parse; a hit is then checked precisely by [`holds_nul`].
fn may_hold_nul(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"\\u0000").is_some()
}

/// Whether any string or object key in `value` contains a NUL character. PostgreSQL refuses NUL
/// in `text` and `jsonb`, so such a body would be stored on SQLite and fail on PostgreSQL; it is
/// refused up front on both.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

pub(super) async fn read_limited<S, B>(
    declared: Option<u64>,
    body: S,
    limit: usize,
) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|_| ApiError::InvalidRequest("Could not read the request body".into()))?;
        if bytes.len() + chunk.remaining() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            bytes.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

/// A correlation id given by the client: visible ASCII, at most 255 characters.
fn check_correlation_id(value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > MAX_NAME_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::Validation(
            "X-Correlation-Id must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(value.to_owned())
}

/// An optional header as text. Bytes that are not visible ASCII (or tab/space) answer
/// `400 validation_error` naming the header: warp's own `header::optional::<String>` rejects
/// them with a plain rejection that loses to another route's "method not allowed", so a write
/// with a non-ASCII header got a 405. Our rejection is a custom one and wins over it.
pub fn text_header(
    name: &'static str,
    display: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::header::headers_cloned().and_then(move |headers: warp::http::HeaderMap| async move {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => match value.to_str() {
                Ok(text) => Ok(Some(text.to_owned())),
                Err(_) => Err(warp::reject::custom(ApiError::Validation(format!(
                    "{display} header must be visible ASCII text"
                )))),
            },
        }
    })
}

/// The request's `X-Correlation-Id`, if it sent one.
pub fn correlation_id() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone
{
    text_header("x-correlation-id", "X-Correlation-Id").and_then(
        |value: Option<String>| async move {
            value
                .map(|v| check_correlation_id(&v))
                .transpose()
                .map_err(warp::reject::custom)
        },
    )
}

/// The audit headers of an API write, validated; see [`AuditHeaders::for_job`].
#[derive(Debug, Clone)]
pub struct AuditHeaders {
    changed_by: String,
    source: String,
    correlation_id: Option<String>,
    actor: Option<String>,
}

impl AuditHeaders {
    /// Records `who` as the change's authenticated actor.
    pub fn by(self, who: &super::identity::Identity) -> AuditHeaders {
        AuditHeaders {
            actor: who.audit_actor(),
            ..self
        }
    }

    /// The audit context of a new job: the given correlation id or a fresh UUID.
    pub fn for_new_job(self) -> AuditContext {
        let correlation_id = self
            .correlation_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        AuditContext {
            changed_by: self.changed_by,
            source: self.source,
            correlation_id,
            actor: self.actor,
        }
    }

    /// The audit context of a change to job `raw_id`: without an `X-Correlation-Id` the change
    /// continues the job's own trace (the id its first event recorded), so prolog, epilog and
    /// API changes of one job share one correlation id.
    pub async fn for_job(self, store: &Store, raw_id: &str) -> AuditContext {
        if self.correlation_id.is_some() {
            return self.for_new_job();
        }
        let stored = match job_id(raw_id) {
            Ok(id) => store.correlation_of(&id).await.unwrap_or_default(),
            Err(_) => None,
        };
        AuditHeaders {
            correlation_id: stored,
            ..self
        }
        .for_new_job()
    }
}

/// The audit headers every API write must carry (`X-Changed-By`, `X-Source`) and its optional
/// correlation id.
pub fn audit_headers() -> impl Filter<Extract = (AuditHeaders,), Error = warp::Rejection> + Clone {
    text_header("x-changed-by", "X-Changed-By")
        .and(text_header("x-source", "X-Source"))
        .and(correlation_id())
        .and_then(|by: Option<String>, source: Option<String>, correlation_id: Option<String>| async move {
            let header = |name: &str, value: Option<String>| {
                validate::required_name(name, value.as_deref(), &format!("{name} header is required"))
                    .map_err(|e| warp::reject::custom(ApiError::from(e)))
            };
            Ok::<_, warp::Rejection>(AuditHeaders {
                changed_by: header("X-Changed-By", by)?,
                source: header("X-Source", source)?,
                correlation_id,
                actor: None,
            })
        })
}

/// Runs a write handler and renders its result with the `X-Correlation-Id` header, success or
/// failure, so a client can always quote the id of its request.
pub async fn audited<F, Fut>(audit: AuditContext, handler: F) -> warp::reply::Response
where
    F: FnOnce(AuditContext) -> Fut,
    Fut: std::future::Future<Output = Result<warp::reply::Response, ApiError>>,
{
    let correlation = audit.correlation_id.clone();
    super::with_correlation(super::error::respond(handler(audit).await), &correlation)
}

/// Query parameters as a map; a malformed query string is `invalid_request`.
pub fn query_map(
) -> impl Filter<Extract = (HashMap<String, String>,), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            parse_query(&raw).map_err(|_| {
                warp::reject::custom(ApiError::InvalidRequest("Invalid query string".into()))
            })
        })
}

fn parse_query(raw: &str) -> Result<HashMap<String, String>, BadEscape> {
    let mut map = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode(k, true)?, percent_decode(v, true)?);
    }
    Ok(map)
}

/// A `%` escape that is not two hex digits, or bytes that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEscape;

/// Decodes `%XX` escapes (and `+` as space in query strings); invalid escapes or UTF-8 fail.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, BadEscape> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| BadEscape)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BadEscape)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BadEscape)
}

/// A job id from the path: percent-decoded and length-checked.
pub fn job_id(raw: &str) -> Result<String, ApiError> {
    path_name("Job ID", raw)
}

/// A name from the URL path (`what`: "Job ID", "Node name", ...): percent-decoded, without
/// surrounding white space, and valid as a name.
pub fn path_name(what: &str, raw: &str) -> Result<String, ApiError> {
    let lower = what.to_lowercase();
    let decoded = percent_decode(raw, false)
        .map_err(|_| ApiError::InvalidRequest(format!("Invalid {lower} in path")))?;
    if decoded.trim() != decoded {
        return Err(ApiError::Validation(format!(
            "{lower} must not start or end with white space"
        )));
    }
    Ok(validate::required_name(
        &lower,
        Some(&decoded),
        &format!("{what} is required"),
    )?)
}

/// An optional integer parameter: absent is `default`, unparsable is `invalid_request`, outside
/// `lo..=hi` is `validation_error`.
pub fn int_param(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
    lo: i64,
    hi: i64,
) -> Result<i64, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(default);
    };
    let value: i64 = raw
        .trim()
        .parse()
        .map_err(|_| ApiError::InvalidRequest(format!("{name} must be an integer")))?;
    if value < lo || value > hi {
        return Err(ApiError::Validation(format!(
            "{name} must be between {lo} and {hi}"
        )));
    }
    Ok(value)
}

/// An optional RFC 3339 timestamp parameter.
pub fn time_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            chrono::DateTime::parse_from_rfc3339(raw.trim())
                .map_err(|_| {
                    ApiError::InvalidRequest(format!("{name} must be an RFC 3339 timestamp"))
                })
                .and_then(|t| {
                    let t = crate::domain::job::truncate_micros(t.to_utc());
                    Ok(validate::past_bound(name, t)?)
                })
        })
        .transpose()
}

/// A state name from a query parameter, any case (Slurm users write `UP`, `IDLE`); `kind` and
/// `known` name the states in the error.
pub fn state_param<T: std::str::FromStr>(
    raw: &str,
    kind: &str,
    known: &[&str],
) -> Result<T, ApiError> {
    raw.trim().to_ascii_lowercase().parse().map_err(|_| {
        ApiError::Validation(format!(
            "Invalid {kind} state {raw:?} (expected one of {})",
            known.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%zz", true).is_err());
        assert!(percent_decode("%4", true).is_err());
        assert!(percent_decode("%ff", true).is_err());
    }

    #[test]
    fn int_params_distinguish_unparsable_from_out_of_range() {
        let mut p = HashMap::new();
        assert_eq!(int_param(&p, "limit", 100, 1, 1000).unwrap(), 100);
        p.insert("limit".to_string(), "abc".to_string());
        assert!(matches!(
            int_param(&p, "limit", 100, 1, 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        p.insert("limit".to_string(), "0".to_string());
        assert!(matches!(
            int_param(&p, "limit", 100, 1, 1000),
            Err(ApiError::Validation(_))
        ));
        p.insert("limit".to_string(), "1000".to_string());
        assert_eq!(int_param(&p, "limit", 100, 1, 1000).unwrap(), 1000);
    }

    #[test]
    fn correlation_ids_are_visible_ascii() {
        assert_eq!(check_correlation_id(" abc-1 ").unwrap(), "abc-1");
        assert!(check_correlation_id("").is_err());
        assert!(check_correlation_id("a b").is_err());
        assert!(check_correlation_id(&"x".repeat(256)).is_err());
    }
}
