//! `baton readdress`: the trust's escrow holder forwards a pack it holds
//! (addressed to `XXXXXXX` or `MMMMMMM`) to the school the pupil joined.
//! It downloads the pack, checks the original sender's signature and the
//! whole record, re-wraps the age file key for the destination's keys in a
//! new age header before the untouched payload, and signs a forwarding
//! header that carries the original's signed header and age header: the
//! receiving school verifies who wrote the record and who forwarded it.
//! The forwarding pack is kept in the outbox journal like any sent pack, so
//! running the command again after a failure sends the same bytes.

use std::io::{Read as _, Seek as _, Write as _};

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::crypto::{self, HashingWriter, forward};
use baton::pack::{AttachmentMeta, FORMAT_VERSION, Forwarded, Header, PackId, recipients_for};

use crate::commands::send::job::{Outcome, upload};
use crate::connect::connect;
use crate::home::Home;
use crate::outbox::{Entry, Outbox, State};
use crate::output::{UsageError, json, now_ms};
use crate::pins::{Pins, refresh, refresh_once};

/// Forward a pack held in escrow to the school the pupil joined.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The held pack's id (`baton inbox` lists them).
    #[arg(value_name = "ID")]
    id: PackId,
    /// The LAESTAB of the school the pupil joined.
    #[arg(long)]
    to: Laestab,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Reads attachments and drops them: the escrow checks a pack whole
/// before forwarding it and writes none of it to disk (its outbox journal
/// names the pupil, as a sender's does, until the forward is settled).
struct Discard;

impl crypto::Sink for Discard {
    fn create(
        &mut self,
        _index: usize,
        _meta: &AttachmentMeta,
    ) -> std::io::Result<Box<dyn std::io::Write + '_>> {
        Ok(Box::new(std::io::sink()))
    }
}

/// Runs `baton readdress`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let config = home.config()?;
    if config.school != Laestab::ESCROW {
        bail!(
            "only the trust's escrow re-addresses packs; this home is {}",
            config.school
        );
    }
    if args.to.is_escrow() {
        return Err(UsageError("--to: the school the pupil joined, not the escrow".into()).into());
    }
    let outbox = Outbox::open(home)?;
    let _lock = outbox.lock()?;
    let key = format!("readdress-{}", args.id);
    let mut clients = connect(home).await?;
    let entry = match outbox.get(&key)? {
        Some(e) if e.state == State::Sent => {
            return report(&args, &e, false);
        }
        Some(e) if e.state == State::Sealed && outbox.sealed_path(&key).exists() => e,
        _ => forward_anew(home, &mut clients, &outbox, &key, &args).await?,
    };
    match upload(&outbox, clients.exchange.clone(), entry.clone()).await {
        Ok(Outcome::Sent(checkpoint)) => {
            let mut book = crate::checkpoint::Book::load(home)?;
            book.observe(checkpoint.as_ref());
            book.finish(home)?;
            report(&args, &entry, true)
        }
        Ok(_) => report(&args, &entry, false),
        Err(f) => bail!("{}: not re-addressed: {}", args.id, f.message),
    }
}

fn report(args: &Args, entry: &Entry, now: bool) -> Result<()> {
    if args.json {
        json(
            &serde_json::json!({"id": args.id.to_string(), "to": entry.to,
            "forwarded_as": entry.pack_id, "state": if now { "readdressed" } else { "already-readdressed" }}),
        );
    } else {
        println!(
            "{}: re-addressed to {} as pack {}{}",
            args.id,
            entry.to,
            entry.pack_id,
            if now { "" } else { " (before)" }
        );
    }
    Ok(())
}

/// Downloads and checks the held pack, re-wraps it for the destination,
/// signs the forwarding header and keeps it all in the outbox.
async fn forward_anew(
    home: &Home,
    clients: &mut crate::connect::Clients,
    outbox: &Outbox,
    key: &str,
    args: &Args,
) -> Result<Entry> {
    let held = tempfile::NamedTempFile::new_in(outbox.dir())?;
    let original = crate::commands::pull::download(
        clients.exchange.clone(),
        args.id,
        held.path(),
        crate::commands::pull::STALL,
    )
    .await?;
    let o = original.header().clone();
    let mut pins = Pins::load(home)?;
    refresh_once(home, clients, &mut pins, &o.from).await?;
    let sender_keys = pins.verifying_keys(&o.from)?;
    let identities = home.identities()?;
    let identity = identities
        .iter()
        .find(|i| o.recipient_key_ids.contains(&i.key_id()))
        .context("the held pack is not sealed to this device's key")?;
    // The whole record must check before it goes anywhere.
    let file = std::io::BufReader::new(std::fs::File::open(held.path())?);
    let manifest = crypto::open(&original, &sender_keys, identity, file, &mut Discard)
        .with_context(|| format!("{}: the held pack does not check", args.id))?;

    refresh(home, clients, &mut pins, &args.to).await?;
    let keys = pins.recipients(&args.to)?;
    let chosen = recipients_for(o.kind, &keys);
    if chosen.is_empty() {
        bail!(
            "{} has no active key a {} pack can be sealed to: ask the school to enrol (a DSL key for a child-protection file)",
            args.to,
            o.kind
        );
    }
    let mut file = std::fs::File::open(held.path())?;
    let mut head = vec![0u8; forward::MAX_AGE_HEADER + 16];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let split = forward::header_len(&head)?;
    let new_header = forward::rewrap(&head[..(split + 16).min(head.len())], identity, &chosen)?;
    let sealed = tempfile::NamedTempFile::new_in(outbox.dir())?;
    let mut out = HashingWriter::new(std::io::BufWriter::new(sealed.as_file().try_clone()?));
    out.write_all(&new_header)?;
    file.seek(std::io::SeekFrom::Start(split as u64))?;
    std::io::copy(&mut file, &mut out)?;
    let (writer, len, sha) = out.finish()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;

    let header = Header {
        format_version: FORMAT_VERSION,
        pack_id: PackId::new(),
        from: Laestab::ESCROW,
        to: args.to,
        kind: o.kind,
        created_at_ms: now_ms(),
        ciphertext_len: len,
        ciphertext_sha256: sha,
        sender_key_id: identity.key_id(),
        recipient_key_ids: chosen.iter().map(|k| k.key_id()).collect(),
        // The clock still counts from the day the pupil left.
        left_on: o
            .left_on
            .or_else(|| Some(time::OffsetDateTime::now_utc().date())),
        supersedes: None,
        forwarded: Some(Forwarded {
            original: Box::new(original.clone()),
            original_age_header: head[..split].to_vec(),
        }),
    };
    let signed = identity.sign_header(header)?;
    let path = outbox.sealed_path(key);
    sealed
        .persist(&path)
        .with_context(|| format!("keeping {}", path.display()))?;
    let r = &manifest.record;
    let mut entry = Entry {
        key: key.to_string(),
        pack_id: signed.header().pack_id.to_string(),
        to: args.to.to_string(),
        kind: o.kind,
        upn: r.upn().map(|u| u.to_string()).unwrap_or_default(),
        name: format!("{} {}", r.forename, r.surname),
        source: format!("re-address of {} from {}", args.id, o.from),
        header: String::new(),
        state: State::Sealed,
        sent_at_ms: None,
        error: None,
        replaces: None,
        acknowledged_at_ms: None,
    };
    entry.set_header(&signed);
    outbox.put(&entry)?;
    Ok(entry)
}
