//! Ingest: sealed packs and generated ciphertext under signed headers, uploaded concurrently.

use crate::*;

pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = rand::random::<u64>() | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Seals `attachment` (one file) into a real pack; returns header and ciphertext.
pub(crate) fn seal_pack(
    from: &School,
    to: Laestab,
    recipients: &[SchoolKey],
    serial: u32,
    attachment: &[u8],
) -> Res<(SignedHeader, Vec<u8>)> {
    let manifest = manifest_for(serial, attachment);
    seal_manifest(from, to, recipients, &manifest, attachment)
}

/// `packs` real 20 KB packs (a record and a 19 KB attachment), sealed from
/// `senders` to `receivers` (whose keys are `receiver_keys`) in turn: the
/// ingest jobs, sealed before any clock starts.
pub(crate) fn sealed_jobs(
    senders: &[Arc<School>],
    receivers: &[Arc<School>],
    receiver_keys: &[Vec<SchoolKey>],
    packs: usize,
) -> Res<Vec<Job>> {
    let attachment = random_bytes(19 * 1024);
    let mut jobs = Vec::with_capacity(packs);
    for i in 0..packs {
        let (from, to) = (i % senders.len(), i % receivers.len());
        let (header, ct) = seal_pack(
            &senders[from],
            receivers[to].laestab,
            &receiver_keys[to],
            i as u32,
            &attachment,
        )?;
        jobs.push(Job {
            sender: from,
            header: v1::PackHeader::from(&header),
            body: Body::Bytes(Arc::new(ct)),
        });
    }
    Ok(jobs)
}

/// The manifest of a pack with one attachment, listed by size only: sealing
/// hashes it as it seals (format 2), as `baton send` does.
pub(crate) fn manifest_for(serial: u32, attachment: &[u8]) -> Manifest {
    Manifest {
        record: record(serial),
        ctf_pupil_xml: None,
        attachments: vec![AttachmentMeta::listed(
            "report.pdf",
            attachment.len() as u64,
        )],
    }
}

/// `baton::crypto::seal` of a manifest's one attachment.
pub(crate) fn seal_manifest(
    from: &School,
    to: Laestab,
    recipients: &[SchoolKey],
    manifest: &Manifest,
    attachment: &[u8],
) -> Res<(SignedHeader, Vec<u8>)> {
    let draft = Draft {
        pack_id: PackId::new(),
        from: from.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: 1,
        left_on: None,
        supersedes: None,
    };
    let (header, out) = seal(
        &draft,
        &mut manifest.clone(),
        |_| Ok(Cursor::new(attachment)),
        recipients,
        &from.identity,
        Vec::with_capacity(attachment.len() + 1024),
    )?;
    Ok((header, out))
}

/// A signed header for ciphertext of `len` bytes hashing to `sha256`.
pub(crate) fn header_for(
    from: &School,
    to: Laestab,
    keys: &[SchoolKey],
    len: u64,
    sha256: [u8; 32],
) -> Res<SignedHeader> {
    Ok(from.identity.sign_header(Header {
        format_version: FORMAT_VERSION,
        pack_id: PackId::new(),
        from: from.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: 1,
        ciphertext_len: len,
        ciphertext_sha256: sha256,
        sender_key_id: from.identity.key_id(),
        recipient_key_ids: recipients_for(Kind::Transfer, keys)
            .iter()
            .map(|k| k.key_id())
            .collect(),
        left_on: Some(time::macros::date!(2026 - 07 - 22)),
        supersedes: None,
        forwarded: None,
    })?)
}

/// Where an upload's ciphertext comes from.
#[derive(Clone)]
pub(crate) enum Body {
    /// Bytes in memory (shared between uploads of the same size).
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes generated on the fly from `seed` (never held whole).
    Generated { seed: u64, len: u64 },
}

/// Generated ciphertext, one chunk at a time.
pub(crate) struct Generator {
    pub(crate) x: u64,
    pub(crate) left: u64,
}

impl Iterator for Generator {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        let mut out = vec![0u8; n];
        for c in out.chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            c.copy_from_slice(&self.x.to_le_bytes()[..c.len()]);
        }
        Some(out)
    }
}

impl Body {
    pub(crate) fn chunks(&self) -> Box<dyn Iterator<Item = Vec<u8>> + Send> {
        match self {
            Body::Bytes(b) => {
                let b = b.clone();
                let n = b.len().div_ceil(CHUNK);
                Box::new((0..n).map(move |i| b[i * CHUNK..((i + 1) * CHUNK).min(b.len())].to_vec()))
            }
            Body::Generated { seed, len } => Box::new(Generator {
                x: *seed | 1,
                left: *len,
            }),
        }
    }
}

/// One upload to do: who sends, the header, the bytes.
#[derive(Clone)]
pub(crate) struct Job {
    pub(crate) sender: usize,
    pub(crate) header: v1::PackHeader,
    pub(crate) body: Body,
}

/// The messages of an upload, made as they are sent.
pub(crate) fn messages(job: &Job) -> impl Iterator<Item = v1::UploadRequest> + Send + 'static {
    use v1::upload_request::Part;
    let head = std::iter::once(v1::UploadRequest {
        part: Some(Part::Header(job.header.clone())),
    });
    head.chain(job.body.chunks().map(chunk_message))
}

pub(crate) fn chunk_message(c: Vec<u8>) -> v1::UploadRequest {
    v1::UploadRequest {
        part: Some(v1::upload_request::Part::Chunk(c.into())),
    }
}

pub(crate) async fn upload_one(
    client: &mut ExchangeClient<Channel>,
    token: &str,
    job: &Job,
) -> Res<()> {
    let request = with_token(token, tokio_stream::iter(messages(job)));
    client.upload(request).await?;
    Ok(())
}

/// Results of one concurrent upload run.
pub(crate) struct Run {
    pub(crate) packs: usize,
    pub(crate) bytes: u64,
    pub(crate) wall: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Run {
    /// A run of `packs` (`bytes` in all) that began at `start` and ends
    /// now, each pack's latency in `latencies`.
    pub(crate) fn ended(
        packs: usize,
        bytes: u64,
        start: Instant,
        mut latencies: Vec<Duration>,
    ) -> Self {
        let wall = start.elapsed();
        latencies.sort();
        Self {
            packs,
            bytes,
            wall,
            latencies,
        }
    }
    pub(crate) fn rate(&self) -> f64 {
        self.packs as f64 / self.wall.as_secs_f64()
    }
    /// Milliseconds of `cpu` seconds for each MB this run moved.
    pub(crate) fn ms_a_mb(&self, cpu: f64) -> f64 {
        cpu * 1e3 / (self.bytes as f64 / 1e6)
    }
    pub(crate) fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
    pub(crate) fn line(&self, label: &str) -> String {
        format!(
            "{label}: {} packs in {:.2} s = {:.0} packs/s, {:.1} MB/s, p50 {:.1} ms, p99 {:.1} ms",
            self.packs,
            self.wall.as_secs_f64(),
            self.rate(),
            self.mb_s(),
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99)
        )
    }
}

/// Uploads every job with `clients` in flight; senders' tokens by index.
pub(crate) async fn upload_all(
    channels: &[Channel],
    tokens: &[String],
    jobs: Vec<Job>,
    clients: usize,
) -> Res<Run> {
    let packs = jobs.len();
    let bytes = jobs.iter().map(|j| j.header.ciphertext_length).sum();
    let queue = Arc::new(Mutex::new(jobs));
    let tokens = Arc::new(tokens.to_vec());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let queue = queue.clone();
        let tokens = tokens.clone();
        let mut client = exchange(&channels[i % channels.len()]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(job) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                upload_one(&mut client, &tokens[job.sender], &job).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Run::ended(packs, bytes, start, latencies))
}

// ---------------------------------------------------------------- delivery
