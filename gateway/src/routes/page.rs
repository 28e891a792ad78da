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

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
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
