//! The integration tests, one binary (so the gateway, aws-sdk-s3, rdkafka and tonic are
//! linked once): one module per concern. Each starts a gateway on port 0 (in process,
//! or as its own process) and talks to it as clients do. Run one concern with a
//! filter: `scripts/test --test it kafka::`.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod crash;
mod drain;
mod drop_in;
mod fleet;
mod grpc_upload;
mod hostile;
mod kafka;
mod limits;
mod observability;
mod properties;
mod readme;
mod resumable;
mod rest_upload;
mod s3;
mod tls;
mod trust;
mod tus;
mod uploader;
mod validation;
