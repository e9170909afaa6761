//! The trading UI: static files compiled into the binary (no build step, no files to deploy).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(path, content type, body)` of every UI file.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("/style.css", "text/css; charset=utf-8", include_str!("../ui/style.css")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("/conn.js", "text/javascript; charset=utf-8", include_str!("../ui/conn.js")),
    ("/auction.html", "text/html; charset=utf-8", include_str!("../ui/auction.html")),
    ("/auction", "text/html; charset=utf-8", include_str!("../ui/auction.html")),
    ("/auction.js", "text/javascript; charset=utf-8", include_str!("../ui/auction.js")),
    ("/sparkline.js", "text/javascript; charset=utf-8", include_str!("../ui/sparkline.js")),
    ("/toast.js", "text/javascript; charset=utf-8", include_str!("../ui/toast.js")),
    ("/detail.js", "text/javascript; charset=utf-8", include_str!("../ui/detail.js")),
    ("/depth.js", "text/javascript; charset=utf-8", include_str!("../ui/depth.js")),
    ("/chart.js", "text/javascript; charset=utf-8", include_str!("../ui/chart.js")),
    ("/format.js", "text/javascript; charset=utf-8", include_str!("../ui/format.js")),
];

/// Serves a UI file, or a JSON 404.
pub fn serve(path: &str) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, body)) => {
            ([(header::CONTENT_TYPE, *ct), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => crate::http::error(StatusCode::NOT_FOUND, "not_found", &format!("no such path {path}")),
    }
}
