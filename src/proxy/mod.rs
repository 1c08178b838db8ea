//! The data plane: accept → negotiate → policy → route → authenticate → backend → relay.
//!
//! Nothing here reads or writes pgssl's state on disk, runs the admin server or parses the command
//! line: the control plane hands it a [`settings::LiveSettings`] snapshot through a
//! [`settings::SettingsCell`] and swaps it when an apply or SIGHUP asks.

/// Implements `AsyncRead` and `AsyncWrite` for an enum whose every variant holds one stream (boxed or
/// not), by forwarding each call to it: the client side and the repository side each have a few kinds
/// of stream, and the relay sees one type per side. A variant may carry attributes (`#[cfg(test)]`).
macro_rules! forward_io {
    ($ty:ident: $($(#[$attr:meta])* $variant:ident),+) => {
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($(#[$attr])* $ty::$variant(s) => std::pin::Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }

        forward_write!($ty: $($(#[$attr])* $variant),+);
    };
}

/// The `AsyncWrite` half of [`forward_io!`], for a type that reads its own way.
macro_rules! forward_write {
    ($ty:ident: $($(#[$attr:meta])* $variant:ident),+) => {
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $($(#[$attr])* $ty::$variant(s) => std::pin::Pin::new(s).poll_write(cx, buf),)+
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($(#[$attr])* $ty::$variant(s) => std::pin::Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($(#[$attr])* $ty::$variant(s) => std::pin::Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

pub mod auth;
pub mod backend;
pub mod cancel_route;
pub mod cert_login;
pub mod connection;
pub mod identity;
pub mod inventory;
pub mod login;
pub mod metrics;
pub mod negotiate;
pub mod policy;
pub mod pooling;
pub mod prefill;
pub mod protocol;
pub mod relay;
pub mod relayed_client;
pub mod repository;
pub mod route;
pub mod server;
pub mod session;
pub mod sessions;
pub mod settings;
pub mod startups;
pub mod stream;

#[cfg(test)]
mod tests;
