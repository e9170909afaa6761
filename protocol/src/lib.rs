//! Marquee's protocols: each client connection as a state machine with no IO, over the data-plane core
//! (`marquee-engine`).
//!
//! - [`Session`] ([`native`]): the native protocol (JSON ops in, JSON or binary batches out), for WebSocket and QUIC.
//! - [`HubSession`] ([`hub`]): the SignalR hub protocol (JSON or [`msgpack`]), for SignalR's three transports.
//! - [`decode`]: the client side of the native binary encoding, for loadgen, tests and Rust clients.
//!
//! Both sessions share [`Connection`], the interface a transport adapter drives: frames in
//! ([`Connection::handle_frame`]), batches out ([`Connection::poll_transmit`], then [`Connection::sent`]), the
//! operations the session cannot carry out itself ([`Connection::poll_op`], answered with
//! [`Connection::handle_op_result`]), and the close ([`Connection::poll_close`]). Time comes in as arguments, so
//! tests run on simulated time.

#![forbid(unsafe_code)]

mod conn;
pub mod decode;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod hub_framing;
pub mod msgpack;
pub mod native;

pub use conn::{AppOp, CloseReason, Connection, Identity, SessionConfig, Timers, code};
pub use hub::{HubSession, ReplayBudget};
pub use hub_framing::{HubFraming, HubStream};
pub use native::Session;
