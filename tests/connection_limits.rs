//! A normal client is served while 1,100 slow or idle connections are held, against a real
//! `jobscope serve` process started with a soft open-files limit of 1024 (a common default):
//! the server raises its own limit and caps connections below it, so neither the held clients
//! nor their number make `/v1/health` unreachable (issue 18: `accept error: Too many open
//! files`). The server runs as its own process because the limit is per process; this file
//! holds one test so that lowering this process's limit around the spawn touches no other test.

use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_jobscope");
const HELD: usize = 1100;

#[allow(dead_code)] // the process's memory helpers are for other tests
#[path = "common/serve_process.rs"]
mod serve_process;

fn set_soft_limit(soft: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the given struct only.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        let before = rl.rlim_cur;
        rl.rlim_cur = soft.min(rl.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        before
    }
}

#[tokio::test]
async fn a_normal_client_is_served_while_1100_slow_connections_are_held() {
    let hard = {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        rl.rlim_max
    };
    if hard < (2 * HELD as u64 + 512) {
        panic!("the hard open-files limit ({hard}) is too low for this test");
    }
    // The child inherits 1024; this process gets its own limit back for the client sockets.
    let before = set_soft_limit(1024);
    let server = serve_process::ServeProcess::spawn(BIN, &[], None, |v, _| v["level"] != "INFO");
    set_soft_limit(before.max(2 * HELD as u64 + 256));
    let addr: std::net::SocketAddr = server.base().trim_start_matches("http://").parse().unwrap();

    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            // Slow: a request line and no end of headers.
            conn.write_all(b"GET /v1/health HTTP/1.1\r\nx-slow: 1\r\n")
                .await
                .unwrap();
        }
        held.push(conn);
    }
    jobscope::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = client
        .get(format!("{}/v1/health", server.base()))
        .send()
        .await;
    let waited = started.elapsed();
    let status = resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
    eprintln!("health with {HELD} connections held: {status:?} in {waited:?}");
    assert_eq!(status, Ok(200), "with {HELD} connections held");
    drop(held);
}
