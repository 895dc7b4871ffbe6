//! The propagation hook's output: every write a node executes becomes a
//! RESP command in one ordered stream (for replicas and the append-only
//! log), built under the keyspace lock so the order is the execution order.
//!
//! Commands are grouped in *units*: what one top-level command produced
//! (a plain write, or everything an EXEC or a script ran, plus the DELs of
//! keys that expired under it). A unit of more than one command is wrapped
//! in MULTI/EXEC so a replica applies it atomically, as Redis 7 does.
//!
//! When nothing consumes the stream the hook is off and costs one branch per
//! command.

use bytes::{BufMut, BytesMut};

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

pub use crate::resp::encode_command;

/// Collects the propagated commands of the node, unit by unit.
#[derive(Debug, Default)]
pub struct Propagator {
    on: bool,
    out: BytesMut,
    /// Where the open unit starts in `out`, and how many commands it has.
    unit_start: usize,
    unit_ops: usize,
}

impl Propagator {
    /// Whether anything consumes the stream. Handlers build a rewritten
    /// form of their command only when this is true.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn set_on(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.out.clear();
            self.unit_start = 0;
            self.unit_ops = 0;
        }
    }

    /// Adds one command to the open unit.
    pub fn push<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        if !self.on {
            return;
        }
        if self.unit_ops == 0 {
            self.unit_start = self.out.len();
        }
        encode_command(&mut self.out, args);
        self.unit_ops += 1;
    }

    /// Closes the open unit: several commands become one MULTI/EXEC.
    pub fn end_unit(&mut self) {
        if self.unit_ops > 1 {
            let tail = self.out.split_off(self.unit_start);
            self.out.reserve(tail.len() + MULTI.len() + EXEC.len());
            self.out.put_slice(MULTI);
            self.out.put_slice(&tail);
            self.out.put_slice(EXEC);
        }
        self.unit_ops = 0;
        self.unit_start = self.out.len();
    }

    /// True when closed units wait to be handed on.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Takes the encoded stream of every closed unit.
    pub fn take(&mut self) -> BytesMut {
        self.end_unit();
        self.unit_start = 0;
        self.out.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn single_commands_are_bare_and_units_are_wrapped() {
        let mut p = Propagator::default();
        p.push(&["SET", "k", "v"]);
        assert!(!p.has_output(), "nothing while off");
        p.set_on(true);
        p.push(&["SET", "k", "v"]);
        p.end_unit();
        p.push(&["DEL", "a"]);
        p.push(&["INCR", "b"]);
        p.end_unit();
        p.end_unit();
        assert_eq!(
            text(&p.take()),
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n\
             *1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nDEL\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert!(!p.has_output());
    }

    #[test]
    fn binary_and_empty_arguments() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[&b"SET"[..], b"", b"\r\n\x00"]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$3\r\n\r\n\x00\r\n");
    }
}
