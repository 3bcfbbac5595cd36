//! DNS messages on the wire: one request, one answer, over UDP (falling back to TCP when the
//! answer is truncated) or TCP. Used for RFC 2136 updates and for querying authoritative servers.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A DNS exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket error.
    #[error("{server}: {source}")]
    Io {
        /// Server.
        server: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{server}: no answer within {} ms", .timeout.as_millis())]
    Timeout {
        /// Server.
        server: SocketAddr,
        /// How long we waited.
        timeout: Duration,
    },
    /// The message could not be encoded or the answer decoded.
    #[error("{server}: malformed DNS message: {detail}")]
    Malformed {
        /// Server.
        server: SocketAddr,
        /// Cause.
        detail: String,
    },
}

/// How a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP, retried over TCP when the answer is truncated.
    Udp,
    /// TCP only (updates, large answers).
    Tcp,
}

/// A non-recursive query for `name`/`rtype` with EDNS (so answers up to 1232 bytes fit in UDP).
pub fn query_message(name: &Name, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    message
}

/// Sends `request` (already encoded, id `id`) and returns the raw answer bytes.
pub async fn exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    transport: Transport,
    timeout: Duration,
) -> Result<Vec<u8>, WireError> {
    let io = |source| WireError::Io { server, source };
    let run = async {
        if transport == Transport::Udp {
            let answer = udp(server, request, id).await.map_err(io)?;
            // Byte 2, bit 1 is TC: truncated, ask again over TCP.
            if answer.len() > 2 && answer[2] & 0x02 == 0 {
                return Ok(answer);
            }
        }
        tcp(server, request).await.map_err(io)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| WireError::Timeout { server, timeout })?
}

/// Encodes `message`, exchanges it, and decodes the answer.
pub async fn ask(
    server: SocketAddr,
    message: &Message,
    transport: Transport,
    timeout: Duration,
) -> Result<Message, WireError> {
    let bytes = message.to_vec().map_err(|e| WireError::Malformed {
        server,
        detail: e.to_string(),
    })?;
    let answer = exchange(server, &bytes, message.metadata.id, transport, timeout).await?;
    Message::from_vec(&answer).map_err(|e| WireError::Malformed {
        server,
        detail: e.to_string(),
    })
}

async fn udp(server: SocketAddr, request: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Ignore stray datagrams that do not answer our id.
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let len = u16::try_from(request.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// Parses `address` or `address:port` (IPv6 as `[addr]:port`), port 53 by default.
pub fn server_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            server_address("127.0.0.1:5300"),
            Some("127.0.0.1:5300".parse().unwrap())
        );
        assert_eq!(server_address("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            server_address("[::1]:54"),
            Some("[::1]:54".parse().unwrap())
        );
        assert_eq!(server_address("ns1.example.com"), None);
    }
}
