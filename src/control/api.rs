//! The admin API's contract, shared by the server (`admin/`) and its client (`cli::remote`): the
//! names both sides must agree on.

/// The session cookie.
pub const SESSION_COOKIE: &str = "pgssl_admin";
/// The CSRF header of API change requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
