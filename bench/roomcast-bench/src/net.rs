//! TCP connections from many loopback source addresses.
//!
//! One source address has ~28k ephemeral ports, so tens of thousands of
//! connections to one server port need several: connection `i` binds
//! `127.0.0.(2 + i mod 249)` before connecting. Only loopback addresses are
//! ever used, as a source or a target.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Loopback source addresses used: 127.0.0.2 ..= 127.0.0.250.
const FIRST_HOST: u32 = 2;
const HOSTS: u32 = 249;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0} is not a loopback address; the bench only targets this machine")]
    NotLoopback(SocketAddr),
    #[error("cannot bind {source_addr}: {error}")]
    Bind {
        source_addr: Ipv4Addr,
        error: std::io::Error,
    },
    #[error("connect to {target} from {source_addr}: {error}")]
    Connect {
        target: SocketAddr,
        source_addr: Ipv4Addr,
        error: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
}

/// The source address of connection number `index`.
pub fn source_for(index: u64) -> Ipv4Addr {
    let host = FIRST_HOST + (index % HOSTS as u64) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + host)
}

/// Refuses anything but loopback targets.
pub fn check_loopback(target: SocketAddr) -> Result<(), NetError> {
    if target.ip().is_loopback() {
        Ok(())
    } else {
        Err(NetError::NotLoopback(target))
    }
}

/// Connects to `target` from `source` (port chosen by the kernel).
pub async fn connect_from(
    source: Ipv4Addr,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, NetError> {
    check_loopback(target)?;
    let socket = TcpSocket::new_v4().map_err(|error| NetError::Bind {
        source_addr: source,
        error,
    })?;
    // Several bench processes bind the same addresses; TIME_WAIT ports of
    // earlier runs are fine to reuse.
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
        .map_err(|error| NetError::Bind {
            source_addr: source,
            error,
        })?;
    let stream = tokio::time::timeout(timeout, socket.connect(target))
        .await
        .map_err(|_| NetError::Timeout(target))?
        .map_err(|error| NetError::Connect {
            target,
            source_addr: source,
            error,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_loopback_range() {
        assert_eq!(source_for(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_for(248), Ipv4Addr::new(127, 0, 0, 250));
        assert_eq!(source_for(249), Ipv4Addr::new(127, 0, 0, 2));
        assert!(check_loopback("10.0.0.1:80".parse().expect("addr")).is_err());
        assert!(check_loopback("127.0.0.1:80".parse().expect("addr")).is_ok());
    }
}
