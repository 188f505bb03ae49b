//! Form parts exactly as contract §2 says (item 1): the payload is the `upload` part
//! when there is one, else the `file` part, whatever their order and sizes; other
//! parts are ignored whatever their size (read through, never kept).

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::common::*;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";
const SMALL: usize = 100;
/// Over the 1 MiB the gateway used to read of a part it did not keep, and over the
/// 4 MiB the multipart parser may hold that is not part data.
const LARGE: usize = 5 << 20;

fn payload_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(format!("{name}.tar.gz")).mime_str(TESTARENO).unwrap()
}

async fn post(t: &TestApp, form: Form) -> (u16, Value) {
    let resp = t.http.post(t.url("/api/ingress/v1/upload")).multipart(form).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn stored(t: &TestApp, id: &str) -> Vec<u8> {
    crate::common::local_bytes(t.data.path(), "quarantine", id).unwrap()
}

#[tokio::test]
async fn upload_wins_over_file_in_either_order_and_at_any_size() {
    let t = spawn_app(&[]).await;
    let mut n = 0;
    for order in [["file", "upload"], ["upload", "file"]] {
        for file_len in [SMALL, LARGE] {
            for upload_len in [SMALL, LARGE] {
                n += 1;
                let case = format!("{order:?}, file {file_len} bytes, upload {upload_len} bytes");
                let file = vec![b'f'; file_len];
                let upload = vec![b'u'; upload_len];
                // An ignored part of its own, large, before, between or after the two.
                let junk_at = n % 3;
                let mut form = Form::new();
                for (i, name) in order.iter().enumerate() {
                    if i == junk_at {
                        form = form.part("junk", Part::bytes(vec![b'j'; LARGE]));
                    }
                    let bytes = if *name == "file" { file.clone() } else { upload.clone() };
                    form = form.part(name.to_string(), payload_part(bytes, name));
                }
                if junk_at == 2 {
                    form = form.part("junk", Part::bytes(vec![b'j'; LARGE]));
                }
                let metadata = format!(r#"{{"case":{n}}}"#);
                form = form.part("metadata", Part::text(metadata).file_name("metadata"));

                let (status, body) = post(&t, form).await;
                assert_eq!(status, 202, "{case}: {body}");
                let id = body["request_id"].as_str().unwrap();
                assert!(stored(&t, id) == upload, "{case}: the stored payload is not the upload part");
                assert_eq!(t.bucket_files("quarantine").len(), n, "{case}: one payload kept per upload");
                let a = t.next_message("platform.upload.testareno", "forms").await;
                let a: Value = serde_json::from_slice(&a.payload).unwrap();
                assert_eq!(a["request_id"], id, "{case}");
                assert_eq!(a["size"], upload_len as u64, "{case}");
                assert_eq!(a["metadata"]["case"], n, "{case}");
            }
        }
    }
}

#[tokio::test]
async fn other_parts_are_ignored_whatever_their_size() {
    let t = spawn_app(&[]).await;
    let file = b"the payload".to_vec();
    let form = Form::new()
        .part("junk", Part::bytes(vec![b'a'; LARGE]))
        .text("comment", "x".repeat(2 << 20))
        .part("file", payload_part(file.clone(), "file"))
        .part("after", Part::bytes(vec![b'b'; LARGE]).file_name("b.bin"));
    let (status, body) = post(&t, form).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stored(&t, body["request_id"].as_str().unwrap()), file);
    assert_eq!(t.bucket_files("quarantine").len(), 1);

    // Only ignored parts, however large: no payload part.
    let form = Form::new().part("junk", Part::bytes(vec![b'a'; LARGE]));
    let (status, body) = post(&t, form).await;
    assert_eq!((status, body.as_str()), (415, Some("Upload field not found")));
}
