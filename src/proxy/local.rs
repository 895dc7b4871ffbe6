//! Commands the proxy answers itself: connection handshake and state
//! (PING, HELLO, AUTH, SELECT, CLIENT SETNAME ...), its own INFO, and the
//! CLUSTER commands that make cluster-aware clients see a one-node cluster
//! at the proxy's address owning every slot (so they send everything here).

use crate::proxy::commands::Local;
use crate::proxy::Proxy;
use crate::resp::{Proto, Reply};
use bytes::Bytes;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

/// The state of one client connection that commands can read or change.
pub struct ClientState {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub name: Option<Bytes>,
    pub proto: Proto,
    pub authed: bool,
    /// `READONLY` was sent: reads may go to replicas.
    pub readonly: bool,
    pub created: Instant,
    pub last_active: Instant,
}

/// What a local command answers: usually one reply; UNSUBSCRIBE outside
/// subscribe mode answers one per channel.
pub struct LocalReply {
    pub replies: Vec<Reply>,
    pub close: bool,
}

fn reply(r: Reply) -> LocalReply {
    LocalReply {
        replies: vec![r],
        close: false,
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn check_password(proxy: &Proxy, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Reply> {
    if proxy.cfg.requirepass.is_empty() {
        if user.is_none() {
            return Err(Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        }
        // No password: the default user accepts anything, like Redis.
        return if user == Some(b"default") {
            Ok(())
        } else {
            Err(Reply::error(WRONGPASS))
        };
    }
    let user_ok = user.is_none_or(|u| u == b"default");
    // Constant-time enough for a shared secret on a proxy: compare all
    // bytes regardless of where they differ.
    let want = proxy.cfg.requirepass.as_bytes();
    let same = want.len() == pass.len()
        && want.iter().zip(pass).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if user_ok && same {
        Ok(())
    } else {
        Err(Reply::error(WRONGPASS))
    }
}

/// The proxy's own id in CLUSTER NODES/SLOTS/SHARDS/MYID.
fn node_id(proxy: &Proxy) -> &str {
    &proxy.node_id
}

fn my_addr(st: &ClientState, proxy: &Proxy) -> (String, u16) {
    // The address this client reached us at is the one it can reach again.
    let ip = st.local.ip();
    let ip = if ip.is_unspecified() {
        proxy.listen.ip()
    } else {
        ip
    };
    (ip.to_string(), st.local.port())
}

fn client_line(st: &ClientState) -> String {
    let now = Instant::now();
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={}\n",
        st.id,
        st.peer,
        st.local,
        st.name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default(),
        now.duration_since(st.created).as_secs(),
        now.duration_since(st.last_active).as_secs(),
        if st.proto == Proto::Resp3 { 3 } else { 2 }
    )
}

/// Runs a command the proxy answers itself.
pub fn run(proxy: &Proxy, st: &mut ClientState, which: Local, args: &[Bytes]) -> LocalReply {
    let arg = |i: usize| args.get(i).map(|b| &b[..]);
    match which {
        Local::Ping => match arg(1) {
            None => reply(Reply::simple("PONG")),
            Some(m) => reply(Reply::bulk(m)),
        },
        Local::Echo => reply(Reply::bulk(arg(1).unwrap_or_default())),
        Local::Quit => LocalReply {
            replies: vec![Reply::Ok],
            close: true,
        },
        Local::Auth => {
            let (user, pass) = match args.len() {
                2 => (None, arg(1).unwrap_or_default()),
                3 => (arg(1), arg(2).unwrap_or_default()),
                _ => return reply(Reply::error("ERR syntax error")),
            };
            match check_password(proxy, user, pass) {
                Ok(()) => {
                    st.authed = true;
                    reply(Reply::Ok)
                }
                Err(e) => reply(e),
            }
        }
        Local::Hello => hello(proxy, st, args),
        Local::Select => match arg(1).and_then(crate::resp::parse_i64) {
            Some(0) => reply(Reply::Ok),
            Some(_) => reply(Reply::error("ERR SELECT is not allowed in cluster mode")),
            None => reply(Reply::error("ERR value is not an integer or out of range")),
        },
        Local::Reset => {
            st.name = None;
            st.proto = Proto::Resp2;
            st.readonly = false;
            st.authed = proxy.cfg.requirepass.is_empty();
            reply(Reply::simple("RESET"))
        }
        Local::Readonly => {
            st.readonly = true;
            reply(Reply::Ok)
        }
        Local::Readwrite => {
            st.readonly = false;
            reply(Reply::Ok)
        }
        Local::Asking => reply(Reply::Ok),
        Local::Info => reply(Reply::Verbatim(Bytes::from(info(
            proxy,
            args.get(1..).unwrap_or_default(),
        )))),
        Local::Role => reply(Reply::Array(vec![
            Reply::bulk("master"),
            Reply::Int(0),
            Reply::Array(vec![]),
        ])),
        Local::ClientSetname => {
            let name = arg(2).unwrap_or_default();
            if name.iter().any(|c| *c <= b' ' || *c > b'~') {
                return reply(Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            st.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
            reply(Reply::Ok)
        }
        Local::ClientGetname => reply(Reply::bulk_opt(st.name.as_ref())),
        Local::ClientId => reply(Reply::Int(st.id as i64)),
        Local::ClientInfo => reply(Reply::Verbatim(Bytes::from(client_line(st)))),
        Local::ClientList => reply(Reply::Verbatim(Bytes::from(client_line(st)))),
        Local::ClientNoop => reply(Reply::Ok),
        Local::AclWhoami => reply(Reply::bulk("default")),
        Local::ClusterMyid => reply(Reply::bulk(node_id(proxy))),
        Local::ClusterKeyslot => {
            let key = arg(2).unwrap_or_default();
            reply(Reply::Int(i64::from(crate::cluster::key_hash_slot(key))))
        }
        Local::ClusterEmpty => reply(Reply::Array(vec![])),
        Local::ClusterSlots => {
            let (ip, port) = my_addr(st, proxy);
            let meta = if st.proto == Proto::Resp3 {
                Reply::Map(vec![])
            } else {
                Reply::Array(vec![])
            };
            reply(Reply::Array(vec![Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(16383),
                Reply::Array(vec![
                    Reply::bulk(&ip),
                    Reply::Int(i64::from(port)),
                    Reply::bulk(node_id(proxy)),
                    meta,
                ]),
            ])]))
        }
        Local::ClusterShards => {
            let (ip, port) = my_addr(st, proxy);
            let node = Reply::Map(vec![
                (Reply::bulk("id"), Reply::bulk(node_id(proxy))),
                (Reply::bulk("port"), Reply::Int(i64::from(port))),
                (Reply::bulk("ip"), Reply::bulk(&ip)),
                (Reply::bulk("endpoint"), Reply::bulk(&ip)),
                (Reply::bulk("role"), Reply::bulk("master")),
                (Reply::bulk("replication-offset"), Reply::Int(0)),
                (Reply::bulk("health"), Reply::bulk("online")),
            ]);
            reply(Reply::Array(vec![Reply::Map(vec![
                (
                    Reply::bulk("slots"),
                    Reply::Array(vec![Reply::Int(0), Reply::Int(16383)]),
                ),
                (Reply::bulk("nodes"), Reply::Array(vec![node])),
            ])]))
        }
        Local::ClusterNodes => {
            let (ip, port) = my_addr(st, proxy);
            let epoch = proxy.router.load().epoch;
            let cport = u32::from(port) + 10000;
            let cport = if cport > 65535 { 0 } else { cport };
            reply(Reply::Verbatim(Bytes::from(format!(
                "{} {ip}:{port}@{cport} myself,master - 0 0 {epoch} connected 0-16383\n",
                node_id(proxy)
            ))))
        }
        Local::ClusterInfo => {
            let map = proxy.router.load();
            let ok = map.covered() == crate::cluster::SLOTS;
            reply(Reply::Verbatim(Bytes::from(format!(
                "cluster_enabled:1\r\ncluster_state:{}\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:{}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
                if ok { "ok" } else { "fail" },
                map.covered(),
                crate::cluster::SLOTS - map.covered(),
                map.epoch,
                map.epoch
            ))))
        }
        Local::Unsubscribe => {
            // Not subscribed: one confirmation per channel (or one with a
            // nil channel), each saying 0 subscriptions remain.
            let kind = args
                .first()
                .map(|a| a.to_ascii_lowercase())
                .unwrap_or_default();
            let confirm = |ch: Reply| {
                let items = vec![Reply::bulk(&kind), ch, Reply::Int(0)];
                if st.proto == Proto::Resp3 {
                    Reply::Push(items)
                } else {
                    Reply::Array(items)
                }
            };
            let mut replies: Vec<Reply> = args
                .iter()
                .skip(1)
                .map(|c| confirm(Reply::bulk(c)))
                .collect();
            if replies.is_empty() {
                replies.push(confirm(Reply::Nil));
            }
            LocalReply {
                replies,
                close: false,
            }
        }
    }
}

fn hello(proxy: &Proxy, st: &mut ClientState, args: &[Bytes]) -> LocalReply {
    let mut proto = st.proto;
    if let Some(v) = args.get(1) {
        match crate::resp::parse_i64(v) {
            Some(2) => proto = Proto::Resp2,
            Some(3) => proto = Proto::Resp3,
            Some(_) => return reply(Reply::error("NOPROTO unsupported protocol version")),
            None => {
                return reply(Reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        }
    }
    let mut i = 2;
    let mut name = None;
    let mut authed_now = false;
    while i < args.len() {
        let opt = args
            .get(i)
            .map(|a| a.to_ascii_lowercase())
            .unwrap_or_default();
        match opt.as_slice() {
            b"auth" if i + 2 < args.len() => {
                let user = args.get(i + 1).map(|b| &b[..]);
                let pass = args.get(i + 2).map(|b| &b[..]).unwrap_or_default();
                if let Err(e) = check_password(proxy, user, pass) {
                    return reply(e);
                }
                authed_now = true;
                i += 3;
            }
            b"setname" if i + 1 < args.len() => {
                name = args.get(i + 1).cloned();
                i += 2;
            }
            _ => {
                return reply(Reply::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(args.get(i).map(|b| &b[..]).unwrap_or_default())
                )))
            }
        }
    }
    if authed_now {
        st.authed = true;
    }
    if !st.authed {
        return reply(Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(n) = name {
        st.name = (!n.is_empty()).then_some(n);
    }
    st.proto = proto;
    reply(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(crate::util::VERSION)),
        (
            Reply::bulk("proto"),
            Reply::Int(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (Reply::bulk("id"), Reply::Int(st.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![])),
    ]))
}

/// Whether INFO with these section arguments includes `# Keyspace`
/// (Redis: no argument, `default`, `all`, `everything` or `keyspace`).
pub fn info_wants_keyspace(sections: &[Bytes]) -> bool {
    sections.is_empty()
        || sections.iter().any(|s| {
            ["all", "default", "everything", "keyspace"]
                .iter()
                .any(|w| s.eq_ignore_ascii_case(w.as_bytes()))
        })
}

/// The proxy's INFO: Redis's field names where they mean the same thing
/// (clients and dashboards parse them), plus a `# Proxy` section. The
/// Keyspace section is the masters' summed (see `fanout::Plan::Info`);
/// here it is only the header, for when no master can be asked.
pub fn info(proxy: &Proxy, sections: &[Bytes]) -> String {
    let mut out = info_sections(proxy, sections);
    if info_wants_keyspace(sections) {
        out.push_str(if out.is_empty() { "" } else { "\r\n" });
        out.push_str("# Keyspace\r\n");
    }
    out
}

/// The proxy's own sections of INFO, without Keyspace.
pub fn info_sections(proxy: &Proxy, sections: &[Bytes]) -> String {
    let wanted: Vec<String> = sections
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "default" || w == "everything");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let mut out = String::new();
    let uptime = proxy.started.elapsed().as_secs();
    let map = proxy.router.load();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nslotway_version:{}\r\nredis_mode:standalone\r\nproxy_mode:cluster_proxy\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\r\n",
            crate::util::VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            proxy.listen.port(),
            uptime,
            uptime / 86400
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            proxy.metrics.clients.get(),
            proxy.cfg.maxclients
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nmoved_redirects:{}\r\nask_redirects:{}\r\n\r\n",
            proxy.metrics.clients_total.get(),
            proxy
                .commands_processed
                .load(std::sync::atomic::Ordering::Relaxed),
            proxy.metrics.clients_rejected.get(),
            proxy.metrics.moved.get(),
            proxy.metrics.ask.get()
        );
    }
    if want("proxy") {
        let _ = write!(
            out,
            "# Proxy\r\nslot_map_epoch:{}\r\nslots_covered:{}\r\nmasters:{}\r\n",
            map.epoch,
            map.covered(),
            map.shards.len()
        );
        for (i, s) in map.shards.iter().enumerate() {
            let _ = write!(
                out,
                "master{i}:addr={},replicas={},state={}\r\n",
                s.master.addr,
                s.replicas.len(),
                if s.master.is_down() { "down" } else { "up" }
            );
        }
        out.push_str("\r\n");
    }
    if want("cluster") {
        out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}
