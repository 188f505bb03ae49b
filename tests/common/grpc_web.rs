//! gRPC-Web calls made by hand, the way browsers and tonic-web clients make them: one
//! framed message in a POST, the answer's messages and trailers as frames in the body
//! (or, for an answer with no messages, the status in the response headers).

/// What a gRPC-Web call answered.
#[derive(Debug, Default)]
pub struct WebAnswer {
    /// The HTTP status of the response.
    pub http: u16,
    /// `grpc-status` from the headers or the trailer frame; empty when the call was
    /// still going (a stream read only up to the frames asked for).
    pub status: String,
    /// `grpc-message`, where there is one.
    pub message: String,
    /// The data frames' messages, in order.
    pub frames: Vec<Vec<u8>>,
}

/// Calls `url` (`{base}/upload.v1.UploadGateway/{Method}`) with one message and extra
/// request headers, and reads the answer until its trailers, its end, or `max_frames`
/// data frames (a stream that never ends on its own: Subscribe).
pub async fn call(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    msg: Vec<u8>,
    max_frames: usize,
) -> WebAnswer {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    let mut req = http
        .post(url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(framed);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let mut resp = req.send().await.expect("the gRPC-Web call gets an answer");
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let mut answer = WebAnswer {
        http: resp.status().as_u16(),
        status: header("grpc-status").unwrap_or_default(),
        message: header("grpc-message").unwrap_or_default(),
        frames: Vec::new(),
    };
    if resp.status() == 200 {
        let ct = header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/grpc-web"), "a gRPC-Web answer: {ct}");
    }
    // Frames: a flag byte (0x80: trailers), a 4-byte length, the bytes.
    let mut buf = Vec::new();
    while answer.frames.len() < max_frames {
        let Some(chunk) = resp.chunk().await.expect("the answer's body reads") else { break };
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let bytes = buf[5..5 + len].to_vec();
            if buf[0] & 0x80 != 0 {
                read_trailers(&String::from_utf8_lossy(&bytes), &mut answer);
            } else {
                answer.frames.push(bytes);
            }
            buf.drain(..5 + len);
        }
    }
    answer
}

/// `grpc-status` and `grpc-message` from a trailer frame (`name:value` lines).
fn read_trailers(text: &str, answer: &mut WebAnswer) {
    for line in text.split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "grpc-status" => answer.status = value.trim().to_string(),
                "grpc-message" => answer.message = value.trim().to_string(),
                _ => {}
            }
        }
    }
}
