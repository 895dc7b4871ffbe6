//! A small blocking RESP2 client for the admin CLI, with replies decoded by
//! `redis-protocol` (the CLI talks to our nodes and to real Redis alike).

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: bad reply: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("{addr}: {message}")]
    Server { addr: String, message: String },
}

pub struct Client {
    pub addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        let sock = addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ClientError::Connect {
                addr: addr.into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        let stream =
            TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(|source| {
                ClientError::Connect {
                    addr: addr.into(),
                    source,
                }
            })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_nodelay(true);
        Ok(Client {
            addr: addr.to_string(),
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one command and waits for its reply; error replies are `Err`.
    pub fn call(&mut self, args: &[&str]) -> Result<OwnedFrame, ClientError> {
        let req = crate::resp::command_bytes(args);
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&req).map_err(io)?;
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return match frame {
                        OwnedFrame::Error(message) => Err(ClientError::Server {
                            addr: self.addr.clone(),
                            message,
                        }),
                        f => Ok(f),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    })
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|source| ClientError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(ClientError::Protocol {
                    addr: self.addr.clone(),
                    reason: "connection closed".into(),
                });
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// A reply expected to be text (bulk or simple string).
    pub fn text(&mut self, args: &[&str]) -> Result<String, ClientError> {
        match self.call(args)? {
            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
                Ok(String::from_utf8_lossy(&b).into_owned())
            }
            OwnedFrame::Integer(n) => Ok(n.to_string()),
            other => Err(ClientError::Protocol {
                addr: self.addr.clone(),
                reason: format!("unexpected {other:?}"),
            }),
        }
    }
}
