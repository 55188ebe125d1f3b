//! The embedded page is complete and served with the right headers.

use axum::body::to_bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::*;

/// Every `"./name"` or `{{ASSETS}}/name` reference in `text`.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["\"./", "'./", "{{ASSETS}}/"] {
        for (start, _) in text.match_indices(marker) {
            let rest = &text[start + marker.len()..];
            let end = rest.find(|c: char| c == '"' || c == '\'' || c.is_whitespace()).unwrap_or(rest.len());
            found.push(rest[..end].to_owned());
        }
    }
    found
}

#[test]
fn every_file_the_page_or_a_module_loads_is_embedded() {
    let mut sources = vec![("index.html", INDEX_TEMPLATE)];
    sources.extend(ASSETS.iter().filter(|a| a.name.ends_with(".js")).map(|a| (a.name, a.body)));
    let mut checked = 0;
    for (from, text) in sources {
        for name in references(text) {
            assert!(ASSETS.iter().any(|a| a.name == name), "{from} loads {name}, which ASSETS does not embed");
            checked += 1;
        }
    }
    assert!(checked > 10, "found only {checked} references: is the pattern still right?");
}

#[test]
fn the_page_names_this_builds_asset_prefix_and_version() {
    assert_eq!(ASSET_HASH.len(), 12);
    assert!(INDEX.contains(&format!("{}/app.js", asset_prefix())));
    assert!(INDEX.contains(env!("CARGO_PKG_VERSION")));
    assert!(!INDEX.contains("{{"), "a placeholder was left in the page");
}

async fn body(response: Response) -> String {
    String::from_utf8(to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn the_page_is_revalidated_and_assets_are_immutable() {
    let page = index().await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header_of(&page, header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header_of(&page, header::CACHE_CONTROL), "no-cache");
    assert!(header_of(&page, header::CONTENT_SECURITY_POLICY).contains("default-src 'self'"));

    let script = asset(Path((ASSET_HASH.clone(), "app.js".to_owned()))).await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(header_of(&script, header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(header_of(&script, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert_eq!(header_of(&script, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(body(script).await.contains("import"));

    let style = asset(Path((ASSET_HASH.clone(), "app.css".to_owned()))).await;
    assert_eq!(header_of(&style, header::CONTENT_TYPE), "text/css; charset=utf-8");
}

#[tokio::test]
async fn another_builds_prefix_or_an_unknown_file_is_not_found() {
    let stale = asset(Path(("000000000000".to_owned(), "app.js".to_owned()))).await;
    assert_eq!(stale.status(), StatusCode::NOT_FOUND);
    assert_eq!(header_of(&stale, header::CACHE_CONTROL), "no-store");
    let unknown = asset(Path((ASSET_HASH.clone(), "secrets.txt".to_owned()))).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
