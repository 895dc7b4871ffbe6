//! RESP wire format: the request parser (multibulk + inline) and reply
//! encoding for RESP2/RESP3. No I/O here.

pub mod reply;
pub mod request;
pub mod scan;
pub mod stream;

pub use reply::{Proto, Reply};
pub use request::{
    command_bytes, encode_command, parse_i64, split_args, Limits, ProtocolError, Raw, RequestParser,
};
