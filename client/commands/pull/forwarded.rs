//! A pack the trust's escrow forwarded (re-addressed): the forwarding
//! header is the escrow's, the record is the original sender's. Before it
//! is opened, the original's signature is checked against the original
//! sender's pinned keys and the ciphertext against the original's signed
//! length and hash (the escrow re-wrapped the key; it cannot have changed
//! a byte of the record). The escrow is the original sender's trust's: this
//! trust's own, or, for a school another trust serves, that trust's escrow
//! (pinned apart, as `XXXXXXX --peer PEER`).

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::crypto::forward;
use baton::pack::{Forwarded, Header};

use crate::connect::Clients;
use crate::home::Home;
use crate::output::time;
use crate::pins::{Pins, refresh_escrow_of, refresh_once};

/// Checks a forwarded pack's original (see the module) and returns who
/// wrote it and the pin whose keys must have signed `header` (the escrow
/// of the author's trust, refreshed). `header` is the forwarding pack's:
/// only an escrow forwards, and a forward keeps the original's kind,
/// leaving date and framing.
pub async fn author(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    header: &Header,
    forwarded: &Forwarded,
    ciphertext: &Path,
) -> Result<(Laestab, String)> {
    let original = forwarded.original.header();
    if header.from != Laestab::ESCROW {
        bail!(
            "it says it forwards a pack of {}, but only the trust's escrow forwards packs and this one comes from {}; not pulled",
            original.from,
            header.from
        );
    }
    if !header.keeps_forwarded_original() || original.format_version < 2 {
        bail!(
            "forwarded by the escrow with another kind, leaving date or framing than {}'s original; not pulled",
            original.from
        );
    }
    if !original.to.is_escrow() {
        bail!(
            "forwarded by the escrow, but its original was addressed to {}, not held in escrow; not pulled",
            original.to
        );
    }
    refresh_once(home, clients, pins, &original.from).await?;
    if let Some(revoked) = pins.revoked_at(&original.from, original.sender_key_id)
        && original.created_at_ms > revoked
    {
        bail!(
            "its original was signed by key {} of {} after that key was revoked ({}); not pulled",
            original.sender_key_id.grouped(),
            original.from,
            time(revoked)
        );
    }
    if !pins.signed_by(&original.from, original.sender_key_id, |k| {
        forwarded.original.verify(k).is_ok()
    }) {
        bail!(
            "the escrow forwarded it as a pack from {}, but that school's pinned keys did not sign the original; not pulled",
            original.from
        );
    }
    let file = std::fs::File::open(ciphertext)
        .with_context(|| format!("reading {}", ciphertext.display()))?;
    forward::check_forwarded(forwarded, std::io::BufReader::new(file)).with_context(|| {
        format!(
            "the record is not the one {} sealed; not pulled",
            original.from
        )
    })?;
    // The escrow that forwarded it: the one of the trust serving its author.
    let peer = pins
        .get(&original.from)
        .map(|p| p.peer.clone())
        .unwrap_or_default();
    let escrow = if peer.is_empty() {
        refresh_once(home, clients, pins, &Laestab::ESCROW).await?;
        Laestab::ESCROW.to_string()
    } else {
        refresh_escrow_of(home, clients, pins, &peer).await?
    };
    Ok((original.from, escrow))
}
