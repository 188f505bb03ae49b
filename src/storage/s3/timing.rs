//! Every S3 call timed and counted, by operation and result
//! (`upload_gateway_s3_request_duration_seconds`): an interceptor of the SDK, so each
//! attempt (retries included) is one observation, whichever code path made it.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::metrics::Metrics;

pub(super) struct Timing(pub Arc<Metrics>);

impl std::fmt::Debug for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timing")
    }
}

#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Timing {
    fn name(&self) -> &'static str {
        "upload-gateway-s3-timing"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Started(at)) = cfg.load::<Started>() {
            let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
            let ok = context.output_or_error().is_some_and(|r| r.is_ok());
            self.0.s3_request(operation, ok, at.elapsed());
        }
        Ok(())
    }
}
