//! Delivery: receivers list, download, open, confirm the download and
//! acknowledge, as `baton pull` and `baton ack` do; and large packs
//! downloaded as `baton pull` fetches them.

use crate::*;

/// A sink that throws opened attachments away (after they are checked).
pub(crate) struct Discard;

impl Sink for Discard {
    fn create(&mut self, _: usize, _: &AttachmentMeta) -> std::io::Result<Box<dyn Write + '_>> {
        Ok(Box::new(std::io::sink()))
    }
}

/// Receipts sent in one `AcknowledgeMany` call at most, as `baton ack`
/// sends them.
const RECEIPTS_PER_CALL: usize = 100;

/// Small packs asked for in one `DownloadMany` call, as `baton pull` asks.
const PULL_BATCH: usize = 16;

/// Confirmations sent in one `ConfirmDownloads` call at most, as `baton
/// pull` sends them.
const CONFIRMS_PER_CALL: usize = 200;

/// How a batching task fills a call.
#[derive(Clone, Copy)]
enum Fill {
    /// Whatever gathered while the previous call was on the wire, as
    /// `baton pull` confirms downloads.
    Gathered,
    /// Full calls (the last one whatever is left), as `baton ack` sends
    /// receipts.
    Full,
}

/// One task a receiver that sends items in calls of at most `most`, filled
/// as `fill` says (here while the school's other packs are still coming
/// in).
fn batcher<T, F, Fut>(
    most: usize,
    fill: Fill,
    mut call: F,
) -> (
    tokio::sync::mpsc::UnboundedSender<T>,
    tokio::task::JoinHandle<Res<()>>,
)
where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut items = vec![first];
            while items.len() < most {
                let next = match fill {
                    Fill::Gathered => rx.try_recv().ok(),
                    Fill::Full => rx.recv().await,
                };
                let Some(next) = next else { break };
                items.push(next);
            }
            call(items).await?;
        }
        Ok(())
    });
    (tx, task)
}

/// The first refused outcome (`code`, `message`) of a batched call, as an
/// error.
fn refused<'a>(mut outcomes: impl Iterator<Item = (i32, &'a str)>, what: &str) -> Res<()> {
    match outcomes.find(|(code, _)| *code != 0) {
        Some((_, message)) => Err(format!("a {what} was refused: {message}").into()),
        None => Ok(()),
    }
}

/// Sends a receiver's download confirmations; every one must be recorded.
fn confirmer(
    client: ExchangeClient<Channel>,
    token: String,
) -> (
    tokio::sync::mpsc::UnboundedSender<v1::ConfirmDownloadRequest>,
    tokio::task::JoinHandle<Res<()>>,
) {
    batcher(CONFIRMS_PER_CALL, Fill::Gathered, move |packs| {
        let (mut client, token) = (client.clone(), token.clone());
        async move {
            let request = with_token(&token, v1::ConfirmDownloadsRequest { packs });
            let answer = client.confirm_downloads(request).await?.into_inner();
            let outcomes = answer.outcomes.iter();
            refused(
                outcomes.map(|o| (o.code, o.message.as_str())),
                "confirmation",
            )
        }
    })
}

/// Sends a receiver's receipts; every one must be recorded.
fn acker(
    client: ExchangeClient<Channel>,
    token: String,
) -> (
    tokio::sync::mpsc::UnboundedSender<v1::Receipt>,
    tokio::task::JoinHandle<Res<()>>,
) {
    batcher(RECEIPTS_PER_CALL, Fill::Full, move |receipts| {
        let (mut client, token) = (client.clone(), token.clone());
        async move {
            let request = with_token(&token, v1::AcknowledgeManyRequest { receipts });
            let answer = client.acknowledge_many(request).await?.into_inner();
            let outcomes = answer.outcomes.iter();
            refused(outcomes.map(|o| (o.code, o.message.as_str())), "receipt")
        }
    })
}

/// Every receiver lists, downloads, opens and acknowledges all its packs
/// of a chunk or less.
pub(crate) async fn deliver(
    url: &str,
    ca: &Path,
    receivers: Vec<Arc<School>>,
    senders: Arc<Vec<PublicKey>>,
    clients: usize,
) -> Res<Run> {
    let start = Instant::now();
    let mut work = Vec::new();
    for (r, school) in receivers.iter().enumerate() {
        let mut client = exchange(&tls_channel(url, ca).await);
        let mut token = String::new();
        loop {
            let page = client
                .inbox(with_token(
                    &school.token,
                    v1::InboxRequest {
                        page_size: 500,
                        page_token: token.clone(),
                    },
                ))
                .await?
                .into_inner();
            // Packs of a chunk or less, which `DownloadMany` carries: the
            // large packs an earlier phase downloaded and left
            // unacknowledged are not this delivery's.
            for entry in page.packs {
                if let Some(h) = entry.header
                    && h.ciphertext_length <= CHUNK as u64
                {
                    work.push((r, h));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    // A queue a receiving school; its share of the clients in flight each
    // take packs from it a `DownloadMany` call at a time, as `baton pull`
    // does (a school may hold 16 downloads open at once).
    let mut by_receiver: Vec<Vec<v1::PackHeader>> = vec![Vec::new(); receivers.len()];
    for (r, h) in work {
        by_receiver[r].push(h);
    }
    let packs = by_receiver.iter().map(Vec::len).sum();
    let bytes = by_receiver
        .iter()
        .flatten()
        .map(|h| h.ciphertext_length)
        .sum();
    let queues: Arc<Vec<Mutex<Vec<v1::PackHeader>>>> =
        Arc::new(by_receiver.into_iter().map(Mutex::new).collect());
    let receivers = Arc::new(receivers);
    let mut tasks = Vec::new();
    // A connection a receiving school, as each school's `baton` runs on
    // its own machine (ingest has one a sending school).
    let mut chans = Vec::new();
    for _ in receivers.iter() {
        chans.push(tls_channel(url, ca).await);
    }
    let (confirms, confirmers): (Vec<_>, Vec<_>) = receivers
        .iter()
        .zip(&chans)
        .map(|(r, chan)| confirmer(exchange(chan), r.token.clone()))
        .unzip();
    let (acks, ackers): (Vec<_>, Vec<_>) = receivers
        .iter()
        .zip(&chans)
        .map(|(r, chan)| acker(exchange(chan), r.token.clone()))
        .unzip();
    let (confirms, acks) = (Arc::new(confirms), Arc::new(acks));
    for task in 0..clients {
        let r = task % receivers.len();
        let (queues, school, senders) = (queues.clone(), receivers[r].clone(), senders.clone());
        let (confirm, ack) = (confirms[r].clone(), acks[r].clone());
        let mut client = exchange(&chans[r]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let batch: Vec<v1::PackHeader> = {
                    let mut queue = queues[r].lock().await;
                    let from = queue.len().saturating_sub(PULL_BATCH);
                    queue.split_off(from)
                };
                if batch.is_empty() {
                    break;
                }
                let t = Instant::now();
                let pack_ids = batch.iter().map(|h| h.pack_id.clone()).collect();
                let mut stream = client
                    .download_many(with_token(
                        &school.token,
                        v1::DownloadManyRequest { pack_ids },
                    ))
                    .await?
                    .into_inner();
                while let Some(msg) = stream.message().await? {
                    if msg.code != 0 {
                        return Err(format!("a download was refused: {}", msg.message).into());
                    }
                    let wire = msg.header.ok_or("a download without its header")?;
                    let signed = SignedHeader::try_from(&wire)?;
                    let (senders2, school2) = (senders.clone(), school.clone());
                    let signed2 = signed.clone();
                    let data = msg.ciphertext;
                    tokio::task::spawn_blocking(move || {
                        open(
                            &signed2,
                            &senders2,
                            &school2.identity,
                            Cursor::new(data),
                            &mut Discard,
                        )
                        .map(|_| ())
                    })
                    .await??;
                    let h = signed.header();
                    // As `baton pull` does once the pack folder is written.
                    confirm
                        .send(v1::ConfirmDownloadRequest {
                            pack_id: wire.pack_id.clone(),
                            ciphertext_sha256: h.ciphertext_sha256.to_vec(),
                        })
                        .map_err(|_| "a confirmer stopped")?;
                    let receipt = school.identity.sign_receipt(Receipt {
                        pack_id: h.pack_id,
                        ciphertext_sha256: h.ciphertext_sha256,
                        received_at_ms: 2,
                        recipient_key_id: school.identity.key_id(),
                    })?;
                    // As `baton ack` does: receipts many to a call.
                    ack.send(v1::Receipt::from(&receipt))
                        .map_err(|_| "an acker stopped")?;
                    latencies.push(t.elapsed());
                }
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    drop((confirms, acks));
    for c in confirmers.into_iter().chain(ackers) {
        c.await??;
    }
    Ok(Run::ended(packs, bytes, start, latencies))
}

/// Downloads a school may have open at once, as `baton pull` holds them.
pub(crate) const PULL_CONCURRENCY: usize = 4;

/// Large packs downloaded as `baton pull` fetches packs over 256 KiB: a
/// `Download` call a pack, [`PULL_CONCURRENCY`] at a time a receiving
/// school, on a connection of its own. `wanted` is each pack's receiver
/// (an index into `receivers`) and id. The bytes are counted and dropped:
/// what is measured is the daemon's read path and the transport (opening
/// is the receiver's, measured with the 20 KB packs and in `crypto`).
pub(crate) async fn download_all(
    url: &str,
    ca: &Path,
    receivers: &[Arc<School>],
    wanted: Vec<(usize, String)>,
) -> Res<Run> {
    let mut queues: Vec<Vec<String>> = vec![Vec::new(); receivers.len()];
    let packs = wanted.len();
    for (r, id) in wanted {
        queues[r].push(id);
    }
    let queues: Arc<Vec<Mutex<Vec<String>>>> =
        Arc::new(queues.into_iter().map(Mutex::new).collect());
    let mut chans = Vec::new();
    for _ in receivers {
        chans.push(tls_channel(url, ca).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..receivers.len() * PULL_CONCURRENCY {
        let r = task % receivers.len();
        let (queues, token) = (queues.clone(), receivers[r].token.clone());
        let mut client = exchange(&chans[r]);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut bytes) = (Vec::new(), 0u64);
            loop {
                let Some(pack_id) = queues[r].lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                let mut stream = client
                    .download(with_token(&token, v1::DownloadRequest { pack_id }))
                    .await?
                    .into_inner();
                while let Some(msg) = stream.message().await? {
                    if let Some(v1::download_response::Part::Chunk(data)) = msg.part {
                        bytes += data.len() as u64;
                    }
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>((latencies, bytes))
        }));
    }
    let (mut latencies, mut bytes) = (Vec::new(), 0);
    for t in tasks {
        let (l, b) = t.await??;
        latencies.extend(l);
        bytes += b;
    }
    Ok(Run::ended(packs, bytes, start, latencies))
}
