//! `GET /`: the chat page, one HTML file with its CSS and JavaScript inline, and
//! `GET /assets/{name}`: the scripts and style it renders answers with (vendored, see
//! `page/vendor/README.md`). All are built into the binary, so the page needs no CDN and
//! no build step.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

const PAGE: &str = include_str!("../page/index.html");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The vendored files: the name the page asks for (with the version, so a cached copy
/// is never stale), its content type, and the file.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "marked-16.4.2.js",
        JAVASCRIPT,
        include_str!("../page/vendor/marked.umd.js"),
    ),
    (
        "purify-3.5.0.js",
        JAVASCRIPT,
        include_str!("../page/vendor/purify.min.js"),
    ),
    (
        "highlight-11.12.0.js",
        JAVASCRIPT,
        include_str!("../page/vendor/highlight.min.js"),
    ),
    (
        "highlight-github-11.12.0.css",
        CSS,
        include_str!("../page/vendor/highlight-github.min.css"),
    ),
];

/// The page's Content-Security-Policy: scripts and styles from `/assets` or the page's
/// own inline ones by hash (no inline handlers, nothing injected runs), images from
/// the gateway or `data:` (an answer's remote image cannot carry data away), no form
/// posts anywhere, no framing, and requests to the gateway only.
static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let script = inline_hash(PAGE, "<script>", "</script>");
    let style = inline_hash(PAGE, "<style>", "</style>");
    format!(
        "default-src 'none'; script-src 'self' '{script}'; style-src 'self' '{style}'; \
         img-src 'self' data:; connect-src 'self'; form-action 'none'; \
         frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
});

/// `sha256-…` of the text between the first `open` tag and the next `close` of `page`.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    use sha2::{Digest, Sha256};
    let start = page.find(open).expect("the page has the inline element") + open.len();
    let end = start + page[start..].find(close).expect("closed");
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!("sha256-{}", base64(&digest))
}

/// Standard base64, with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, Error> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| Error::UnknownRoute {
            method: "GET".into(),
            path: format!("/assets/{name}"),
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        *body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn the_policy_names_the_inline_script_and_style_by_hash() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert!(CSP.contains("script-src 'self' 'sha256-"), "{}", *CSP);
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("unsafe"), "{}", *CSP);
        assert!(!PAGE.contains(" onclick="), "no inline handlers");
    }

    /// The vendored files are the packages' own, as the vendor README records them.
    #[test]
    fn vendored_scripts_match_their_recorded_digests() {
        let readme = include_str!("../page/vendor/README.md");
        for (name, _, body) in ASSETS {
            let digest: String = Sha256::digest(body.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(
                readme.contains(&digest),
                "{name}: {digest} is not in page/vendor/README.md"
            );
            assert!(
                PAGE.contains(&format!("/assets/{name}")),
                "the page loads {name}"
            );
        }
    }
}
