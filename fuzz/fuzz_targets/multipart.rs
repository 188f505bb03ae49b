//! The multipart front end: any bytes as the body of a REST upload to a running
//! gateway (multipart/form-data, boundary `fuzzb`). The answer is always one of the
//! contract's: 202, 400, 413 or 415; never a 5xx, never a hang.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use upload_gateway::{App, Config};

fn gateway() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let data = std::env::temp_dir().join(format!("upload-gateway-fuzz-multipart-{}", std::process::id()));
            let args = ["gw", "--listen", "127.0.0.1:0", "--max-length", "64KiB", "--data-dir", data.to_str().unwrap()];
            let app = rt.block_on(App::start(Config::from_args(args).unwrap())).unwrap();
            tx.send(app.addr()).unwrap();
            rt.block_on(std::future::pending::<()>());
        });
        rx.recv().unwrap()
    })
}

fuzz_target!(|body: &[u8]| {
    let mut s = TcpStream::connect(gateway()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=fuzzb\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body); // the gateway may answer (and close) before reading it all
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let status = String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).to_string();
    assert!(["202", "400", "413", "415"].contains(&status.as_str()), "answer: {:?}", String::from_utf8_lossy(&answer));
});
