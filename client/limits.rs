//! How big a pack may be: the server's limit (`Exchange.Limits`) and the
//! room a pack needs beside its attachments, so `check` and `send` catch a
//! pack that is too large before sealing it.

use anyhow::{Result, bail};
use baton::api::v1;

use crate::connect::{Clients, explain};

/// Room left beside the attachments for the record, the framing and age's
/// overhead when judging a pack's size before sealing.
pub const OVERHEAD: u64 = 64 * 1024;

/// The server's largest pack, or `None` for a server too old to say.
pub async fn server_limit(clients: &mut Clients) -> Result<Option<u64>> {
    match clients.exchange.limits(v1::LimitsRequest {}).await {
        Ok(r) => Ok(Some(r.into_inner().max_pack_bytes)),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
        Err(s) => bail!("asking the server for its limits: {}", explain(&s)),
    }
}
