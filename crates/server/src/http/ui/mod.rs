//! The management web UI: a small hand-written app (plain ES modules and CSS, no build step)
//! compiled into the binary and served at `/`. It knows nothing of the broker: the browser
//! talks to the management API like any other client, with the user's own credentials.
//!
//! Assets live under `assets/<version>/` where the version is a hash of their contents, so
//! they can be cached forever; only the page at `/` is revalidated on each load.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

struct Asset {
    file: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Every file the page may load, by the name it is asked for.
const ASSETS: &[Asset] = &[
    Asset {
        file: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        file: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
    Asset {
        file: "app.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        file: "api.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/api.js"),
    },
    Asset {
        file: "dom.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/dom.js"),
    },
    Asset {
        file: "chart.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/chart.js"),
    },
    Asset {
        file: "table.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/table.js"),
    },
    Asset {
        file: "forms.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/forms.js"),
    },
    Asset {
        file: "login.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/login.js"),
    },
    Asset {
        file: "overview.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/overview.js"),
    },
    Asset {
        file: "lists.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/lists.js"),
    },
    Asset {
        file: "queue.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/queue.js"),
    },
    Asset {
        file: "exchange.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("assets/exchange.js"),
    },
];

/// The page; `{{assets}}` becomes the versioned asset folder.
const INDEX_TEMPLATE: &str = include_str!("assets/index.html");
const ASSETS_PLACEHOLDER: &str = "{{assets}}";

/// The page runs only what the binary serves: no inline script, no other origin, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// FNV-1a over the page and every asset: changes whenever any of them does.
const CONTENT_HASH: u64 = {
    const fn fold(mut hash: u64, bytes: &[u8]) -> u64 {
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        hash
    }
    let mut hash = fold(0xcbf2_9ce4_8422_2325, INDEX_TEMPLATE.as_bytes());
    let mut i = 0;
    while i < ASSETS.len() {
        hash = fold(hash, ASSETS[i].file.as_bytes());
        hash = fold(hash, ASSETS[i].body);
        i += 1;
    }
    hash
};

fn assets_version() -> String {
    format!("{CONTENT_HASH:016x}")
}

/// `/` and the assets. No route here starts with `/api`, so the API's paths stay its own.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let version = assets_version();
    let index =
        Bytes::from(INDEX_TEMPLATE.replace(ASSETS_PLACEHOLDER, &format!("assets/{version}")));
    let index_route = get(move |request_headers: HeaderMap| {
        let index = index.clone();
        async move { index_response(&request_headers, index) }
    });
    Router::new()
        .route("/", index_route.clone())
        .route("/index.html", index_route)
        .route(
            "/assets/{version}/{file}",
            get(move |Path((asked_version, file)): Path<(String, String)>| {
                let current = version.clone();
                async move { asset_response(&current, &asked_version, &file) }
            }),
        )
}

fn index_response(request_headers: &HeaderMap, index: Bytes) -> Response {
    let etag = format!("\"{}\"", assets_version());
    let unchanged = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], index).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An asset under any version is served (a page loaded before an upgrade still works), but
/// only the current version's answer may be cached.
fn asset_response(current_version: &str, asked_version: &str, file: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.file == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = if asked_version == current_version {
        CACHE_FOREVER
    } else {
        REVALIDATE
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn assets_have_their_content_types_and_cache_forever_under_the_current_version() {
        let version = assets_version();
        let script = asset_response(&version, &version, "app.js");
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(header_of(&script, header::CONTENT_TYPE), JAVASCRIPT);
        assert_eq!(header_of(&script, header::CACHE_CONTROL), CACHE_FOREVER);
        let style = asset_response(&version, &version, "style.css");
        assert_eq!(
            header_of(&style, header::CONTENT_TYPE),
            "text/css; charset=utf-8"
        );
        let stale = asset_response(&version, "0123", "app.js");
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(header_of(&stale, header::CACHE_CONTROL), REVALIDATE);
        let missing = asset_response(&version, &version, "../mod.rs");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_is_revalidated_by_its_etag() {
        let fresh = index_response(&HeaderMap::new(), Bytes::from_static(b"page"));
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            header_of(&fresh, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_of(&fresh, header::CACHE_CONTROL), REVALIDATE);
        assert!(header_of(&fresh, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let mut asked = HeaderMap::new();
        let etag = header_of(&fresh, header::ETAG).to_string();
        asked.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let again = index_response(&asked, Bytes::from_static(b"page"));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }

    /// Every module the page or a module imports, and every file the page links, is served.
    #[test]
    fn every_referenced_asset_exists() {
        let served = |file: &str| ASSETS.iter().any(|asset| asset.file == file);
        let mut referenced = Vec::new();
        for part in INDEX_TEMPLATE.split(ASSETS_PLACEHOLDER).skip(1) {
            let file: String = part
                .trim_start_matches('/')
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            referenced.push(file);
        }
        for asset in ASSETS.iter().filter(|asset| asset.file.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for part in text.split("from './").skip(1) {
                referenced.push(part.chars().take_while(|c| *c != '\'').collect());
            }
        }
        assert!(referenced.iter().any(|file| file == "app.js"));
        for file in &referenced {
            assert!(served(file), "{file} is referenced but not served");
        }
    }
}
