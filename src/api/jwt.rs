//! Slurm's own user tokens: HS256 JWTs from `scontrol token` (auth/jwt), verified with the
//! cluster's `jwt_hs256.key`, so a researcher signs in to jobscope with nothing new.
//!
//! Only what Slurm issues is accepted: header `alg` exactly `HS256` (never `none`, never an
//! asymmetric algorithm that a forged header could ask for), claims `sun` (the user name), `exp`
//! and `iat`, checked with [`LEEWAY_SECS`] of clock skew. Tokens are bounded in length before
//! any decoding. The key file must be private to its owner (as slurmctld demands) and is
//! re-read when its modification time changes, so a rotated key takes effect without a restart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;
/// Longest token looked at; Slurm's are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest user name accepted in `sun`.
const MAX_USER_LEN: usize = 64;

/// Why a token was refused; never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("token too long")]
    TooLong,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    NotYetValid,
    #[error("no acceptable user name")]
    User,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sun: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
}

/// Whether a JWT header could be one: three dot-separated parts, the first decoding to JSON.
/// Used to tell a JWT from an opaque token without verifying it.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verifies `token` with `key` at unix time `now`; the user name on success.
pub fn verify(key: &hmac::Key, token: &str, now: i64) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)?;
    let signed = &token[..token.len() - signature_len(token)];
    // ring compares the tags in constant time.
    hmac::verify(key, signed.as_bytes(), &signature).map_err(|_| JwtError::Signature)?;
    let claims: Claims = decode_json(claims)?;
    let exp = claims.exp.ok_or(JwtError::Expired)?;
    if exp.saturating_add(LEEWAY_SECS) < now {
        return Err(JwtError::Expired);
    }
    if claims
        .iat
        .is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS))
    {
        return Err(JwtError::NotYetValid);
    }
    let user = claims.sun.ok_or(JwtError::User)?;
    if !sane_user(&user) {
        return Err(JwtError::User);
    }
    Ok(user)
}

/// Length of the signature part plus its leading dot.
fn signature_len(token: &str) -> usize {
    token.rsplit('.').next().map_or(0, |s| s.len() + 1)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// A user name as POSIX systems allow: letters, digits, `._-`, not starting with `-`, bounded.
pub fn sane_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Signs `claims` with `key` (HS256): for tests and the bench; jobscope never issues tokens.
pub fn sign(key: &[u8], claims: &serde_json::Value) -> String {
    sign_with_header(
        key,
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
    )
}

/// Signs with an arbitrary header (tests of refused algorithms).
pub fn sign_with_header(
    key: &[u8],
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let body = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The cluster's key file, re-read when its modification time changes.
#[derive(Clone)]
pub struct JwtKey {
    path: Arc<PathBuf>,
    current: Arc<Mutex<(Option<SystemTime>, Arc<hmac::Key>)>>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey({})", self.path.display())
    }
}

impl JwtKey {
    /// Reads the key; refuses a file that group or others may read, or an empty one. Errors name
    /// the file, never its contents.
    pub fn load(path: &Path) -> Result<JwtKey, String> {
        let (mtime, key) = read_key(path)?;
        Ok(JwtKey {
            path: Arc::new(path.to_owned()),
            current: Arc::new(Mutex::new((mtime, Arc::new(key)))),
        })
    }

    /// The key from bytes (tests, bench).
    pub fn from_bytes(key: &[u8]) -> JwtKey {
        JwtKey {
            path: Arc::new(PathBuf::new()),
            current: Arc::new(Mutex::new((
                None,
                Arc::new(hmac::Key::new(hmac::HMAC_SHA256, key)),
            ))),
        }
    }

    /// The current key: re-read when the file's modification time changed (a failed re-read
    /// keeps the previous key and says so).
    fn key(&self) -> Arc<hmac::Key> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !self.path.as_os_str().is_empty() {
            let mtime = std::fs::metadata(&*self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime.is_some() && mtime != current.0 {
                match read_key(&self.path) {
                    Ok((mtime, key)) => {
                        tracing::info!(path = %self.path.display(), "Slurm JWT key re-read");
                        *current = (mtime, Arc::new(key));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the previous Slurm JWT key");
                        current.0 = mtime;
                    }
                }
            }
        }
        current.1.clone()
    }

    /// Verifies `token` now; the user name on success.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        verify(&self.key(), token, now)
    }
}

fn read_key(path: &Path) -> Result<(Option<SystemTime>, hmac::Key), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} may be read by group or others; it must be private to its owner (chmod 600)",
                path.display()
            ));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((
        meta.modified().ok(),
        hmac::Key::new(hmac::HMAC_SHA256, &bytes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"a-cluster-key-of-some-length-0123456789";

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, KEY)
    }

    #[test]
    fn accepts_slurm_shaped_tokens_and_refuses_the_rest() {
        let now = 1_700_000_000;
        let good = sign(KEY, &json!({"sun": "alice", "exp": now + 600, "iat": now}));
        assert_eq!(verify(&key(), &good, now).unwrap(), "alice");
        // Within the leeway either side.
        assert!(verify(&key(), &good, now + 600 + LEEWAY_SECS).is_ok());
        assert_eq!(
            verify(&key(), &good, now + 601 + LEEWAY_SECS),
            Err(JwtError::Expired)
        );
        let future = sign(
            KEY,
            &json!({"sun": "alice", "exp": now + 9999, "iat": now + 120}),
        );
        assert_eq!(verify(&key(), &future, now), Err(JwtError::NotYetValid));
        let other = sign(b"another key", &json!({"sun": "alice", "exp": now + 600}));
        assert_eq!(verify(&key(), &other, now), Err(JwtError::Signature));
        let none = sign_with_header(
            KEY,
            &json!({"alg": "none"}),
            &json!({"sun": "a", "exp": now + 9}),
        );
        assert_eq!(verify(&key(), &none, now), Err(JwtError::Algorithm));
        let unsigned = format!("{}.", &none[..none.rfind('.').unwrap()]);
        assert_eq!(verify(&key(), &unsigned, now), Err(JwtError::Algorithm));
        let hs512 = sign_with_header(
            KEY,
            &json!({"alg": "HS512"}),
            &json!({"sun": "a", "exp": now + 9}),
        );
        assert_eq!(verify(&key(), &hs512, now), Err(JwtError::Algorithm));
        let ctl = sign(KEY, &json!({"sun": "al\nice", "exp": now + 600}));
        assert_eq!(verify(&key(), &ctl, now), Err(JwtError::User));
        let no_exp = sign(KEY, &json!({"sun": "alice"}));
        assert_eq!(verify(&key(), &no_exp, now), Err(JwtError::Expired));
        assert_eq!(verify(&key(), "a.b!.c", now), Err(JwtError::Malformed));
        assert_eq!(verify(&key(), "abc", now), Err(JwtError::Malformed));
        let long = "a".repeat(100_000);
        assert_eq!(verify(&key(), &long, now), Err(JwtError::TooLong));
        // A flipped signature byte.
        let mut forged = good.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(verify(&key(), &forged, now).is_err());
    }

    #[test]
    fn key_files_must_be_private_and_are_reread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt_hs256.key");
        std::fs::write(&path, KEY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = JwtKey::load(&path).unwrap_err();
        assert!(
            err.contains("jwt_hs256.key") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = JwtKey::load(&path).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let token = sign(KEY, &json!({"sun": "bob", "exp": now + 60, "iat": now}));
        assert_eq!(k.verify(&token).unwrap(), "bob");
        // Rotate: a new key and a modification time that certainly differs.
        std::fs::write(&path, b"the-rotated-key-0123456789").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(k.verify(&token), Err(JwtError::Signature));
        let rotated = sign(
            b"the-rotated-key-0123456789",
            &json!({"sun": "bob", "exp": now + 60}),
        );
        assert_eq!(k.verify(&rotated).unwrap(), "bob");
    }
}
