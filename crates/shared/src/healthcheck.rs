//! `offload-api healthcheck` / `offload-worker healthcheck`: asks this container's own process
//! for `GET /health/ready`, so images need no curl. Plain HTTP/1.1 over a std socket.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// Asks `addr` (an unspecified address means this host) for `path`; `Ok` on a 200.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let fail = |e: std::io::Error| format!("{target}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(fail)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{target}{path} answered {:?}",
            status_line.lines().next().unwrap_or("")
        ))
    }
}

/// Runs the probe and turns it into the process's exit code, printing why on failure.
pub fn exit_code(addr: SocketAddr) -> i32 {
    match probe(addr, "/health/ready", Duration::from_secs(3)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("not healthy: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_closed_port_is_unhealthy_and_a_200_is_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            // The whole request is read first: closing with part of it unread would answer
            // the probe with a reset instead of the response.
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        });
        assert_eq!(probe(addr, "/health/ready", Duration::from_secs(2)), Ok(()));
        server.join().expect("server");
        assert!(probe(addr, "/health/ready", Duration::from_millis(500)).is_err());
    }
}
