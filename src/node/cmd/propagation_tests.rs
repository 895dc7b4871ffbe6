//! What the propagation hook emits for each kind of write: the stream a
//! replica or the append-only log receives.

use super::execute;
use super::harness::Harness;
use bytes::Bytes;

const NOW: u64 = 1_700_000_000_000;

impl Harness {
    fn with_propagation() -> Harness {
        let mut h = Harness::new();
        h.state.set_propagation(true);
        h
    }

    fn run_at<A: AsRef<[u8]>>(&mut self, cmd: &[A], now: u64) -> crate::resp::Reply {
        let args: Vec<Bytes> = cmd
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_ref()))
            .collect();
        let mut ctx = self.state.ctx(&mut self.client, &self.shared, now);
        execute(&mut ctx, &args)
    }

    fn run(&mut self, cmd: &str) -> crate::resp::Reply {
        let words: Vec<&str> = cmd.split(' ').collect();
        self.run_at(&words, NOW)
    }

    /// The stream so far as readable text: one command per line, args
    /// separated by spaces.
    fn stream(&mut self) -> Vec<String> {
        let raw = self.state.prop.take();
        let mut parser = crate::resp::RequestParser::new();
        let mut buf = bytes::BytesMut::from(&raw[..]);
        let mut out = Vec::new();
        while let Ok(Some(args)) = parser.parse(&mut buf, &crate::resp::Limits::default()) {
            out.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        assert!(buf.is_empty(), "stream must be whole commands");
        out
    }

    fn expect(&mut self, cmd: &str, stream: &[&str]) {
        self.run(cmd);
        assert_eq!(self.stream(), stream, "after {cmd}");
    }
}

#[test]
fn off_means_nothing_is_built() {
    let mut h = Harness::with_propagation();
    h.state.set_propagation(false);
    h.run("set k v");
    h.run("del k");
    assert!(!h.state.prop.has_output());
}

#[test]
fn plain_writes_go_as_received_and_no_ops_not_at_all() {
    let mut h = Harness::with_propagation();
    h.expect("set k v", &["set k v"]);
    h.expect("get k", &[]);
    h.expect("set k w NX", &[]);
    h.expect("del missing", &[]);
    h.expect("incr k", &[]); // error: not an integer
    h.expect("sadd s a b", &["sadd s a b"]);
    h.expect("sadd s a", &[]);
    h.expect("srem s zz", &[]);
    h.expect("srem missing zz", &[]);
    h.expect("hset h f v", &["hset h f v"]);
    h.expect("hdel h zz", &[]);
    h.expect("zadd z 1 m", &["zadd z 1 m"]);
    h.expect("zadd z 1 m", &[]);
    h.expect("zrem z zz", &[]);
    h.expect("lpop missing", &[]);
    h.expect("persist k", &[]);
    h.expect("expire missing 10", &[]);
    h.expect("rpush l a b", &["rpush l a b"]);
}

#[test]
fn relative_ttls_become_absolute() {
    let mut h = Harness::with_propagation();
    let at = |ms: u64| (NOW + ms).to_string();
    h.expect("set k v EX 10", &[&format!("SET k v PXAT {}", at(10_000))]);
    h.expect("set k v PX 5 NX", &[]);
    h.expect("set k v XX PX 5", &[&format!("SET k v PXAT {}", at(5))]);
    h.expect("set k v EXAT 1800000000", &["SET k v PXAT 1800000000000"]);
    h.expect(
        "set k v PXAT 1800000000001",
        &["set k v PXAT 1800000000001"],
    );
    h.expect("setex k 3 v", &[&format!("SET k v PXAT {}", at(3_000))]);
    h.expect("psetex k 3 v", &[&format!("SET k v PXAT {}", at(3))]);
    h.expect("expire k 10", &[&format!("PEXPIREAT k {}", at(10_000))]);
    h.expect("pexpire k 10 GT", &[]);
    h.expect(
        "pexpire k 20000 GT",
        &[&format!("PEXPIREAT k {} GT", at(20_000))],
    );
    h.expect("expireat k 1800000000", &["PEXPIREAT k 1800000000000"]);
    h.expect("getex k EX 7", &[&format!("PEXPIREAT k {}", at(7_000))]);
    h.expect("getex k PERSIST", &["PERSIST k"]);
    h.expect("getex k PERSIST", &[]);
    h.expect("getex k", &[]);
    h.expect("getex k PXAT 1", &["DEL k"]);
    h.expect("set k v", &["set k v"]);
    h.expect("expire k -1", &["DEL k"]);
    h.expect("set k v", &["set k v"]);
    h.expect("getdel k", &["DEL k"]);
}

#[test]
fn floats_and_randomness_propagate_their_result() {
    let mut h = Harness::with_propagation();
    h.expect("incrbyfloat f 1.5", &["SET f 1.5 KEEPTTL"]);
    h.expect("incrbyfloat f 0.25", &["SET f 1.75 KEEPTTL"]);
    h.expect("hincrbyfloat h x 2.5", &["HSET h x 2.5"]);
    h.expect("hincrbyfloat new x inf", &[]);
    assert!(
        matches!(h.run("exists new"), crate::resp::Reply::Int(0)),
        "a refused increment leaves no empty hash"
    );
    h.run("sadd s only");
    h.stream();
    h.expect("spop s", &["SREM s only"]);
    h.run("sadd s a b c");
    h.stream();
    h.expect("spop s 3", &["DEL s"]);
    h.run("sadd s a b c");
    h.stream();
    h.run("spop s 2");
    let s = h.stream();
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        s[0].starts_with("SREM s ") && s[0].split(' ').count() == 4,
        "{s:?}"
    );
    h.expect("spop s 0", &[]);
    h.expect("srandmember s", &[]);
}

#[test]
fn blocking_commands_that_are_served_propagate_their_plain_form() {
    let mut h = Harness::with_propagation();
    h.run("rpush l a b c");
    h.run("zadd z 1 a 2 b");
    h.stream();
    h.expect("blpop l 0", &["LPOP l"]);
    h.expect("brpop missing l 0", &["RPOP l"]);
    h.expect("blmove l d RIGHT LEFT 0", &["LMOVE l d RIGHT LEFT"]);
    h.expect("brpoplpush d l 0", &["LMOVE d l RIGHT LEFT"]);
    h.expect("bzpopmin z 0", &["ZPOPMIN z"]);
    h.expect("bzpopmax z 0", &["ZPOPMAX z"]);
    h.run("rpush m a b");
    h.stream();
    h.expect("blmpop 0 2 missing m LEFT COUNT 5", &["LPOP m 2"]);
    h.expect("lmpop 1 nothing LEFT", &[]);
    h.run("rpush m a");
    h.stream();
    h.expect("lmpop 1 m RIGHT COUNT 3", &["RPOP m 1"]);
    h.expect("blpop nothing 0", &[]);
}

#[test]
fn transactions_and_scripts_are_one_unit() {
    let mut h = Harness::with_propagation();
    h.run("multi");
    h.run("set a 1");
    h.run("get a");
    h.run("incr a");
    h.run("exec");
    assert_eq!(h.stream(), ["MULTI", "set a 1", "incr a", "EXEC"]);
    h.run("multi");
    h.run("set a 1");
    h.run("exec");
    assert_eq!(h.stream(), ["set a 1"]);
    h.run("multi");
    h.run("get a");
    h.run("exec");
    assert_eq!(h.stream(), Vec::<String>::new());

    h.run_at(
        &[
            "eval",
            "redis.call('set', KEYS[1], 'x', 'EX', 5) redis.call('incr', 'n') return redis.call('get', 'n')",
            "1",
            "k",
        ],
        NOW,
    );
    assert_eq!(
        h.stream(),
        [
            "MULTI".to_string(),
            format!("SET k x PXAT {}", NOW + 5_000),
            "incr n".into(),
            "EXEC".into()
        ]
    );
    h.run_at(&["eval", "return redis.call('get', 'n')", "0"], NOW);
    assert_eq!(h.stream(), Vec::<String>::new());
    h.run_at(&["eval", "redis.call('del', 'n')", "0"], NOW);
    assert_eq!(h.stream(), ["del n"]);
}

#[test]
fn expiry_becomes_del_before_the_command_that_saw_it() {
    let mut h = Harness::with_propagation();
    h.run("set k v PXAT 1700000000500");
    h.run("set j v PXAT 1700000000500");
    h.stream();
    let later = NOW + 1_000;
    h.run_at(&["get", "k"], later);
    assert_eq!(h.stream(), ["DEL k"]);
    h.run_at(&["rpush", "j", "x"], later);
    assert_eq!(h.stream(), ["MULTI", "DEL j", "rpush j x", "EXEC"]);
    // Active expiry (the cron) deletes outside any command.
    h.run("set t v PXAT 1700000000500");
    h.stream();
    h.state.db.active_expire(later, 1000);
    h.state.propagate_server_deletions();
    assert_eq!(h.stream(), ["DEL t"]);
}

#[test]
fn flushall_is_always_propagated_and_restore_gets_an_absolute_ttl() {
    let mut h = Harness::with_propagation();
    h.expect("flushall", &["flushall"]);
    h.run("set k v");
    h.stream();
    let payload = match h.run("dump k") {
        crate::resp::Reply::Bulk(b) => b,
        r => panic!("{r:?}"),
    };
    let mut h2 = Harness::with_propagation();
    h2.run_at(&[&b"restore"[..], b"r", b"1000", &payload], NOW);
    assert_eq!(
        h2.stream(),
        [format!(
            "restore r {} {} ABSTTL",
            NOW + 1000,
            String::from_utf8_lossy(&payload)
        )]
    );
}

#[test]
fn geoadd_propagates_as_the_zadd_it_ran() {
    // As Redis: GEOADD rewrites itself into ZADD with the 52-bit scores.
    let mut h = Harness::with_propagation();
    h.expect(
        "geoadd g ch 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        &["zadd g ch 3479099956230698 Palermo 3479447370796909 Catania"],
    );
    // Nothing changed: nothing propagated.
    h.expect("geoadd g nx 13.361389 38.115556 Palermo", &[]);
    h.expect("geoadd g 200 0 x", &[]);
}

#[test]
fn geo_stores_propagate_verbatim_and_reads_not_at_all() {
    let mut h = Harness::with_propagation();
    h.run("geoadd g 13.361389 38.115556 Palermo");
    h.stream();
    h.expect("geosearch g fromlonlat 13 38 byradius 100 km", &[]);
    h.expect(
        "geosearchstore d g fromlonlat 13 38 byradius 100 km",
        &["geosearchstore d g fromlonlat 13 38 byradius 100 km"],
    );
    h.expect(
        "georadius g 13 38 100 km store d2",
        &["georadius g 13 38 100 km store d2"],
    );
    // An empty result deletes the destination; with none there, no change.
    h.expect(
        "georadius g 0 0 1 km store d",
        &["georadius g 0 0 1 km store d"],
    );
    h.expect("georadius g 0 0 1 km store d", &[]);
}

#[test]
fn sort_store_propagates_as_itself_and_only_when_it_wrote() {
    let mut h = Harness::with_propagation();
    h.run("rpush l 2 1");
    h.stream();
    h.expect("sort l store d", &["sort l store d"]);
    // Reading SORT and an empty result over a missing key change nothing.
    h.expect("sort l", &[]);
    h.expect("sort missing store nothing", &[]);
    // An empty result deletes the destination: that is propagated.
    h.expect("sort missing store d", &["sort missing store d"]);
    h.expect("sort_ro l", &[]);
}
