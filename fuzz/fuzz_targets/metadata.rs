//! Metadata parsing, as the pipeline of a running gateway does it: any bytes; what
//! is accepted is a JSON object within the limit, what is refused is a 400.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use upload_gateway::{App, Config};

const LIMIT: usize = 4096;

fn app() -> &'static (tokio::runtime::Runtime, App) {
    static APP: OnceLock<(tokio::runtime::Runtime, App)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let data = std::env::temp_dir().join(format!("upload-gateway-fuzz-metadata-{}", std::process::id()));
        let limit = LIMIT.to_string();
        let args = ["gw", "--listen", "127.0.0.1:0", "--metadata-limit", &limit, "--data-dir", data.to_str().unwrap()];
        let app = rt.block_on(App::start(Config::from_args(args).unwrap())).unwrap();
        (rt, app)
    })
}

fuzz_target!(|data: &[u8]| {
    match app().1.pipeline().parse_metadata(data) {
        Ok(v) => assert!(v.is_object() && data.len() <= LIMIT),
        Err(e) => assert_eq!(e.http_status(), 400),
    }
});
