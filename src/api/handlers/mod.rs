//! Endpoint handlers, grouped by resource.

pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod search;
pub mod uploads;

use axum::http::{HeaderMap, HeaderValue, header};

/// A header value built from text that is known to be visible ASCII (digests, names, numbers).
pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header text is visible ASCII")
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
