//! The replica's side of Redis's replication handshake as a state machine
//! with no I/O: it says what to send, the driver feeds it the master's
//! reply lines.
//!
//! PING, [AUTH], REPLCONF listening-port, REPLCONF capa eof capa psync2,
//! PSYNC <replid> <offset+1>, then +FULLRESYNC or +CONTINUE, exactly as
//! redis-server 7.0 does it (including which errors it tolerates).

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this command, then feed the reply line to `on_reply`.
    Send(Vec<Vec<u8>>),
    /// Full resync: an RDB payload follows, then the stream from `offset`.
    FullResync { replid: String, offset: u64 },
    /// Partial resync from our offset; `new_replid` if the master's id
    /// differs from the one we asked for (it was promoted since).
    Continue { new_replid: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The master said no (wrong password, loading, no link to its own
    /// master...); try again later.
    #[error("master refused: {0}")]
    Refused(String),
    #[error("unexpected reply from master: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ping,
    Auth,
    Port,
    Capa,
    Psync,
    Done,
}

/// Credentials for the master (`masteruser`, `masterauth`).
#[derive(Debug, Clone)]
pub struct MasterAuth {
    pub user: Option<String>,
    pub pass: String,
}

#[derive(Debug)]
pub struct Handshake {
    state: State,
    auth: Option<MasterAuth>,
    listening_port: u16,
    replid: String,
    /// Bytes of the master's stream we already have.
    offset: u64,
}

fn cmd(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

impl Handshake {
    /// Starts a handshake; returns the first command to send. `replid` and
    /// `offset` are what we have (our own when we were a master: the new
    /// master may be a promoted replica of ours that can continue us).
    pub fn start(
        auth: Option<MasterAuth>,
        listening_port: u16,
        replid: &str,
        offset: u64,
    ) -> (Self, Next) {
        (
            Handshake {
                state: State::Ping,
                auth,
                listening_port,
                replid: replid.to_string(),
                offset,
            },
            Next::Send(cmd(&["PING"])),
        )
    }

    fn after_ping(&mut self) -> Next {
        match &self.auth {
            Some(a) => {
                self.state = State::Auth;
                match &a.user {
                    Some(u) => Next::Send(cmd(&["AUTH", u, &a.pass])),
                    None => Next::Send(cmd(&["AUTH", &a.pass])),
                }
            }
            None => self.send_port(),
        }
    }

    fn send_port(&mut self) -> Next {
        self.state = State::Port;
        Next::Send(cmd(&[
            "REPLCONF",
            "listening-port",
            &self.listening_port.to_string(),
        ]))
    }

    fn send_psync(&mut self) -> Next {
        self.state = State::Psync;
        let next = (self.offset + 1).to_string();
        Next::Send(cmd(&["PSYNC", &self.replid, &next]))
    }

    /// One reply line from the master (without the trailing CRLF).
    pub fn on_reply(&mut self, line: &str) -> Result<Next, HandshakeError> {
        let err = line.strip_prefix('-');
        match self.state {
            State::Ping => match err {
                // A master with a password answers PING with NOAUTH: fine,
                // AUTH comes next (Redis accepts these three).
                Some(e)
                    if !(e.starts_with("NOAUTH")
                        || e.starts_with("NOPERM")
                        || e.starts_with("ERR operation not permitted")) =>
                {
                    Err(HandshakeError::Refused(e.to_string()))
                }
                _ => Ok(self.after_ping()),
            },
            State::Auth => match err {
                Some(e) => Err(HandshakeError::Refused(e.to_string())),
                None => Ok(self.send_port()),
            },
            // Old masters may not know REPLCONF: Redis goes on regardless.
            State::Port => {
                self.state = State::Capa;
                Ok(Next::Send(cmd(&[
                    "REPLCONF", "capa", "eof", "capa", "psync2",
                ])))
            }
            State::Capa => Ok(self.send_psync()),
            State::Psync => {
                if let Some(e) = err {
                    return Err(HandshakeError::Refused(e.to_string()));
                }
                let mut words = line.trim_start_matches('+').split_whitespace();
                match words.next() {
                    Some("FULLRESYNC") => {
                        let replid = words.next().unwrap_or_default().to_string();
                        let offset = words.next().and_then(|o| o.parse::<u64>().ok());
                        match offset {
                            Some(offset) if replid.len() == 40 => {
                                self.state = State::Done;
                                Ok(Next::FullResync { replid, offset })
                            }
                            _ => Err(HandshakeError::Protocol(line.to_string())),
                        }
                    }
                    Some("CONTINUE") => {
                        self.state = State::Done;
                        let new_replid = words
                            .next()
                            .filter(|id| id.len() == 40 && *id != self.replid)
                            .map(str::to_string);
                        Ok(Next::Continue { new_replid })
                    }
                    _ => Err(HandshakeError::Protocol(line.to_string())),
                }
            }
            State::Done => Err(HandshakeError::Protocol(line.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(n: &Next) -> String {
        match n {
            Next::Send(parts) => parts
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            other => format!("{other:?}"),
        }
    }

    const ID: &str = "0123456789012345678901234567890123456789";
    const ID2: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";

    #[test]
    fn full_resync_with_a_password() {
        let auth = MasterAuth {
            user: None,
            pass: "secret".into(),
        };
        let (mut h, first) = Handshake::start(Some(auth), 7001, ID, 99);
        assert_eq!(sent(&first), "PING");
        let n = h.on_reply("-NOAUTH Authentication required.").unwrap();
        assert_eq!(sent(&n), "AUTH secret");
        let n = h.on_reply("+OK").unwrap();
        assert_eq!(sent(&n), "REPLCONF listening-port 7001");
        let n = h.on_reply("+OK").unwrap();
        assert_eq!(sent(&n), "REPLCONF capa eof capa psync2");
        let n = h.on_reply("-ERR unknown").unwrap();
        assert_eq!(sent(&n), format!("PSYNC {ID} 100"));
        let n = h.on_reply(&format!("+FULLRESYNC {ID2} 5000")).unwrap();
        assert_eq!(
            n,
            Next::FullResync {
                replid: ID2.into(),
                offset: 5000
            }
        );
    }

    #[test]
    fn continue_with_and_without_a_new_id() {
        for (reply, want) in [
            ("+CONTINUE".to_string(), None),
            (format!("+CONTINUE {ID}"), None),
            (format!("+CONTINUE {ID2}"), Some(ID2.to_string())),
        ] {
            let (mut h, _) = Handshake::start(None, 1, ID, 0);
            h.on_reply("+PONG").unwrap();
            h.on_reply("+OK").unwrap();
            assert_eq!(sent(&h.on_reply("+OK").unwrap()), format!("PSYNC {ID} 1"));
            assert_eq!(
                h.on_reply(&reply).unwrap(),
                Next::Continue { new_replid: want }
            );
        }
    }

    #[test]
    fn refusals_and_garbage() {
        let (mut h, _) = Handshake::start(None, 1, ID, 0);
        assert!(matches!(
            h.on_reply("-LOADING Redis is loading"),
            Err(HandshakeError::Refused(_))
        ));
        let (mut h, _) = Handshake::start(
            Some(MasterAuth {
                user: Some("u".into()),
                pass: "p".into(),
            }),
            1,
            ID,
            0,
        );
        assert_eq!(sent(&h.on_reply("+PONG").unwrap()), "AUTH u p");
        assert!(matches!(
            h.on_reply("-WRONGPASS invalid username-password pair"),
            Err(HandshakeError::Refused(_))
        ));
        let (mut h, _) = Handshake::start(None, 1, ID, 0);
        for r in ["+PONG", "+OK", "+OK"] {
            h.on_reply(r).unwrap();
        }
        assert!(matches!(
            h.on_reply("+FULLRESYNC short 1"),
            Err(HandshakeError::Protocol(_))
        ));
        let (mut h, _) = Handshake::start(None, 1, ID, 0);
        for r in ["+PONG", "+OK", "+OK"] {
            h.on_reply(r).unwrap();
        }
        assert!(matches!(
            h.on_reply("-NOMASTERLINK Can't SYNC while not connected with my master"),
            Err(HandshakeError::Refused(_))
        ));
    }
}
