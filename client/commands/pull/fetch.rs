//! Downloading packs ahead of opening them, each into its own file in the
//! staging folder: small packs (one chunk, the most a class's records are)
//! up to [`BATCH`] to a `DownloadMany` call (fewer when there are only a
//! few, so the calls that may run at once share them), larger ones one
//! `Download` each, at most [`CONCURRENCY`] calls at a time. A pack
//! `DownloadMany` will not serve whole, and every pack when the server has
//! no `DownloadMany` (an older server), is downloaded alone. A download
//! the server stops answering is given up after [`STALL`] without a
//! message (and the packs still due in its call with it), so a stalled or
//! hostile server cannot hang `baton pull`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use baton::api::v1;
use baton::pack::{PackId, SignedHeader};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, oneshot};
use tonic::{Code, Status};
use v1::exchange_client::ExchangeClient;

use super::CONCURRENCY;
use crate::connect::{Authed, explain};

/// Small packs asked for in one `DownloadMany` call.
pub(crate) const BATCH: usize = 16;

/// The largest ciphertext sent whole in one `DownloadMany` message (the
/// server's chunk size): larger packs are downloaded alone.
const SMALL: u64 = 256 * 1024;

/// A downloaded pack: its ciphertext in a staging file, and its header.
pub(crate) type Fetched = (tempfile::NamedTempFile, SignedHeader);

/// A pack to download, and where to tell how it went.
type ToTell = (PackId, oneshot::Sender<Result<Fetched>>);

/// Where each pack's download will be told.
pub(crate) type Pending = HashMap<PackId, oneshot::Receiver<Result<Fetched>>>;

/// How long a download may wait for the server's next message (its
/// answer, a header, a chunk of up to 256 KiB) before it is given up: a
/// server that stalls a download (a fault, or a hostile one) fails that
/// download, and the others still due from it, rather than hanging `baton
/// pull`; the next pull asks again. An idle time, not a whole call's: a
/// large pack on a slow link is not cut off while its chunks keep coming
/// (at least one a minute, about 4 KiB/s), though it must also keep
/// [`MIN_RATE`] on the whole.
pub(crate) const STALL: Duration = Duration::from_secs(60);

/// The slowest a pack's bytes may come on the whole (bytes a second,
/// beyond two [`STALL`]s from its header, so a stall is told as one): a
/// server trickling a byte a minute would otherwise keep a download going
/// for ever.
const MIN_RATE: u64 = 8 * 1024;

/// Why a download was given up on the server's side (told apart from any
/// status the server sends, which it could word the same).
#[derive(Debug)]
enum Stalled {
    /// Nothing from the server for this long.
    Idle(Duration),
    /// The pack came slower than [`MIN_RATE`].
    Slow,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle(stall) => write!(
                f,
                "the server sent nothing for {} s, so this download was given up (run the command again to retry)",
                stall.as_secs_f64()
            ),
            Self::Slow => write!(
                f,
                "the server sent this pack slower than {} KiB/s, so its download was given up (run the command again to retry)",
                MIN_RATE / 1024
            ),
        }
    }
}

impl std::error::Error for Stalled {}

/// Waits for the server's next answer at most `stall`.
async fn within<T>(
    stall: Duration,
    answer: impl std::future::Future<Output = Result<T, Status>>,
) -> std::result::Result<Result<T, Status>, Stalled> {
    tokio::time::timeout(stall, answer)
        .await
        .map_err(|_| Stalled::Idle(stall))
}

/// Streams a pack's ciphertext into `path`, returning its header; gives
/// up when the server sends nothing for `stall` ([`STALL`]), keeps less
/// than [`MIN_RATE`], or sends other than the header's length.
pub(crate) async fn download(
    mut exchange: ExchangeClient<Authed>,
    id: PackId,
    path: &Path,
    stall: Duration,
) -> Result<SignedHeader> {
    let failed = |s: Status| anyhow!("downloading: {}", explain(&s));
    let call = exchange.download(v1::DownloadRequest {
        pack_id: id.to_string(),
    });
    let mut stream = within(stall, call).await?.map_err(failed)?.into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    // The header, and when the whole pack must be in by (none past
    // what this machine's clock can count: an absurd length).
    let mut header: Option<(SignedHeader, Option<Instant>)> = None;
    let mut received: u64 = 0;
    loop {
        let wait = match &header {
            Some((_, Some(by))) => stall.min(by.saturating_duration_since(Instant::now())),
            _ => stall,
        };
        let next = match within(wait, stream.message()).await {
            Ok(next) => next.map_err(failed)?,
            // Cut short by the pack's own deadline.
            Err(_) if wait < stall => return Err(Stalled::Slow.into()),
            Err(stalled) => return Err(stalled.into()),
        };
        let Some(message) = next else { break };
        match (message.part, &header) {
            (Some(v1::download_response::Part::Header(h)), None) => {
                let signed = served_header(&h, id)?;
                let pace = Duration::from_secs(signed.header().ciphertext_len / MIN_RATE);
                let by = Instant::now().checked_add(stall.saturating_mul(2).saturating_add(pace));
                header = Some((signed, by));
            }
            (Some(v1::download_response::Part::Chunk(bytes)), Some((signed, _))) => {
                let length = signed.header().ciphertext_len;
                if bytes.is_empty() {
                    bail!("the server sent an empty chunk");
                }
                received = received.saturating_add(bytes.len() as u64);
                if received > length {
                    bail!("the server sent more than the pack's {length} bytes");
                }
                file.write_all(&bytes).await?;
            }
            _ => bail!("the server's download stream is out of order"),
        }
    }
    let (signed, _) = header.context("the server sent no header")?;
    let length = signed.header().ciphertext_len;
    if received != length {
        bail!("the server sent {received} of the pack's {length} bytes");
    }
    file.sync_all().await?;
    Ok(signed)
}

/// The header the server sent for pack `id`, if it is well formed and
/// names that pack (its signature is checked when the pack is opened).
fn served_header(wire: &v1::PackHeader, id: PackId) -> Result<SignedHeader> {
    let signed = SignedHeader::try_from(wire)
        .map_err(|e| anyhow::anyhow!("the server sent a malformed header: {e}"))?;
    if signed.header().pack_id != id {
        bail!("the server sent a different pack");
    }
    Ok(signed)
}

/// Starts downloading `wanted` (each pack's id and its ciphertext's length
/// when the inbox listed it) into files under `root`, in order: the first
/// packs first.
pub(crate) fn start(
    exchange: &ExchangeClient<Authed>,
    root: &Path,
    wanted: &[(PackId, Option<u64>)],
    stall: Duration,
) -> Pending {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    // A few packs make as many calls as may run at once (each writes and
    // syncs its packs one after another); many make full calls.
    let small = wanted.iter().filter(|(_, n)| !large(*n)).count();
    let batch_size = small.div_ceil(CONCURRENCY).clamp(1, BATCH);
    let mut pending = HashMap::new();
    let mut batch: Vec<ToTell> = Vec::new();
    let flush = |batch: &mut Vec<_>| {
        if !batch.is_empty() {
            let (exchange, root, limit) = (exchange.clone(), root.to_owned(), Arc::clone(&limit));
            let batch = std::mem::take(batch);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                many(exchange, &root, batch, stall).await;
            });
        }
    };
    for (id, length) in wanted {
        let (tx, rx) = oneshot::channel();
        pending.insert(*id, rx);
        if large(*length) {
            let (exchange, root, limit, id) =
                (exchange.clone(), root.to_owned(), Arc::clone(&limit), *id);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let _ = tx.send(alone(exchange, &root, id, stall).await);
            });
            continue;
        }
        batch.push((*id, tx));
        if batch.len() == batch_size {
            flush(&mut batch);
        }
    }
    flush(&mut batch);
    pending
}

/// Whether a pack of ciphertext `length` (if listed) is downloaded alone.
fn large(length: Option<u64>) -> bool {
    length.is_some_and(|n| n > SMALL)
}

/// Downloads pack `id` with `Download`.
async fn alone(
    exchange: ExchangeClient<Authed>,
    root: &Path,
    id: PackId,
    stall: Duration,
) -> Result<Fetched> {
    let file = tempfile::NamedTempFile::new_in(root)?;
    let header = download(exchange, id, file.path(), stall).await?;
    Ok((file, header))
}

/// Downloads `batch` in one `DownloadMany` call, telling each pack's
/// outcome as it arrives; the packs too large for the call are downloaded
/// alone once it has ended (its unread answers would otherwise hold the
/// connection's flow-control window). A server that sends nothing for
/// `stall` fails the packs still due.
async fn many(
    mut exchange: ExchangeClient<Authed>,
    root: &Path,
    batch: Vec<ToTell>,
    stall: Duration,
) {
    let pack_ids = batch.iter().map(|(id, _)| id.to_string()).collect();
    let call = exchange.download_many(v1::DownloadManyRequest { pack_ids });
    let mut stream = match within(stall, call).await {
        Ok(Ok(answer)) => answer.into_inner(),
        // A server from before `DownloadMany`: a call a pack.
        Ok(Err(status)) if status.code() == Code::Unimplemented => {
            return each_alone(&exchange, root, batch, stall).await;
        }
        Ok(Err(status)) => return refuse_all(batch, &status),
        Err(stalled) => return tell_all(batch, &stalled.to_string()),
    };
    let mut later = Vec::new();
    let mut waiting = batch.into_iter();
    while let Some((id, tx)) = waiting.next() {
        let answer = match within(stall, stream.message()).await {
            Ok(Ok(Some(message))) => one(root, id, message).await,
            // The server stalled, or the caller is shut out (a token or
            // key revoked while the call ran): asking again, a pack at a
            // time, would only wait as long again for each, or be refused.
            Err(stalled) => {
                let due = std::iter::once((id, tx)).chain(waiting).chain(later);
                return tell_all(due, &stalled.to_string());
            }
            Ok(Err(status)) if shut_out(status.code()) => {
                let due = std::iter::once((id, tx)).chain(waiting).chain(later);
                return refuse_all(due, &status);
            }
            Ok(Ok(None) | Err(_)) => Err(Refused::Broken),
        };
        match answer {
            Ok(fetched) => {
                let _ = tx.send(Ok(fetched));
            }
            Err(Refused::Pack(e)) => {
                let _ = tx.send(Err(e));
            }
            Err(Refused::TooLarge) => later.push((id, tx)),
            // The call failed or went astray: this pack and every one left
            // are downloaded alone (each checked on its own).
            Err(Refused::Broken) => {
                drop(stream);
                let rest = later.into_iter().chain(std::iter::once((id, tx)));
                return each_alone(&exchange, root, rest.chain(waiting), stall).await;
            }
        }
    }
    drop(stream);
    each_alone(&exchange, root, later, stall).await;
}

/// Tells each of `packs` the outcome of downloading it with `Download`;
/// once the server stalls one, the rest are told so without asking.
async fn each_alone(
    exchange: &ExchangeClient<Authed>,
    root: &Path,
    packs: impl IntoIterator<Item = ToTell>,
    stall: Duration,
) {
    let mut packs = packs.into_iter();
    while let Some((id, tx)) = packs.next() {
        let outcome = alone(exchange.clone(), root, id, stall).await;
        let stalled = outcome
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Stalled>())
            .map(ToString::to_string);
        let _ = tx.send(outcome);
        if let Some(why) = stalled {
            return tell_all(packs, &why);
        }
    }
}

/// Tells each of `packs` that the call for it ended with `status`.
fn refuse_all(packs: impl IntoIterator<Item = ToTell>, status: &Status) {
    tell_all(packs, &format!("downloading: {}", explain(status)));
}

/// Tells each of `packs` that its download failed, for `why`.
fn tell_all(packs: impl IntoIterator<Item = ToTell>, why: &str) {
    for (_, tx) in packs {
        let _ = tx.send(Err(anyhow!("{why}")));
    }
}

/// Whether a call ended with `code` refuses the caller itself, not one
/// pack or the connection.
fn shut_out(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

/// Why one answer of a `DownloadMany` call was not a pack.
enum Refused {
    /// More than one chunk: to be downloaded alone.
    TooLarge,
    /// This pack failed (refused by the server, or not written here); the
    /// call goes on.
    Pack(anyhow::Error),
    /// The call failed, ended early or answered for another pack.
    Broken,
}

/// Writes one answer of a `DownloadMany` call, for pack `id`, to a file.
async fn one(
    root: &Path,
    id: PackId,
    message: v1::DownloadManyResponse,
) -> std::result::Result<Fetched, Refused> {
    if message.pack_id != id.to_string() {
        return Err(Refused::Broken);
    }
    if message.code != Code::Ok as i32 {
        let status = Status::new(Code::from(message.code), message.message);
        if status.code() == Code::FailedPrecondition {
            return Err(Refused::TooLarge);
        }
        return Err(Refused::Pack(anyhow!("downloading: {}", explain(&status))));
    }
    let written = async {
        let wire = message
            .header
            .ok_or_else(|| anyhow!("the server sent no header"))?;
        let signed = served_header(&wire, id)?;
        let file = tempfile::NamedTempFile::new_in(root)?;
        let mut out = tokio::fs::File::create(file.path()).await?;
        out.write_all(&message.ciphertext).await?;
        out.sync_all().await?;
        Ok((file, signed))
    };
    written.await.map_err(Refused::Pack)
}

#[cfg(all(test, feature = "server"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Against fake servers: one from before `DownloadMany`, and one whose
    //! `DownloadMany` strays (the tests are about what such a server
    //! answers).

    use std::sync::Mutex;

    use baton::crypto::Identity;
    use baton::pack::{FORMAT_VERSION, Header, Kind};
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::commands::pull::STALL;
    use crate::commands::pull::older::{Older, serve};

    /// A pack as served: its header and ciphertext.
    type Served = (v1::PackHeader, Vec<u8>);

    /// A signed header and ciphertext for pack `id`.
    fn pack(sender: &Identity, id: PackId, len: usize) -> Served {
        let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let signed = sender
            .sign_header(Header {
                format_version: FORMAT_VERSION,
                pack_id: id,
                from: "8610001".parse().unwrap(),
                to: "8610002".parse().unwrap(),
                kind: Kind::Transfer,
                created_at_ms: 1,
                ciphertext_len: data.len() as u64,
                ciphertext_sha256: Sha256::digest(&data).into(),
                sender_key_id: sender.key_id(),
                recipient_key_ids: vec![sender.key_id()],
                left_on: Some(time::macros::date!(2026 - 07 - 22)),
                supersedes: None,
                forwarded: None,
            })
            .unwrap();
        (v1::PackHeader::from(&signed), data)
    }

    /// An answer of `DownloadMany` serving `pack` whole.
    fn served((header, data): &Served) -> v1::DownloadManyResponse {
        v1::DownloadManyResponse {
            pack_id: header.pack_id.clone(),
            header: Some(header.clone()),
            ciphertext: data.clone().into(),
            ..Default::default()
        }
    }

    /// An answer of `DownloadMany` refusing pack `id` with `code`.
    fn refused(id: PackId, code: Code) -> v1::DownloadManyResponse {
        v1::DownloadManyResponse {
            pack_id: id.to_string(),
            code: code as i32,
            message: "refused".into(),
            ..Default::default()
        }
    }

    /// `n` packs from one sender, by id.
    fn packs(n: usize) -> (Vec<PackId>, HashMap<String, Served>) {
        let sender = Identity::generate();
        let ids: Vec<PackId> = (0..n).map(|_| PackId::new()).collect();
        let packs = ids
            .iter()
            .map(|id| (id.to_string(), pack(&sender, *id, 300)))
            .collect();
        (ids, packs)
    }

    /// A downloaded pack as its header and what its file holds.
    fn read_back(fetched: Result<Fetched>) -> Result<Served> {
        fetched.map(|(file, header)| {
            (
                v1::PackHeader::from(&header),
                std::fs::read(file.path()).unwrap(),
            )
        })
    }

    /// What `start` gives for each of `ids` (listed as `length` bytes
    /// long), giving up after `stall`.
    async fn fetched_within(
        client: &ExchangeClient<Authed>,
        ids: &[PackId],
        length: u64,
        stall: Duration,
    ) -> Vec<Result<Served>> {
        let root = tempfile::tempdir().unwrap();
        let wanted: Vec<_> = ids.iter().map(|id| (*id, Some(length))).collect();
        let mut pending = start(client, root.path(), &wanted, stall);
        let mut out = Vec::new();
        for id in ids {
            out.push(read_back(pending.remove(id).unwrap().await.unwrap()));
        }
        out
    }

    /// What `start` gives for each of `ids`.
    async fn fetched(client: &ExchangeClient<Authed>, ids: &[PackId]) -> Vec<Result<Served>> {
        fetched_within(client, ids, 100, STALL).await
    }

    /// What one `DownloadMany` call for all of `ids` gives for each.
    async fn in_one_call(client: ExchangeClient<Authed>, ids: &[PackId]) -> Vec<Result<Served>> {
        in_one_call_within(client, ids, STALL).await
    }

    /// As [`in_one_call`], giving up after `stall`.
    async fn in_one_call_within(
        client: ExchangeClient<Authed>,
        ids: &[PackId],
        stall: Duration,
    ) -> Vec<Result<Served>> {
        let root = tempfile::tempdir().unwrap();
        let (batch, told): (Vec<_>, Vec<_>) = ids
            .iter()
            .map(|id| {
                let (tx, rx) = oneshot::channel();
                ((*id, tx), rx)
            })
            .unzip();
        super::many(client, root.path(), batch, stall).await;
        let mut out = Vec::new();
        for rx in told {
            out.push(read_back(rx.await.unwrap()));
        }
        out
    }

    /// The ids `Download` was asked for, in order of id.
    fn asked_alone(downloaded: &Mutex<Vec<String>>) -> Vec<String> {
        let mut asked = downloaded.lock().unwrap().clone();
        asked.sort();
        asked
    }

    /// `ids` as text, in order.
    fn sorted(ids: &[PackId]) -> Vec<String> {
        let mut ids: Vec<String> = ids.iter().map(PackId::to_string).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn an_older_server_is_asked_one_pack_at_a_time() {
        let (ids, packs) = packs(3);
        let downloaded = Arc::new(Mutex::new(Vec::new()));
        let client = serve(Older {
            packs: packs.clone(),
            downloaded: downloaded.clone(),
            ..Older::default()
        })
        .await;
        for (id, got) in ids.iter().zip(fetched(&client, &ids).await) {
            assert_eq!(got.unwrap(), packs[&id.to_string()]);
        }
        assert_eq!(asked_alone(&downloaded), sorted(&ids));
    }

    #[tokio::test]
    async fn a_refusal_stays_with_its_pack_and_a_stray_answer_is_not_trusted() {
        let (ids, packs) = packs(6);
        let of = |n: usize| &packs[&ids[n].to_string()];
        // Pack 0 served; 1 refused; 2 too large for the call; then an
        // answer for pack 5 where pack 3 was due, and pack 4 never answered.
        let many = vec![
            Ok(served(of(0))),
            Ok(refused(ids[1], Code::NotFound)),
            Ok(refused(ids[2], Code::FailedPrecondition)),
            Ok(served(of(5))),
        ];
        let downloaded = Arc::new(Mutex::new(Vec::new()));
        let mut alone_packs = packs.clone();
        alone_packs.remove(&ids[1].to_string());
        let client = serve(Older {
            packs: alone_packs,
            downloaded: downloaded.clone(),
            many: Some(many),
            ..Older::default()
        })
        .await;
        let got = in_one_call(client, &ids).await;
        assert_eq!(got[0].as_ref().unwrap(), of(0));
        let why = format!("{:#}", got[1].as_ref().unwrap_err());
        assert!(why.contains("refused"), "{why}");
        for (n, got) in got.iter().enumerate().skip(2) {
            assert_eq!(got.as_ref().unwrap(), of(n), "pack {n}");
        }
        // Downloaded alone: the large one and every one from the stray
        // answer on (never the refused one, nor the one served).
        assert_eq!(asked_alone(&downloaded), sorted(&ids[2..]));
    }

    #[tokio::test]
    async fn a_caller_shut_out_mid_call_is_not_asked_again_a_pack_at_a_time() {
        let (ids, packs) = packs(3);
        let downloaded = Arc::new(Mutex::new(Vec::new()));
        let client = serve(Older {
            packs: packs.clone(),
            downloaded: downloaded.clone(),
            many: Some(vec![
                Ok(served(&packs[&ids[0].to_string()])),
                Err(Status::unauthenticated("token revoked")),
            ]),
            ..Older::default()
        })
        .await;
        let got = in_one_call(client, &ids).await;
        assert!(got[0].is_ok());
        for refused in &got[1..] {
            let why = format!("{:#}", refused.as_ref().unwrap_err());
            assert!(why.contains("token revoked"), "{why}");
        }
        assert!(asked_alone(&downloaded).is_empty(), "asked again alone");
    }

    /// Runs `work`, failing the test if it takes more than ten seconds
    /// (so a stall shows as a failure, not a test that never ends).
    async fn soon<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("still waiting after 10 s")
    }

    /// What one `DownloadMany` call for `ids` gives from `server` when
    /// downloads are given up after 1 s, and the ids then asked for alone.
    async fn with_stall(mut server: Older, ids: &[PackId]) -> (Vec<Result<Served>>, Vec<String>) {
        let downloaded = Arc::new(Mutex::new(Vec::new()));
        server.downloaded = downloaded.clone();
        let client = serve(server).await;
        let got = soon(in_one_call_within(client, ids, Duration::from_secs(1))).await;
        (got, asked_alone(&downloaded))
    }

    /// Asserts that each of `got` was given up after 1 s without a message.
    fn all_stalled(got: &[Result<Served>]) {
        for stalled in got {
            let why = format!("{:#}", stalled.as_ref().unwrap_err());
            assert!(why.contains("the server sent nothing for 1 s"), "{why}");
        }
    }

    #[tokio::test]
    async fn a_stalled_download_many_fails_the_packs_still_due_and_asks_nothing_again() {
        let (ids, packs) = packs(3);
        let first = packs[&ids[0].to_string()].clone();
        let server = Older {
            many: Some(vec![Ok(served(&first))]),
            packs,
            stalls: true,
            ..Older::default()
        };
        let (got, asked) = with_stall(server, &ids).await;
        assert_eq!(got[0].as_ref().unwrap(), &first);
        all_stalled(&got[1..]);
        assert!(asked.is_empty(), "asked again alone");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_once_for_all_its_packs() {
        let (ids, packs) = packs(3);
        let server = Older {
            packs,
            many: Some(Vec::new()),
            mute: true,
            ..Older::default()
        };
        let (got, asked) = with_stall(server, &ids).await;
        all_stalled(&got);
        assert!(asked.is_empty(), "asked again alone");
    }

    #[tokio::test]
    async fn a_download_that_never_ends_is_given_up_and_the_rest_not_asked() {
        // An older server (no `DownloadMany`), so a pack at a time: it
        // sends the first whole, then neither ends the stream nor sends
        // more.
        let (ids, packs) = packs(3);
        let server = Older {
            packs,
            stalls: true,
            ..Older::default()
        };
        let (got, asked) = with_stall(server, &ids).await;
        all_stalled(&got);
        assert_eq!(asked, vec![ids[0].to_string()]);
    }

    /// Two large packs, `SMALL + 1` bytes, by id.
    fn large_packs() -> (Vec<PackId>, HashMap<String, Served>) {
        let sender = Identity::generate();
        let ids: Vec<PackId> = (0..2).map(|_| PackId::new()).collect();
        let packs = ids
            .iter()
            .map(|id| (id.to_string(), pack(&sender, *id, SMALL as usize + 1)))
            .collect();
        (ids, packs)
    }

    #[tokio::test]
    async fn a_slow_download_that_keeps_coming_is_not_cut_off() {
        // Eleven messages 300 ms apart (3.3 s in all), with a stall of 1 s.
        let (ids, packs) = large_packs();
        let client = serve(Older {
            packs: packs.clone(),
            pace: Some(Duration::from_millis(300)),
            ..Older::default()
        })
        .await;
        let stall = Duration::from_secs(1);
        let got = soon(fetched_within(&client, &ids[..1], SMALL + 1, stall)).await;
        assert_eq!(got[0].as_ref().unwrap(), &packs[&ids[0].to_string()]);
    }
}
