//! Marquee's gateway: all network IO. The tokio runtime, the HTTP API, the WebSocket, QUIC and SignalR adapters over the engine's
//! sans-IO sessions of `marquee-protocol`, the embedded trading UI and the feed threads. The engine and the feeds
//! open no sockets; this crate is the only one that does.
#![forbid(unsafe_code)]

pub mod auction;
pub mod auth;
pub mod config;
pub(crate) mod driver;
pub mod feed;
pub mod http;
pub mod procstat;
pub mod quic;
pub mod server;
pub mod signalr;
pub mod ui;
pub mod ws;

pub use config::{Cli, Config};
pub use server::run;
