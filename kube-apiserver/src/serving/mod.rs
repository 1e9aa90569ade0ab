//! Serving: the accept loop (plain HTTP or TLS, HTTP/1.1 and HTTP/2), what every request
//! goes through before and after its handler (authentication, authorization, limits, audit),
//! request paths and query strings, and `/metrics`.

pub(crate) mod access;
pub(crate) mod metrics;
pub(crate) mod request;
pub(crate) mod serve;
