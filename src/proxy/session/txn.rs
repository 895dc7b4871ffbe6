//! MULTI / EXEC / DISCARD / WATCH / UNWATCH for a proxy client: commands
//! queued while a transaction is open, the block sent to the node of its
//! slot as one request, WATCH pinned to a connection of the client's own.

use super::*;

impl Session {
    /// A command between MULTI and EXEC: checked and queued here; the block
    /// is sent whole at EXEC.
    pub(super) fn queue_in_txn(
        &mut self,
        cmd: &crate::proxy::commands::Command,
        req: Parsed,
        start: Instant,
    ) {
        let metric = cmd.metric;
        let slot = match cmd.route {
            Route::Keyed | Route::Blocking | Route::Split(_) | Route::SlotArg => {
                if cmd.route == Route::SlotArg {
                    None
                } else {
                    match Self::slot_of(cmd, &req.args) {
                        Ok(s) => s,
                        Err(()) => {
                            if let Some(t) = self.txn.as_mut() {
                                t.cross = true;
                            }
                            None
                        }
                    }
                }
            }
            Route::AnyMaster | Route::Channel | Route::Local(Local::Ping | Local::Echo) => None,
            _ => {
                if let Some(t) = self.txn.as_mut() {
                    t.dirty = true;
                }
                let name = cmd.name.replace('|', " ").to_ascii_uppercase();
                return self.ready_err(
                    &format!("ERR proxy: {name} cannot be used inside MULTI through the proxy"),
                    metric,
                    start,
                );
            }
        };
        if let Some(t) = self.txn.as_mut() {
            if let Some(s) = slot {
                match t.slot {
                    None => t.slot = Some(s),
                    Some(x) if x != s => t.cross = true,
                    Some(_) => {}
                }
            }
            t.cmds.push(req.wire());
        }
        self.ready(
            Bytes::from_static(b"+QUEUED\r\n"),
            metric,
            Outcome::Ok,
            start,
        );
    }

    pub(super) fn txn_command(
        &mut self,
        t: Txn,
        cmd: &crate::proxy::commands::Command,
        req: Parsed,
        metric: usize,
        start: Instant,
    ) {
        let proxy = self.proxy.clone();
        match t {
            Txn::Multi => {
                if self.txn.is_some() {
                    return self.ready_err("ERR MULTI calls can not be nested", metric, start);
                }
                self.txn = Some(TxnState::default());
                self.ready(Bytes::from_static(b"+OK\r\n"), metric, Outcome::Ok, start);
            }
            Txn::Discard => {
                if self.txn.take().is_none() {
                    return self.ready_err("ERR DISCARD without MULTI", metric, start);
                }
                self.watch = None;
                self.ready(Bytes::from_static(b"+OK\r\n"), metric, Outcome::Ok, start);
            }
            Txn::Unwatch => {
                if self.txn.is_some() {
                    // Queued like Redis does; it has no effect inside EXEC.
                    return self.ready(
                        Bytes::from_static(b"+QUEUED\r\n"),
                        metric,
                        Outcome::Ok,
                        start,
                    );
                }
                self.watch = None;
                self.ready(Bytes::from_static(b"+OK\r\n"), metric, Outcome::Ok, start);
            }
            Txn::Watch => {
                if self.txn.is_some() {
                    return self.ready_err("ERR WATCH inside MULTI is not allowed", metric, start);
                }
                let Some(req) = self.exclusive(req) else {
                    return;
                };
                let slot = match Self::slot_of(cmd, &req.args) {
                    Ok(Some(s)) => s,
                    _ => return self.ready_err(CROSSSLOT, metric, start),
                };
                if let Some(w) = &self.watch {
                    if w.slot != slot {
                        return self.ready_err(CROSSSLOT, metric, start);
                    }
                }
                if self.watch.is_none() {
                    let map = proxy.router.load();
                    let Some(pool) = map.master_of(slot).cloned() else {
                        return self.ready_err("CLUSTERDOWN Hash slot not served", metric, start);
                    };
                    let conn = pool.dedicated(self.kind());
                    self.watch = Some(WatchState { conn, pool, slot });
                }
                let Some(w) = &self.watch else {
                    return;
                };
                let target = Target::Pinned(w.conn.clone(), w.pool.clone());
                let r = Routed::new(req.wire(), target, self.deadline(start), false);
                self.barrier = true;
                self.send_one(r, metric, start, Post::None);
            }
            Txn::Exec => {
                if self.txn.is_none() {
                    return self.ready_err("ERR EXEC without MULTI", metric, start);
                }
                if self.exclusive(req).is_none() {
                    return;
                }
                let (Some(txn), watch) = (self.txn.take(), self.watch.take()) else {
                    return;
                };
                if txn.dirty {
                    return self.ready_err(
                        "EXECABORT Transaction discarded because of previous errors.",
                        metric,
                        start,
                    );
                }
                let cross =
                    txn.cross || matches!((&watch, txn.slot), (Some(w), Some(s)) if w.slot != s);
                if cross {
                    return self.ready_err(CROSSSLOT, metric, start);
                }
                let mut block = BytesMut::new();
                encode_command(&mut block, &[b"MULTI"]);
                for c in &txn.cmds {
                    block.extend_from_slice(c);
                }
                encode_command(&mut block, &[b"EXEC"]);
                let frames = txn.cmds.len() as u32 + 2;
                let target = match (&watch, txn.slot) {
                    (Some(w), _) => Target::Pinned(w.conn.clone(), w.pool.clone()),
                    (None, Some(s)) => Target::Slot(s),
                    (None, None) => Target::AnyMaster,
                };
                let r =
                    Routed::new(block.freeze(), target, self.deadline(start), false).block(frames);
                self.barrier = true;
                self.send_one(r, metric, start, Post::None);
            }
        }
    }
}
