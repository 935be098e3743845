//! Our HTTP/1.1 server, shared by the daemon ([`crate::http`]) and the tracker
//! ([`crate::tracker`]); it knows no routes. [`server`] binds and runs the accept loop, [`conn`]
//! each connection (written here rather than by hyper, so local NARs go to the socket with
//! `sendfile(2)`), [`response`] writes a response, [`body`] the two kinds of body (frames pulled
//! from a blocking producer; a NAR's files by [`sendfile`]), [`connections`] caps connections per
//! client and in all, [`range`] parses `Range`. TCP_NODELAY on every connection (narinfos are small
//! writes; Nagle + delayed ACK costs 40 ms each), and graceful shutdown.

pub mod body;
pub mod conn;
pub mod connections;
mod failure;
pub mod range;
mod response;
mod sendfile;
mod server;

pub use failure::{Failure, plain};
pub use server::{bind, serve};
