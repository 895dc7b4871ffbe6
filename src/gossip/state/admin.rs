//! Changes an operator makes through CLUSTER commands: MEET, ADDSLOTS /
//! DELSLOTS, SETSLOT, REPLICATE, FORGET, BUMPEPOCH, SET-CONFIG-EPOCH, RESET.

use super::*;

impl Bus {
    /// CLUSTER MEET: start a handshake with the node at ip:port@cport.
    pub fn meet(&mut self, ip: &str, port: u16, cport: u16, now: u64) {
        if self
            .peers
            .values()
            .any(|p| p.node.ip == ip && p.node.cport == cport)
            || (self.me.ip == ip && self.me.cport == cport)
        {
            return;
        }
        let mut node = ClusterNode::new(random_node_id(), ip, port, cport);
        node.flags.handshake = true;
        self.peers
            .insert(node.id.clone(), Peer::new(node, now, true));
    }

    /// The address this node announces (it may change between restarts).
    pub fn set_address(&mut self, ip: &str, port: u16, cport: u16) {
        self.me.ip = ip.to_string();
        self.me.port = port;
        self.me.cport = cport;
    }

    /// CLUSTER DELSLOTS for slots this node owns or knows as owned.
    pub fn del_slots(&mut self, slots: &[u16]) {
        for &s in slots {
            if let Some(Some(owner)) = self.owners.get(usize::from(s)).cloned() {
                if owner == self.me.id {
                    self.me.slots.remove(s);
                } else if let Some(p) = self.peers.get_mut(&owner) {
                    p.node.slots.remove(s);
                }
            }
            if let Some(o) = self.owners.get_mut(usize::from(s)) {
                *o = None;
            }
        }
        self.changed();
    }

    /// CLUSTER REPLICATE: become a replica of `master`.
    pub fn replicate(&mut self, master: &str) -> Result<(), &'static str> {
        if master == self.me.id {
            return Err("ERR Can't replicate myself");
        }
        let Some(p) = self.peers.get(master) else {
            return Err("ERR Unknown node");
        };
        if p.node.flags.slave {
            return Err("ERR I can only replicate a master, not a replica.");
        }
        if !self.me.slots.is_empty() {
            return Err("ERR To set a master the node must be empty and without assigned slots.");
        }
        self.set_master(master);
        Ok(())
    }

    /// CLUSTER FORGET.
    pub fn forget(&mut self, id: &str) -> Result<(), &'static str> {
        if id == self.me.id {
            return Err("ERR I tried hard but I can't forget myself...");
        }
        if self.me.master_id.as_deref() == Some(id) {
            return Err("ERR Can't forget my master!");
        }
        if self.peers.remove(id).is_none() {
            return Err("ERR Unknown node");
        }
        // Other nodes still gossip about it for a while; do not re-add it.
        self.banned.insert(id.to_string(), self.now_hint + 60_000);
        for o in self.owners.iter_mut() {
            if o.as_deref() == Some(id) {
                *o = None;
            }
        }
        self.changed();
        Ok(())
    }

    /// CLUSTER BUMPEPOCH: returns (bumped, new epoch).
    pub fn bump_epoch(&mut self) -> (bool, u64) {
        let max_other = self
            .peers
            .values()
            .map(|p| p.node.config_epoch)
            .max()
            .unwrap_or(0);
        if self.me.config_epoch == 0 || self.me.config_epoch <= max_other {
            self.current_epoch += 1;
            self.me.config_epoch = self.current_epoch;
            self.changed();
            return (true, self.me.config_epoch);
        }
        (false, self.me.config_epoch)
    }

    /// CLUSTER SETSLOT slot IMPORTING|MIGRATING|STABLE|NODE.
    pub fn set_slot(
        &mut self,
        slot: u16,
        action: SetSlot,
        keys_in_slot: usize,
    ) -> Result<(), String> {
        let owner = self.owners.get(usize::from(slot)).cloned().flatten();
        let mine = owner.as_deref() == Some(self.me.id.as_str());
        match action {
            SetSlot::Migrating(to) => {
                if !mine {
                    return Err(format!("ERR I'm not the owner of hash slot {slot}"));
                }
                if !self.peers.contains_key(&to) {
                    return Err(format!("ERR I don't know about node {to}"));
                }
                self.migrations.migrating.insert(slot, to);
            }
            SetSlot::Importing(from) => {
                if mine {
                    return Err(format!("ERR I'm already the owner of hash slot {slot}"));
                }
                if !self.peers.contains_key(&from) {
                    return Err(format!("ERR I don't know about node {from}"));
                }
                self.migrations.importing.insert(slot, from);
            }
            SetSlot::Stable => {
                self.migrations.migrating.remove(&slot);
                self.migrations.importing.remove(&slot);
            }
            SetSlot::Node(id) => {
                if id != self.me.id && !self.peers.contains_key(&id) {
                    return Err(format!("ERR Unknown node {id}"));
                }
                if mine && id != self.me.id && keys_in_slot > 0 {
                    return Err(format!("ERR Can't assign hashslot {slot} to a different node while I still hold keys for this hash slot."));
                }
                // Handing the slot on: the migration is over once no key of
                // it is left here (the owner table may already show the new
                // owner, learned from its broadcast).
                if id != self.me.id && keys_in_slot == 0 {
                    self.migrations.migrating.remove(&slot);
                }
                let imported =
                    id == self.me.id && self.migrations.importing.remove(&slot).is_some();
                if let Some(old) = owner {
                    if old == self.me.id {
                        self.me.slots.remove(slot);
                    } else if let Some(p) = self.peers.get_mut(&old) {
                        p.node.slots.remove(slot);
                    }
                }
                if id == self.me.id {
                    self.me.slots.insert(slot);
                } else if let Some(p) = self.peers.get_mut(&id) {
                    p.node.slots.insert(slot);
                }
                if let Some(o) = self.owners.get_mut(usize::from(slot)) {
                    *o = Some(id);
                }
                if imported {
                    // The slot's new home must win against the old owner's
                    // claim: take a config epoch nobody else has.
                    self.bump_epoch();
                    self.broadcast_pong();
                }
            }
        }
        self.changed();
        Ok(())
    }

    /// CLUSTER RESET SOFT|HARD: forget every node, drop slots, become an
    /// empty master (HARD also takes a new id and zeroes the epochs).
    pub fn reset(&mut self, hard: bool) {
        self.peers.clear();
        self.owners.iter_mut().for_each(|o| *o = None);
        self.me.slots = SlotSet::default();
        self.me.flags.master = true;
        self.me.flags.slave = false;
        self.me.master_id = None;
        self.migrations = Default::default();
        if hard {
            self.me.id = random_node_id();
            self.current_epoch = 0;
            self.last_vote_epoch = 0;
            self.me.config_epoch = 0;
        }
        self.changed();
    }

    /// CLUSTER ADDSLOTS for myself (the caller checked they are free).
    pub fn add_slots(&mut self, slots: &[u16]) {
        for &s in slots {
            self.me.slots.insert(s);
            if let Some(o) = self.owners.get_mut(usize::from(s)) {
                *o = Some(self.me.id.clone());
            }
        }
        self.changed();
    }

    /// CLUSTER SET-CONFIG-EPOCH.
    pub fn set_config_epoch(&mut self, epoch: u64) {
        self.me.config_epoch = epoch;
        self.current_epoch = self.current_epoch.max(epoch);
        self.changed();
    }
}
