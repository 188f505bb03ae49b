//! How much a gateway has read from a test client's connection, seen from both ends
//! of the loopback connection: the client's send queue (SIOCOUTQ) and the gateway's
//! receive queue (/proc/net/tcp). A client that writes its next piece only once the
//! gateway has read everything before it (`wait_read`) knows, within one piece, how
//! much the gateway took from the socket when it answered: what the client had written.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until the gateway has read everything written on this connection: nothing
/// waits in the client's send queue, nothing unread in the gateway's receive queue.
/// False when the gateway's end is gone (it answered and closed).
pub async fn wait_read(fd: RawFd, client: SocketAddr, server: SocketAddr) -> bool {
    loop {
        match unread(server, client) {
            None => return false,
            Some(0) if unacked(fd) == 0 => return true,
            Some(_) => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    }
}

/// Bytes written on this socket that its peer has not acknowledged yet (0 when the
/// socket cannot tell: the connection was reset).
pub fn unacked(fd: RawFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket the caller owns.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc == 0 { n as u64 } else { 0 }
}

/// Bytes received by the socket `local` (connected to `remote`) that its program has
/// not read yet: the rx_queue column of /proc/net/tcp. None when there is no such
/// socket (any more).
pub fn unread(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    let want = (hex_addr(local)?, hex_addr(remote)?);
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if (cols.get(1).copied()?, cols.get(2).copied()?) != (want.0.as_str(), want.1.as_str()) {
            return None;
        }
        let (_, rx) = cols.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// An IPv4 address as /proc/net/tcp writes it: the address bytes in host order, in hex.
fn hex_addr(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => None,
    }
}
