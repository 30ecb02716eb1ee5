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
use std::time::Duration;

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
/// answer, a header, a chunk) before it is given up: a server that
/// stalls a download (a fault, or a hostile one) fails that download
/// rather than hanging `baton pull`; the next pull asks again. An idle
/// time, not a whole call's: a large pack on a slow link is not cut off
/// while its chunks keep coming.
pub(crate) const STALL: Duration = Duration::from_secs(60);

/// Waits for the server's next answer at most `stall`; past it, the
/// call's status says the server stalled (`DeadlineExceeded`).
pub(crate) async fn within<T>(
    stall: Duration,
    answer: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(stall, answer).await.unwrap_or_else(|_| {
        Err(tonic::Status::deadline_exceeded(format!(
            "the server sent nothing for {} s, so this download was given up (run the command again to retry)",
            stall.as_secs_f64()
        )))
    })
}

/// Streams a pack's ciphertext into `path`, returning its header; gives
/// up when the server sends nothing for `stall` ([`STALL`]).
pub(crate) async fn download(
    mut exchange: ExchangeClient<Authed>,
    id: PackId,
    path: &Path,
    stall: Duration,
) -> Result<SignedHeader> {
    let call = exchange.download(v1::DownloadRequest {
        pack_id: id.to_string(),
    });
    let mut stream = within(stall, call)
        .await
        .map_err(|s| anyhow::anyhow!("downloading: {}", explain(&s)))?
        .into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    let mut header = None;
    while let Some(message) = within(stall, stream.message())
        .await
        .map_err(|s| anyhow::anyhow!("downloading: {}", explain(&s)))?
    {
        match message.part {
            Some(v1::download_response::Part::Header(h)) if header.is_none() => {
                header = Some(served_header(&h, id)?);
            }
            Some(v1::download_response::Part::Chunk(bytes)) if header.is_some() => {
                file.write_all(&bytes).await?
            }
            _ => bail!("the server's download stream is out of order"),
        }
    }
    file.sync_all().await?;
    header.context("the server sent no header")
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
/// outcome as it arrives; a server that sends nothing for `stall` fails
/// the packs still due.
async fn many(
    mut exchange: ExchangeClient<Authed>,
    root: &Path,
    batch: Vec<ToTell>,
    stall: Duration,
) {
    let pack_ids = batch.iter().map(|(id, _)| id.to_string()).collect();
    let call = exchange.download_many(v1::DownloadManyRequest { pack_ids });
    let mut stream = match within(stall, call).await {
        Ok(answer) => answer.into_inner(),
        // A server from before `DownloadMany`: a call a pack.
        Err(status) if status.code() == Code::Unimplemented => {
            return each_alone(&exchange, root, batch, stall).await;
        }
        Err(status) => return refuse_all(batch, &status),
    };
    let mut waiting = batch.into_iter();
    while let Some((id, tx)) = waiting.next() {
        let answer = match within(stall, stream.message()).await {
            Ok(Some(message)) => one(root, id, message).await,
            // The caller shut out (a token or key revoked while the call
            // ran), or the server stalled: asking again, a pack at a time,
            // would only be refused or wait as long again for each.
            Err(status) if shut_out(status.code()) || status.code() == Code::DeadlineExceeded => {
                return refuse_all(std::iter::once((id, tx)).chain(waiting), &status);
            }
            Ok(None) | Err(_) => Err(Refused::Broken),
        };
        let outcome = match answer {
            Ok(fetched) => Ok(fetched),
            Err(Refused::Pack(e)) => Err(e),
            Err(Refused::TooLarge) => alone(exchange.clone(), root, id, stall).await,
            // The call failed or went astray: this pack and every one left
            // are downloaded alone (each checked on its own).
            Err(Refused::Broken) => {
                let rest = std::iter::once((id, tx)).chain(waiting);
                return each_alone(&exchange, root, rest, stall).await;
            }
        };
        let _ = tx.send(outcome);
    }
}

/// Tells each of `packs` the outcome of downloading it with `Download`.
async fn each_alone(
    exchange: &ExchangeClient<Authed>,
    root: &Path,
    packs: impl IntoIterator<Item = ToTell>,
    stall: Duration,
) {
    for (id, tx) in packs {
        let _ = tx.send(alone(exchange.clone(), root, id, stall).await);
    }
}

/// Tells each of `packs` that the call for it ended with `status`.
fn refuse_all(packs: impl IntoIterator<Item = ToTell>, status: &Status) {
    let why = format!("downloading: {}", explain(status));
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

    #[tokio::test]
    async fn a_stalled_download_many_fails_the_packs_still_due_and_asks_nothing_again() {
        let (ids, packs) = packs(3);
        let downloaded = Arc::new(Mutex::new(Vec::new()));
        let client = serve(Older {
            packs: packs.clone(),
            downloaded: downloaded.clone(),
            many: Some(vec![Ok(served(&packs[&ids[0].to_string()]))]),
            stalls: true,
            ..Older::default()
        })
        .await;
        let got = soon(in_one_call_within(client, &ids, Duration::from_millis(300))).await;
        assert_eq!(got[0].as_ref().unwrap(), &packs[&ids[0].to_string()]);
        for stalled in &got[1..] {
            let why = format!("{:#}", stalled.as_ref().unwrap_err());
            assert!(why.contains("the server sent nothing for 0.3 s"), "{why}");
        }
        assert!(asked_alone(&downloaded).is_empty(), "asked again alone");
    }

    #[tokio::test]
    async fn a_download_that_never_ends_is_given_up() {
        // Large packs, downloaded alone: the server sends each whole, then
        // neither ends the stream nor sends more.
        let (ids, packs) = packs(2);
        let client = serve(Older {
            packs,
            stalls: true,
            ..Older::default()
        })
        .await;
        let got = soon(fetched_within(
            &client,
            &ids,
            SMALL + 1,
            Duration::from_millis(300),
        ))
        .await;
        for stalled in got {
            let why = format!("{:#}", stalled.unwrap_err());
            assert!(why.contains("the server sent nothing for 0.3 s"), "{why}");
        }
    }
}
