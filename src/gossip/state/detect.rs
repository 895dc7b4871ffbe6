//! Failure detection: a peer silent past the node timeout is suspected
//! (PFAIL), suspicions travel in gossip as failure reports, and a majority
//! of masters' reports make it FAIL, which is then broadcast.

use super::*;

impl Bus {
    /// Pings every other node at once with gossip about a new suspect, so
    /// the FAIL quorum forms within one round trip instead of waiting for
    /// each peer's next regular ping (the failover window is mostly this
    /// wait).
    pub(super) fn spread_suspicion(&mut self, suspect: &str, now: u64) {
        let targets: Vec<(Link, NodeId)> = self
            .peers
            .values()
            .filter(|p| {
                p.node.id != suspect
                    && !p.node.flags.handshake
                    && !p.node.flags.pfail
                    && !p.node.flags.fail
            })
            .map(|p| (Self::link_of(&p.node), p.node.id.clone()))
            .collect();
        for (link, id) in targets {
            self.send(link, MsgType::Ping, Some(&id));
            if let Some(p) = self.peers.get_mut(&id) {
                if p.node.ping_sent == 0 {
                    p.node.ping_sent = now;
                }
                p.last_ping = now;
            }
        }
    }

    pub(super) fn mark_failing_if_needed(&mut self, id: &str, now: u64) {
        let window = self.cfg.node_timeout * 2;
        let me_master = self.me.flags.master;
        let needed = self.cluster_size() / 2 + 1;
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        if !p.node.flags.pfail || p.node.flags.fail {
            return;
        }
        p.fail_reports
            .retain(|_, t| now.saturating_sub(*t) <= window);
        let votes = p.fail_reports.len() + usize::from(me_master);
        if votes < needed {
            return;
        }
        p.node.flags.pfail = false;
        p.node.flags.fail = true;
        p.fail_time = now;
        let failed = id.to_string();
        tracing::info!(node_id = %failed, votes, "marking node as failing (quorum reached)");
        // Everyone learns at once, not gossip by gossip.
        let links: Vec<Link> = self
            .peers
            .values()
            .filter(|p| !p.node.flags.handshake && p.node.id != failed)
            .map(|p| Self::link_of(&p.node))
            .collect();
        for link in links {
            let msg = Message {
                kind: MsgType::Fail,
                header: self.header(),
                body: Body::Fail {
                    id: id_bytes(&failed),
                },
            };
            self.out.push_back(Transmit { link, msg });
        }
        self.events.push_back(Event::NodeFailed(failed));
        self.changed();
    }

    /// Failure reports held about `id`.
    pub fn failure_reports(&self, id: &str) -> Option<usize> {
        self.peers.get(id).map(|p| p.fail_reports.len())
    }
}
