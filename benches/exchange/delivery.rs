//! Delivery: receivers list, download, open, confirm the download and
//! acknowledge, as `baton pull` and `baton ack` do.

use crate::*;

/// A sink that throws opened attachments away (after they are checked).
pub(crate) struct Discard;

impl Sink for Discard {
    fn create(&mut self, _: usize, _: &AttachmentMeta) -> std::io::Result<Box<dyn Write + '_>> {
        Ok(Box::new(std::io::sink()))
    }
}

/// Receipts sent in one `AcknowledgeMany` call, as `baton ack` sends them.
const RECEIPTS_PER_CALL: usize = 100;

/// Sends `receipts` in one call; every one must be recorded.
async fn acknowledge(
    client: &mut ExchangeClient<Channel>,
    token: &str,
    receipts: Vec<v1::Receipt>,
) -> Res<()> {
    let answer = client
        .acknowledge_many(with_token(token, v1::AcknowledgeManyRequest { receipts }))
        .await?
        .into_inner();
    if let Some(refused) = answer.outcomes.iter().find(|o| o.code != 0) {
        return Err(format!("a receipt was refused: {}", refused.message).into());
    }
    Ok(())
}

/// Confirmations sent in one `ConfirmDownloads` call at most, as `baton
/// pull` sends them.
const CONFIRMS_PER_CALL: usize = 200;

/// As `baton pull` tells the server: one task a receiver sends, in one
/// `ConfirmDownloads` call, whatever confirmations gathered while its
/// previous call was on the wire. Every one must be recorded.
fn confirmer(
    mut client: ExchangeClient<Channel>,
    token: String,
) -> (
    tokio::sync::mpsc::UnboundedSender<v1::ConfirmDownloadRequest>,
    tokio::task::JoinHandle<Res<()>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut packs = vec![first];
            while packs.len() < CONFIRMS_PER_CALL
                && let Ok(next) = rx.try_recv()
            {
                packs.push(next);
            }
            let answer = client
                .confirm_downloads(with_token(&token, v1::ConfirmDownloadsRequest { packs }))
                .await?
                .into_inner();
            if let Some(refused) = answer.outcomes.iter().find(|o| o.code != 0) {
                return Err(format!("a confirmation was refused: {}", refused.message).into());
            }
        }
        Ok(())
    });
    (tx, task)
}

/// Every receiver lists, downloads, opens and acknowledges all its packs.
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
            for entry in page.packs {
                if let Some(h) = entry.header {
                    work.push((r, h));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    // Interleaved across receivers, so each school has about its share of
    // the clients in flight (a school may hold 16 downloads open at once).
    let mut by_receiver: Vec<Vec<_>> = vec![Vec::new(); receivers.len()];
    for (r, h) in work {
        by_receiver[r].push((r, h));
    }
    let mut work = Vec::new();
    while by_receiver.iter().any(|w| !w.is_empty()) {
        for w in &mut by_receiver {
            work.extend(w.pop());
        }
    }
    let packs = work.len();
    let bytes = work.iter().map(|(_, h)| h.ciphertext_length).sum();
    let queue = Arc::new(Mutex::new(work));
    let receivers = Arc::new(receivers);
    let mut tasks = Vec::new();
    let chan = tls_channel(url, ca).await;
    let (confirms, confirmers): (Vec<_>, Vec<_>) = receivers
        .iter()
        .map(|r| confirmer(exchange(&chan), r.token.clone()))
        .unzip();
    let confirms = Arc::new(confirms);
    for _ in 0..clients {
        let (queue, receivers, senders) = (queue.clone(), receivers.clone(), senders.clone());
        let confirms = confirms.clone();
        let mut client = exchange(&chan);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut pending: HashMap<usize, Vec<v1::Receipt>> = HashMap::new();
            loop {
                let Some((r, wire)) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                let school = receivers[r].clone();
                let mut stream = client
                    .download(with_token(
                        &school.token,
                        v1::DownloadRequest {
                            pack_id: wire.pack_id.clone(),
                        },
                    ))
                    .await?
                    .into_inner();
                let mut data = Vec::with_capacity(wire.ciphertext_length as usize);
                while let Some(msg) = stream.message().await? {
                    if let Some(v1::download_response::Part::Chunk(c)) = msg.part {
                        data.extend_from_slice(&c);
                    }
                }
                let signed = SignedHeader::try_from(&wire)?;
                let (senders2, school2) = (senders.clone(), school.clone());
                let signed2 = signed.clone();
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
                confirms[r]
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
                let batch = pending.entry(r).or_default();
                batch.push(v1::Receipt::from(&receipt));
                if batch.len() >= RECEIPTS_PER_CALL {
                    let receipts = std::mem::take(batch);
                    acknowledge(&mut client, &school.token, receipts).await?;
                }
                latencies.push(t.elapsed());
            }
            for (r, receipts) in pending {
                if !receipts.is_empty() {
                    acknowledge(&mut client, &receivers[r].token, receipts).await?;
                }
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    drop(confirms);
    for c in confirmers {
        c.await??;
    }
    latencies.sort();
    Ok(Run {
        packs,
        bytes,
        wall: start.elapsed(),
        latencies,
    })
}

// ---------------------------------------------------------------- ceilings
