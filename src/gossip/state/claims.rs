//! Epochs and slot claims: the highest config epoch wins a slot, equal
//! epochs are made unique, and a node claiming slots with a stale epoch is
//! told (UPDATE) who owns them now.

use super::*;

impl Bus {
    /// Two masters with the same config epoch: the one with the smaller id
    /// takes a new, unique epoch (Redis's collision rule), so every claim
    /// can be ordered.
    pub(super) fn handle_epoch_collision(&mut self, sender: &str, sender_master: bool, epoch: u64) {
        if !sender_master || !self.me.flags.master || epoch != self.me.config_epoch || epoch == 0 {
            return;
        }
        if sender <= self.me.id.as_str() {
            return;
        }
        self.current_epoch += 1;
        self.me.config_epoch = self.current_epoch;
        tracing::info!(node_id = %self.me.id, epoch = self.me.config_epoch, "config epoch collision resolved");
        self.changed();
    }

    pub(super) fn maybe_update(&mut self, link: &Link, sender: &str, h: &Header) {
        let master = h.flags & node_flags::MASTER != 0;
        let current = self
            .peers
            .get(sender)
            .is_some_and(|p| p.node.slots == h.slots);
        if master && !current {
            self.send_updates(link, sender, &h.slots, h.config_epoch);
        }
    }

    /// When `sender` claims slots that a node with a newer config epoch owns,
    /// tell it (UPDATE) so it stops serving them at once.
    pub(super) fn send_updates(
        &mut self,
        link: &Link,
        sender: &str,
        claimed: &SlotSet,
        epoch: u64,
    ) {
        let mut stale_owners: Vec<NodeId> = Vec::new();
        for s in claimed.iter() {
            if let Some(Some(owner)) = self.owners.get(usize::from(s)) {
                if owner != sender && !stale_owners.contains(owner) {
                    let newer = self.node(owner).is_some_and(|n| n.config_epoch > epoch);
                    if newer {
                        stale_owners.push(owner.clone());
                    }
                }
            }
        }
        for owner in stale_owners {
            let Some(n) = self.node(&owner) else { continue };
            let body = Body::Update {
                id: id_bytes(&n.id),
                config_epoch: n.config_epoch,
                slots: Box::new(n.slots.clone()),
            };
            let msg = Message {
                kind: MsgType::Update,
                header: self.header(),
                body,
            };
            self.out.push_back(Transmit {
                link: link.clone(),
                msg,
            });
        }
    }

    /// Gives `sender` every slot it claims whose owner has an older config
    /// epoch: the newest configuration always wins.
    pub(super) fn claim_slots(&mut self, sender: &str, claimed: &SlotSet, epoch: u64) {
        // Nearly every ping repeats what we already know: skip the walk.
        if self
            .peers
            .get(sender)
            .is_some_and(|p| p.node.slots == *claimed)
        {
            return;
        }
        // The master whose slots this node serves (itself, or its master).
        let cur_master = if self.me.flags.master {
            Some(self.me.id.clone())
        } else {
            self.me.master_id.clone()
        };
        let mut moved = false;
        let mut migrated_ours = 0usize;
        for s in claimed.iter() {
            let cur = self.owners.get(usize::from(s)).cloned().flatten();
            if cur.as_deref() == Some(sender) {
                continue;
            }
            // A slot being imported here changes hands only by SETSLOT.
            if self.migrations.importing.contains_key(&s) {
                continue;
            }
            let cur_epoch = cur
                .as_deref()
                .and_then(|id| self.node(id))
                .map_or(0, |n| n.config_epoch);
            if cur.is_some() && cur_epoch >= epoch {
                continue;
            }
            if let Some(old) = cur {
                if old == self.me.id {
                    self.me.slots.remove(s);
                } else if let Some(p) = self.peers.get_mut(&old) {
                    p.node.slots.remove(s);
                }
            }
            if let Some(p) = self.peers.get_mut(sender) {
                p.node.slots.insert(s);
            }
            if let Some(o) = self.owners.get_mut(usize::from(s)) {
                if o.is_some() && *o == cur_master {
                    migrated_ours += 1;
                }
                *o = Some(sender.to_string());
            }
            moved = true;
        }
        if moved {
            self.changed();
        }
        // All the slots of my master (or mine) now belong to the sender:
        // it replaced my master, so follow it (a returning old master
        // turns into a replica of the node promoted in its place).
        if migrated_ours > 0 {
            if let Some(cm) = cur_master {
                let left = self.node(&cm).map_or(0, |n| n.slots.count());
                if left == 0
                    && (self.cfg.allow_replica_migration || claimed.count() == migrated_ours)
                {
                    tracing::info!(
                        node_id = %sender,
                        "configuration change detected: reconfiguring myself as a replica of the new owner of my slots"
                    );
                    self.set_master(sender);
                }
            }
        }
    }
}
