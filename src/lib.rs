//! upload-gateway: takes payloads in over REST and gRPC on one port, keeps them safe,
//! announces them to their validators, applies verdicts and advertises the result.
//!
//! Start reading at [`pipeline`]: the protocols ([`rest`], [`grpc`]) only translate
//! into it, and it talks to [`storage`] and [`queue`] through traits.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod messages;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod rest;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod uploader;
pub mod validator;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};
