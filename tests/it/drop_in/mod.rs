//! The gateway switched on in place of the services it replaces (issue 17): every form
//! the old clients send, the payloads the old services left in the buckets, metadata
//! kept for re-announcements, every validation field over gRPC, malformed ids as
//! unknown ones, S3 under a least-privilege key, logs without colour codes in pipes.
//! The S3 and Kafka tests need scripts/test (TEST_S3_*, TEST_KAFKA_BROKERS).

mod embedded;
mod forms;
mod least_privilege;
mod legacy_s3;
mod logs;
