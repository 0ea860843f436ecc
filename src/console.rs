//! The web console at `/`: a few hand-written pages (HTML, CSS, JavaScript, no build step)
//! and the vendored uPlot charting library, embedded in the binary so the console works on an
//! air-gapped cluster. Each asset is gzipped once at start; responses carry an `ETag` (a
//! conditional request gets `304`), `Cache-Control: no-cache` (revalidate, since the names are
//! not versioned), and security headers: a Content-Security-Policy that allows only this
//! origin's scripts, styles and API (no inline script), `X-Content-Type-Options: nosniff`,
//! and no framing. The console calls only the documented `/v1` API; `--no-console` removes it.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// (URL path, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "/console/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/app.css"),
    ),
    (
        "/console/favicon.svg",
        "image/svg+xml",
        include_bytes!("../console/favicon.svg"),
    ),
    (
        "/console/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "/console/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uplot/uPlot.min.css"),
    ),
];

/// Only this origin's scripts, styles, images and API; nothing inline, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One embedded file, ready to serve.
pub struct Asset {
    pub path: &'static str,
    content_type: &'static str,
    raw: &'static [u8],
    pub gzip: Vec<u8>,
    etag: String,
}

/// Every asset, gzipped.
pub fn assets() -> Vec<Asset> {
    FILES
        .iter()
        .map(|(path, content_type, raw)| {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
            encoder.write_all(raw).expect("gzip into memory");
            let gzip = encoder.finish().expect("gzip into memory");
            Asset {
                path,
                content_type,
                raw,
                gzip,
                etag: format!("\"{:016x}\"", fnv1a(raw)),
            }
        })
        .collect()
}

/// FNV-1a, 64 bits: enough to tell one build's asset from another's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn respond(asset: &Asset, accept_encoding: Option<&str>, if_none_match: Option<&str>) -> Response {
    let not_modified = if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim() == asset.etag || t.trim() == "*")
    });
    let gzip = accept_encoding.is_some_and(|a| {
        a.split(',')
            .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip")
    });
    let mut response = if not_modified {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if gzip {
        let mut r = Response::new(asset.gzip.clone().into());
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(asset.raw.into())
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /` and `GET /console/*`: the console's files. Any other path is left to the API.
pub fn routes() -> BoxedFilter<(Response,)> {
    let assets: Arc<Vec<Asset>> = Arc::new(assets());
    warp::get()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(
            move |path: warp::path::FullPath,
                  accept: Option<String>,
                  if_none_match: Option<String>| {
                let found = assets
                    .iter()
                    .find(|a| a.path == path.as_str())
                    .map(|a| respond(a, accept.as_deref(), if_none_match.as_deref()));
                async move { found.ok_or_else(warp::reject::not_found) }
            },
        )
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_fit_the_budget_and_gzip_round_trips() {
        let assets = assets();
        let total: usize = assets.iter().map(|a| a.gzip.len()).sum();
        assert!(total <= 300 * 1024, "console is {total} bytes gzipped");
        for a in &assets {
            let mut out = Vec::new();
            let mut decoder = flate2::write::GzDecoder::new(&mut out);
            decoder.write_all(&a.gzip).unwrap();
            decoder.finish().unwrap();
            assert_eq!(out, a.raw, "{}", a.path);
        }
    }

    #[test]
    fn no_inline_script_in_the_page() {
        let html = std::str::from_utf8(FILES[0].2).unwrap();
        for piece in html.split("<script").skip(1) {
            let tag_end = piece.find('>').unwrap();
            assert!(piece[..tag_end].contains("src="), "inline script: {piece}");
            assert!(piece[tag_end + 1..].trim_start().starts_with("</script>"));
        }
        for handler in ["onclick=", "onload=", "onsubmit=", "oninput=", "onchange="] {
            assert!(!html.contains(handler), "inline event handler {handler}");
        }
    }
}
