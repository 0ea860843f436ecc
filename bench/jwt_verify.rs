//! Added latency of a Slurm JWT per request: the whole identification a bearer JWT goes
//! through (tokens-file lookup in constant time, then the HS256 check, base64url and JSON of
//! header and claims, and the key file's modification-time check), timed one call at a time.
//!
//! ```sh
//! BENCH_CALLS=200000 cargo bench --bench jwt_verify
//! ```
//!
//! Goal (issue 13): p50 and p99 under 50 µs. Results go to BENCHMARKS.md.

use jobscope::api::auth::Tokens;
use jobscope::api::jwt::{self, JwtKey};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

fn main() {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let key = b"a-slurm-jwt-hs256-key-of-realistic-length-0123456789abcdef";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwt_hs256.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A realistic tokens file (a few roles and users) in front of the JWT check.
    let mut text = String::new();
    for (i, role) in ["admin", "hook", "agent", "reader"].iter().enumerate() {
        text.push_str(&format!("{role} {role}-token-{i:016}\n"));
    }
    for i in 0..20 {
        text.push_str(&format!("user:user{i} user-token-{i:020}\n"));
    }
    let tokens = Tokens::parse(&text)
        .unwrap()
        .with_jwt(Some(JwtKey::load(&path).unwrap()));
    let now = chrono::Utc::now().timestamp();
    let token = jwt::sign(key, &json!({"sun": "alice", "iat": now, "exp": now + 3600}));
    for _ in 0..1000 {
        assert!(tokens.identify(&token).is_some());
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let who = tokens.identify(std::hint::black_box(&token));
        times.push(start.elapsed());
        assert!(who.is_some());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "jwt_verify: {calls} calls, token {} bytes: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        token.len(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6,
    );
}
