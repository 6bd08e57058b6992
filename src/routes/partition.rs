//! `POST /_admin/partition?block=NAME,NAME`: the network-split test hook.
//!
//! Only with `--fault-injection` (otherwise the path is a 404). The node
//! drops all peer traffic (membership datagrams and TCP connections) to and
//! from the named nodes until called again with another list; an empty
//! `block` heals. Tests call it on both sides of the split they simulate.

use super::{Reply, Request};
use crate::encoding;
use crate::http::response::{self, ResponseMode};
use crate::metrics::Route;
use crate::server::shard::Shard;

pub fn partition(shard: &Shard, req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    let names: Vec<String> = match encoding::form_field(req.query(), "block") {
        Some(Ok(v)) => v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        Some(Err(_)) => {
            response::write_text(out, mode, 400, &[], "block must be UTF-8 node names");
            return Reply::new(Route::Admin, 400);
        }
        None => Vec::new(),
    };
    tracing::warn!(blocked = ?names, "partition hook: peer traffic to these nodes is dropped");
    let text = format!("blocking {names:?}");
    shard.shared().cluster.set_blocked(names);
    response::write_text(out, mode, 200, &[], &text);
    Reply::new(Route::Admin, 200)
}
