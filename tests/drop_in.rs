//! The gateway switched on in place of the services it replaces (issue 17): every form
//! the old clients send, the payloads the old services left in the buckets, metadata
//! kept for re-announcements, every validation field over gRPC, malformed ids as
//! unknown ones, S3 under a least-privilege key, logs without colour codes in pipes.
//! The S3 and Kafka tests need scripts/test (TEST_S3_*, TEST_KAFKA_BROKERS).

mod common;
#[path = "kafka/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "drop_in/embedded.rs"]
mod embedded;
#[path = "drop_in/forms.rs"]
mod forms;
#[path = "drop_in/least_privilege.rs"]
mod least_privilege;
#[path = "drop_in/legacy_s3.rs"]
mod legacy_s3;
#[path = "drop_in/logs.rs"]
mod logs;
