//! DUMP, RESTORE, RESTORE-ASKING and MIGRATE: moving keys between nodes
//! (what `redis-cli --cluster reshard` drives). Payloads are Redis's own
//! (RDB value, version, CRC-64), so keys move between slotway and Redis
//! nodes alike.
//!
//! MIGRATE talks to the target synchronously while holding the keyspace
//! lock, like Redis: the keys it moves cannot change under it.

use super::flags::*;
use super::Argv;
use super::{err, int_arg, is, syntax_error, CmdResult, CommandSpec, Ctx};
use crate::persist::rdb;
use crate::resp::encode_command;
use crate::resp::Reply;
use bytes::Bytes;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

// One line per command, as the table reads best.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("dump", 2, READONLY, [1, 1, 1], dump_cmd),
    CommandSpec::new("restore", -4, WRITE | DENYOOM, [1, 1, 1], restore),
    CommandSpec::new("restore-asking", -4, WRITE | DENYOOM, [1, 1, 1], restore),
    CommandSpec::new("migrate", -6, WRITE | MOVABLE_KEYS, [3, 3, 1], migrate),
];

fn dump_cmd(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    Ok(ctx.db.peek(a.at(1)?, ctx.now).map_or(Reply::Nil, |e| {
        Reply::Bulk(Bytes::from(rdb::dump_payload(&e.value)))
    }))
}

fn restore(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let ttl = int_arg(a.at(2)?)?;
    if ttl < 0 {
        return Err(err("ERR Invalid TTL value, must be >= 0"));
    }
    let (mut replace, mut absttl) = (false, false);
    let mut i = 4;
    while i < a.len() {
        if is(a.at(i)?, "replace") {
            replace = true;
        } else if is(a.at(i)?, "absttl") {
            absttl = true;
        } else if (is(a.at(i)?, "idletime") || is(a.at(i)?, "freq")) && i + 1 < a.len() {
            int_arg(a.at(i + 1)?)?;
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if !replace && ctx.db.contains(a.at(1)?, ctx.now) {
        return Err(err("BUSYKEY Target key name already exists."));
    }
    let value = rdb::restore_payload(a.at(3)?)
        .ok_or_else(|| err("ERR DUMP payload version or checksum are wrong"))?;
    let expire = match (ttl, absttl) {
        (0, _) => None,
        (t, true) => Some(t as u64),
        (t, false) => Some(ctx.now + t as u64),
    };
    if expire.is_some_and(|at| at <= ctx.now) && !ctx.client.is_master {
        ctx.db.remove(a.at(1)?, ctx.now);
        ctx.propagate_as(vec![Bytes::from_static(b"DEL"), a.at(1)?.clone()]);
        return Ok(Reply::Ok);
    }
    ctx.db.set_with_expire(a.at(1)?, value, expire);
    // A relative TTL travels as an absolute one (Redis 7: ABSTTL).
    if let (Some(at), false, true) = (expire, absttl, ctx.propagating()) {
        let mut cmd = a.to_vec();
        if let Some(t) = cmd.get_mut(2) {
            *t = Bytes::from(at.to_string());
        }
        cmd.push(Bytes::from_static(b"ABSTTL"));
        ctx.propagate_as(cmd);
    }
    Ok(Reply::Ok)
}

/// Reads `n` replies from the target; the first error wins.
fn read_replies(stream: &mut TcpStream, n: usize) -> Result<(), Reply> {
    let mut buf = Vec::new();
    let mut got = 0;
    let mut first_err: Option<String> = None;
    while got < n {
        match decode(&buf) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                got += 1;
                if let OwnedFrame::Error(e) = frame {
                    first_err.get_or_insert(e);
                }
                continue;
            }
            Ok(None) => {}
            Err(_) => return Err(err("IOERR error or timeout reading to target instance")),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(err("IOERR error or timeout reading to target instance")),
            Ok(k) => buf.extend_from_slice(chunk.get(..k).unwrap_or_default()),
        }
    }
    match first_err {
        Some(e) => Err(Reply::Error(format!(
            "ERR Target instance replied with error: {e}"
        ))),
        None => Ok(()),
    }
}

fn migrate(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let host = String::from_utf8_lossy(a.at(1)?).into_owned();
    let port = u16::try_from(int_arg(a.at(2)?)?).map_err(|_| err("ERR Invalid port"))?;
    let timeout = int_arg(a.at(5)?)?.max(1) as u64;
    let (mut copy, mut replace) = (false, false);
    let mut auth: Option<(Option<Bytes>, Bytes)> = None;
    let mut keys: Vec<Bytes> = Vec::new();
    let mut i = 6;
    while i < a.len() {
        if is(a.at(i)?, "copy") {
            copy = true;
        } else if is(a.at(i)?, "replace") {
            replace = true;
        } else if is(a.at(i)?, "auth") && i + 1 < a.len() {
            auth = Some((None, a.at(i + 1)?.clone()));
            i += 1;
        } else if is(a.at(i)?, "auth2") && i + 2 < a.len() {
            auth = Some((Some(a.at(i + 1)?.clone()), a.at(i + 2)?.clone()));
            i += 2;
        } else if is(a.at(i)?, "keys") {
            if !a.at(3)?.is_empty() {
                return Err(err("ERR When using MIGRATE KEYS option, the key argument must be set to the empty string"));
            }
            keys.extend(a.rest(i + 1).iter().cloned());
            break;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if keys.is_empty() {
        keys.push(a.at(3)?.clone());
    }
    let mut payloads = Vec::new();
    for k in &keys {
        if let Some(e) = ctx.db.peek(k, ctx.now) {
            let p = rdb::dump_payload(&e.value);
            let ttl = ctx
                .db
                .expire_at(k, ctx.now)
                .map_or(0, |at| at.saturating_sub(ctx.now).max(1));
            payloads.push((k.clone(), p, ttl));
        }
    }
    if payloads.is_empty() {
        return Ok(Reply::simple("NOKEY"));
    }
    let io_err = || err("IOERR error or timeout connecting to the client");
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|_| io_err())?
        .next()
        .ok_or_else(io_err)?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_millis(timeout)).map_err(|_| io_err())?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(timeout)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(timeout)));
    let mut out = bytes::BytesMut::new();
    let mut expected = payloads.len();
    if let Some((user, pass)) = &auth {
        match user {
            Some(u) => encode_command(&mut out, &[&b"AUTH"[..], &u[..], &pass[..]]),
            None => encode_command(&mut out, &[&b"AUTH"[..], &pass[..]]),
        }
        expected += 1;
    }
    for (k, p, ttl) in &payloads {
        let ttl = ttl.to_string();
        let mut cmd: Vec<&[u8]> = vec![b"RESTORE-ASKING", &k[..], ttl.as_bytes(), &p[..]];
        if replace {
            cmd.push(b"REPLACE");
        }
        encode_command(&mut out, &cmd);
    }
    stream
        .write_all(&out)
        .map_err(|_| err("IOERR error or timeout writing to target instance"))?;
    read_replies(&mut stream, expected)?;
    if !copy {
        let mut del = vec![Bytes::from_static(b"DEL")];
        for (k, _, _) in &payloads {
            ctx.db.remove(k, ctx.now);
            del.push(k.clone());
        }
        // What left this node is a deletion for its replicas.
        ctx.propagate_as(del);
    } else {
        ctx.unchanged();
    }
    Ok(Reply::Ok)
}
