//! CLIENT: ID, SETNAME, GETNAME, LIST, INFO, KILL, REPLY, NO-EVICT, HELP.

use super::Argv;
use super::{err, int_arg, is, syntax_error, Action, CmdResult, Ctx};
use crate::node::client::ClientHandle;
use crate::resp::Reply;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn bad_sub(sub: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn all_clients(ctx: &Ctx) -> Vec<Arc<ClientHandle>> {
    let mut v: Vec<Arc<ClientHandle>> = ctx.shared.clients.lock().values().cloned().collect();
    v.sort_by_key(|h| h.id);
    v
}

/// Redis allows client names of printable ASCII without spaces.
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn kill(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let me = ctx.client.id();
    // Old form: CLIENT KILL addr:port → +OK or error.
    if a.len() == 3 {
        let addr = String::from_utf8_lossy(a.at(2)?);
        let target = all_clients(ctx).into_iter().find(|h| h.addr == addr);
        return match target {
            Some(h) => {
                kill_handle(ctx, &h, me);
                Ok(Reply::Ok)
            }
            None => Err(err("ERR No such client")),
        };
    }
    let mut id: Option<u64> = None;
    let mut addr: Option<String> = None;
    let mut laddr: Option<String> = None;
    let mut skipme = true;
    let mut i = 2;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(syntax_error)?;
        if is(a.at(i)?, "id") {
            id = Some(
                u64::try_from(int_arg(v)?)
                    .map_err(|_| err("ERR client-id should be greater than 0"))?,
            );
        } else if is(a.at(i)?, "addr") {
            addr = Some(String::from_utf8_lossy(v).into_owned());
        } else if is(a.at(i)?, "laddr") {
            laddr = Some(String::from_utf8_lossy(v).into_owned());
        } else if is(a.at(i)?, "skipme") {
            skipme = if is(v, "yes") {
                true
            } else if is(v, "no") {
                false
            } else {
                return Err(syntax_error());
            };
        } else if is(a.at(i)?, "type") && (is(v, "master") || is(v, "replica") || is(v, "slave")) {
            // Replication links are not in the client table: they are
            // dropped through the replication handle.
            let repl = &ctx.shared.repl;
            if is(v, "master") {
                let n = i64::from(repl.is_replica());
                repl.drop_master_link();
                return Ok(Reply::Int(n));
            }
            let n = repl.replicas().len() as i64;
            repl.kick_replicas();
            return Ok(Reply::Int(n));
        } else if is(a.at(i)?, "type") || is(a.at(i)?, "user") || is(a.at(i)?, "maxage") {
            // Every client is a normal client of the default user here.
        } else {
            return Err(syntax_error());
        }
        i += 2;
    }
    let mut n = 0;
    for h in all_clients(ctx) {
        if id.is_some_and(|x| x != h.id)
            || addr.as_ref().is_some_and(|x| *x != h.addr)
            || laddr.as_ref().is_some_and(|x| *x != h.laddr)
        {
            continue;
        }
        if skipme && h.id == me {
            continue;
        }
        kill_handle(ctx, &h, me);
        n += 1;
    }
    Ok(Reply::Int(n))
}

fn kill_handle(ctx: &mut Ctx, h: &ClientHandle, me: u64) {
    if h.id == me {
        ctx.action = Some(Action::Close);
    } else {
        h.killed.store(true, Ordering::Release);
        h.kill.notify_one();
    }
}

pub fn client(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    // Ages and idle times are measured on the clock the handles are stamped with.
    let now = crate::runtime::clock::mono_ms();
    if is(sub, "id") && a.len() == 2 {
        return Ok(Reply::Int(ctx.client.id() as i64));
    }
    if is(sub, "setname") && a.len() == 3 {
        if !valid_name(a.at(2)?) {
            return Err(err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        let given = a.at(2)?;
        let name = (!given.is_empty()).then(|| String::from_utf8_lossy(given).into_owned());
        *ctx.client.handle.name.lock() = name;
        return Ok(Reply::Ok);
    }
    if is(sub, "getname") && a.len() == 2 {
        return Ok(ctx.client.handle.name().map_or(Reply::Nil, Reply::bulk));
    }
    if is(sub, "list") {
        let mut ids: Option<Vec<u64>> = None;
        if a.len() > 2 {
            if is(a.at(2)?, "id") && a.len() > 3 {
                let mut v = Vec::new();
                for x in a.rest(3) {
                    v.push(u64::try_from(int_arg(x)?).map_err(|_| err("ERR Invalid client ID"))?);
                }
                ids = Some(v);
            } else if !(is(a.at(2)?, "type") && a.len() == 4) {
                return Err(syntax_error());
            }
        }
        // Our own line reflects the command running now.
        ctx.client.publish_name_now("client|list");
        let mut text = String::new();
        for h in all_clients(ctx) {
            if ids.as_ref().is_some_and(|v| !v.contains(&h.id)) {
                continue;
            }
            text.push_str(&h.info_line(now));
            text.push('\n');
        }
        return Ok(Reply::Verbatim(Bytes::from(text)));
    }
    if is(sub, "info") && a.len() == 2 {
        ctx.client.publish_name_now("client|info");
        return Ok(Reply::Verbatim(Bytes::from(format!(
            "{}\n",
            ctx.client.handle.info_line(now)
        ))));
    }
    if is(sub, "kill") && a.len() >= 3 {
        return kill(ctx, a);
    }
    if is(sub, "reply") && a.len() == 3 {
        if is(a.at(2)?, "on") {
            ctx.client.reply_off = false;
            return Ok(Reply::Ok);
        }
        if is(a.at(2)?, "off") {
            ctx.client.reply_off = true;
            return Ok(Reply::Ok);
        }
        if is(a.at(2)?, "skip") {
            ctx.client.skip_replies = 2;
            // SKIP also skips this command's own reply.
            return Ok(Reply::Ok);
        }
        return Err(syntax_error());
    }
    if is(sub, "no-evict") && a.len() == 3 {
        let on = a.at(2)?;
        if !is(on, "on") && !is(on, "off") {
            return Err(syntax_error());
        }
        ctx.client
            .handle
            .no_evict
            .store(is(on, "on"), Ordering::Relaxed);
        return Ok(Reply::Ok);
    }
    if is(sub, "no-touch") && a.len() == 3 {
        return Ok(Reply::Ok);
    }
    if is(sub, "pause") && (a.len() == 3 || a.len() == 4) {
        let ms =
            int_arg(a.at(2)?).map_err(|_| err("ERR timeout is not an integer or out of range"))?;
        if ms < 0 {
            return Err(err("ERR timeout is negative"));
        }
        let all = match a.get(3) {
            None => true,
            Some(m) if is(m, "all") => true,
            Some(m) if is(m, "write") => false,
            Some(_) => return Err(err("ERR CLIENT PAUSE mode must be WRITE or ALL")),
        };
        ctx.shared.pause(
            crate::runtime::clock::mono_ms().saturating_add(ms as u64),
            all,
        );
        return Ok(Reply::Ok);
    }
    if is(sub, "unpause") {
        if a.len() != 2 {
            return Err(err(
                "ERR wrong number of arguments for 'client|unpause' command",
            ));
        }
        ctx.shared.pause(0, false);
        return Ok(Reply::Ok);
    }
    if is(sub, "setinfo") && a.len() == 4 {
        return Ok(Reply::Ok);
    }
    if is(sub, "help") {
        return Ok(Reply::array_of_bulks([
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are: ID, ADDR, LADDR, SKIPME (yes|no).",
            "LIST [options ...]",
            "    Return information about client connections.",
            "PAUSE <timeout> [WRITE|ALL]",
            "    Suspend all, or just write, clients for <timeout> milliseconds.",
            "REPLY (ON|OFF|SKIP)",
            "    Control the replies sent to the current connection.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "UNPAUSE",
            "    Stop the current client pause, resuming traffic.",
            "HELP",
            "    Print this help.",
        ]));
    }
    Err(bad_sub(sub))
}
