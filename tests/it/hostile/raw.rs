//! A raw HTTP/1.1 client for requests that well-behaved clients refuse to send:
//! scripted writes (all at once, trickled, stalled, flooded) while the answer is read
//! concurrently, so an early answer is seen even while the client is still sending.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One thing the client does on the wire, in order.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes at once.
    Write(Vec<u8>),
    /// Write these bytes one at a time, this far apart.
    Trickle(Vec<u8>, Duration),
    /// Write `total` bytes of `byte` as fast as the server reads them: each 64 KiB
    /// once the server has read everything before it, so that what the client has
    /// written when the answer comes is, within 64 KiB, what the server read.
    Flood(u8, u64),
}

/// What came back.
#[derive(Debug)]
pub enum Answer {
    /// A (final) HTTP response.
    Http { status: u16, head: String, body: String },
    /// The server closed the connection without answering.
    Closed,
    /// Neither an answer nor a close within the patience given.
    Hung,
}

#[derive(Debug)]
pub struct Exchange {
    pub answer: Answer,
    /// Time from connecting until the answer (or the close).
    pub after: Duration,
    /// Bytes the client had written when the answer came.
    pub sent_when_answered: u64,
    /// Bytes the script would have written in all.
    pub script_len: u64,
}

impl Step {
    fn len(&self) -> u64 {
        match self {
            Step::Write(b) | Step::Trickle(b, _) => b.len() as u64,
            Step::Flood(_, n) => *n,
        }
    }
}

/// Connects, runs the script (then keeps the connection open, sending nothing more),
/// and reads until a whole response arrived or the server closed, or `patience` passed.
pub async fn exchange(addr: SocketAddr, script: Vec<Step>, patience: Duration) -> Exchange {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let client = stream.local_addr().expect("a local address");
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let script_len = script.iter().map(Step::len).sum();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for step in script {
                match step {
                    Step::Write(b) => {
                        wr.write_all(&b).await?;
                        sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    Step::Trickle(b, gap) => {
                        for byte in b {
                            wr.write_all(&[byte]).await?;
                            sent.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(gap).await;
                        }
                    }
                    Step::Flood(byte, total) => {
                        let chunk = vec![byte; 64 * 1024];
                        let mut left = total;
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if !crate::common::tcp::wait_read(fd, client, addr).await {
                                break; // the server answered and closed
                            }
                            sent.fetch_add(n as u64, Ordering::SeqCst); // never behind the socket
                            wr.write_all(&chunk[..n]).await?;
                            left -= n as u64;
                        }
                    }
                }
            }
            // Keep the write half open: a stalled client does not say goodbye.
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(wr)
        })
    };
    let read = tokio::time::timeout(patience, read_response(&mut rd)).await;
    let sent_when_answered = sent.load(Ordering::SeqCst);
    writer.abort();
    let answer = read.unwrap_or(Answer::Hung);
    Exchange {
        answer,
        after: started.elapsed(),
        sent_when_answered,
        script_len,
    }
}

/// Reads one final response (skipping `100 Continue`), or notices the close.
async fn read_response(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(answer) = parse(&mut buf) {
            return answer;
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return parse_partial(&buf);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A complete final response at the start of `buf`, if there is one yet.
fn parse(buf: &mut Vec<u8>) -> Option<Answer> {
    loop {
        let end = find(buf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = status_of(&head);
        if status == 100 {
            buf.drain(..end + 4);
            continue;
        }
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if buf.len() < end + 4 + len {
            return None;
        }
        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
        return Some(Answer::Http { status, head, body });
    }
}

fn parse_partial(buf: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(buf).to_string();
    if !text.starts_with("HTTP/") {
        return Answer::Closed;
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer::Http {
        status: status_of(head),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
