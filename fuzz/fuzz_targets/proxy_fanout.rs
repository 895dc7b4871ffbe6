//! The proxy's routing and reply merging on arbitrary input: a request
//! (key extraction by the command table, the split of multi-key commands
//! per slot) and arbitrary node replies to its sub-requests (the merge).
//! Neither may panic, and a merge always yields one well-formed frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use slotway::proxy::commands::{table, Lookup, Route};
use slotway::proxy::fanout::{merge, split, Plan};
use slotway::proxy::metrics::Outcome;
use slotway::resp::scan::{frame_len, split_frames};
use slotway::resp::{Limits, RequestParser};

fuzz_target!(|data: &[u8]| {
    let Ok(table) = table() else { return };
    let mut buf = BytesMut::from(data);
    let Ok(Some(args)) = RequestParser::new().parse(&mut buf, &Limits::default()) else {
        return;
    };
    let Lookup::Found(cmd) = table.lookup(&args) else {
        return;
    };
    let positions = cmd.key_positions(&args);
    assert!(positions.iter().all(|&p| p < args.len()));
    let deadline = tokio::time::Instant::now();
    let plan = match cmd.route {
        Route::Split(kind) => match split(deadline, kind, &args, &positions, false) {
            Some(f) => f.plan,
            None => return,
        },
        Route::AllMasters(m) | Route::AllNodes(m) => Plan::All(m),
        _ => return,
    };
    // What is left of the input: the nodes' replies, one frame each.
    let Ok(frames) = split_frames(buf.freeze()) else {
        return;
    };
    let replies: Vec<(Bytes, Outcome)> = frames.into_iter().map(|f| (f, Outcome::Ok)).collect();
    let (reply, _) = merge(&plan, replies);
    assert_eq!(frame_len(&reply), Ok(Some(reply.len())), "{reply:?}");
});
