//! The dashboard's stylesheet and script, compiled into the binary and served under names that
//! carry their content's hash (`/assets/offload.3f2a9c1e.css`), so a browser may cache them for
//! a year and a new build is fetched at once. Nothing is fetched from elsewhere.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../../assets/offload.css");
const JS: &str = include_str!("../../assets/offload.js");

/// `/assets/offload.<first 8 hex of the SHA-256>.<ext>`.
fn hashed(body: &str, ext: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("/assets/offload.{hex}.{ext}")
}

static CSS_PATH: LazyLock<String> = LazyLock::new(|| hashed(CSS, "css"));
static JS_PATH: LazyLock<String> = LazyLock::new(|| hashed(JS, "js"));

/// The stylesheet's address.
pub fn css_path() -> &'static str {
    CSS_PATH.as_str()
}

/// The script's address.
pub fn js_path() -> &'static str {
    JS_PATH.as_str()
}

/// `GET /assets/{file}`: the stylesheet or the script under its current name; 404 otherwise
/// (an old name included: its content is gone).
pub async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/assets/{file}");
    let (body, content_type) = if path == css_path() {
        (CSS, "text/css; charset=utf-8")
    } else if path == js_path() {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_their_contents_hash() {
        assert!(css_path().starts_with("/assets/offload.") && css_path().ends_with(".css"));
        assert_eq!(css_path().len(), "/assets/offload.12345678.css".len());
        assert_ne!(hashed("a", "css"), hashed("b", "css"));
        assert!(js_path().ends_with(".js"));
    }
}
