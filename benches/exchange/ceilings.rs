//! The machine's ceilings in the same run: raw sqlx inserts into the same
//! database kind (SQLite, or PostgreSQL) and a bare tonic service over the same TLS.

use crate::*;

/// Raw sqlx SQLite inserts of `blobs` (WAL, synchronous=FULL): rows/s with
/// one transaction per row, and with `batch` rows per transaction.
pub(crate) async fn storage_ceiling(blobs: &[Arc<Vec<u8>>], batch: usize) -> Res<(f64, f64)> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("ceiling.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(15));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE chunks (upload_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (upload_id, idx))")
        .execute(&pool)
        .await?;
    let start = Instant::now();
    for (i, blob) in blobs.iter().enumerate() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO chunks (upload_id, idx, data) VALUES (?, 0, ?)")
            .bind(format!("one-{i}"))
            .bind(blob.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let one = blobs.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (g, group) in blobs.chunks(batch).enumerate() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for (i, blob) in group.iter().enumerate() {
            sqlx::query("INSERT INTO chunks (upload_id, idx, data) VALUES (?, 0, ?)")
                .bind(format!("batch-{g}-{i}"))
                .bind(blob.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let batched = blobs.len() as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok((one, batched))
}

/// The disk's own speed for big packs: `n` files of `size` bytes written
/// one after another in 256 KiB writes, each synced (`fsync`) and its
/// folder synced, as the daemon makes a pack durable, its pages then
/// dropped as the daemon drops them; MB/s.
pub(crate) async fn file_ceiling(size: usize, n: usize) -> Res<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_path_buf();
    let secs = tokio::task::spawn_blocking(move || -> std::io::Result<f64> {
        use std::io::Write as _;
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        for i in 0..n {
            let mut file = std::fs::File::create(path.join(format!("pack-{i}")))?;
            let mut left = size;
            while left > 0 {
                let take = left.min(chunk.len());
                file.write_all(&chunk[..take])?;
                left -= take;
            }
            file.sync_all()?;
            // As the daemon does: its clean pages dropped, so the next
            // file's writes reuse them rather than memory the machine has
            // not touched (which costs a fault to the host a page on a
            // virtual machine that hands free memory back).
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
            std::fs::File::open(&path)?.sync_all()?;
        }
        Ok(start.elapsed().as_secs_f64())
    })
    .await??;
    Ok((size * n) as f64 / 1e6 / secs)
}

/// Raw sqlx PostgreSQL inserts of `blobs` into the database at `url`
/// (default durability: `synchronous_commit = on`, as the daemon uses):
/// rows/s with one transaction per row, and with `batch` rows per transaction.
pub(crate) async fn pg_storage_ceiling(
    url: &str,
    blobs: &[Arc<Vec<u8>>],
    batch: usize,
) -> Res<(f64, f64)> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    sqlx::query("CREATE TABLE ceiling_chunks (upload_id TEXT NOT NULL, idx BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (upload_id, idx))")
        .execute(&pool)
        .await?;
    let start = Instant::now();
    for (i, blob) in blobs.iter().enumerate() {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO ceiling_chunks (upload_id, idx, data) VALUES ($1, 0, $2)")
            .bind(format!("one-{i}"))
            .bind(blob.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let one = blobs.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (g, group) in blobs.chunks(batch).enumerate() {
        let mut tx = pool.begin().await?;
        for (i, blob) in group.iter().enumerate() {
            sqlx::query("INSERT INTO ceiling_chunks (upload_id, idx, data) VALUES ($1, 0, $2)")
                .bind(format!("batch-{g}-{i}"))
                .bind(blob.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let batched = blobs.len() as f64 / start.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE ceiling_chunks")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok((one, batched))
}

/// An Exchange service that only drains uploads: the transport ceiling.
pub(crate) struct Drain;

type Empty<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl Exchange for Drain {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        let mut stream = request.into_inner();
        let mut bytes = 0usize;
        while let Some(msg) = stream.message().await? {
            if let Some(v1::upload_request::Part::Chunk(c)) = msg.part {
                bytes += c.len();
            }
        }
        Ok(Response::new(v1::UploadResponse {
            pack_id: bytes.to_string(),
            already_stored: false,
            uploaded_at_ms: 0,
            checkpoint: None,
        }))
    }
    async fn inbox(
        &self,
        _: Request<v1::InboxRequest>,
    ) -> Result<Response<v1::InboxResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type DownloadStream = Empty<v1::DownloadResponse>;
    async fn download(
        &self,
        _: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type DownloadManyStream = Empty<v1::DownloadManyResponse>;
    async fn download_many(
        &self,
        _: Request<v1::DownloadManyRequest>,
    ) -> Result<Response<Self::DownloadManyStream>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn confirm_download(
        &self,
        _: Request<v1::ConfirmDownloadRequest>,
    ) -> Result<Response<v1::ConfirmDownloadResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn confirm_downloads(
        &self,
        _: Request<v1::ConfirmDownloadsRequest>,
    ) -> Result<Response<v1::ConfirmDownloadsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn acknowledge(
        &self,
        _: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn acknowledge_many(
        &self,
        _: Request<v1::AcknowledgeManyRequest>,
    ) -> Result<Response<v1::AcknowledgeManyResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn sent(
        &self,
        _: Request<v1::SentRequest>,
    ) -> Result<Response<v1::SentResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn recall(
        &self,
        _: Request<v1::RecallRequest>,
    ) -> Result<Response<v1::RecallResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn limits(
        &self,
        _: Request<v1::LimitsRequest>,
    ) -> Result<Response<v1::LimitsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type WatchStream = Empty<v1::WatchEvent>;
    async fn watch(
        &self,
        _: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

/// Starts the draining service with the daemon's own TLS certificate; returns its URL.
pub(crate) async fn transport_server(daemon: &Daemon) -> Res<String> {
    let tls = daemon.data.join("tls");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls.join("server.pem"))?,
        std::fs::read(tls.join("server-key.pem"))?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // HTTP/2's default frame size unless asked (the daemon allows 64 KiB):
    // the ceiling is bare tonic, as in every round; BENCHMARKS.md, round
    // 17, gives the drain with the daemon's frame size too.
    let frame = std::env::var("BATON_BENCH_DRAIN_FRAME")
        .ok()
        .and_then(|v| v.parse().ok());
    let server = Server::builder()
        .max_frame_size(frame)
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .add_service(
            ExchangeServer::new(Drain)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok(format!("https://127.0.0.1:{}", addr.port()))
}

// ---------------------------------------------------------------- crypto
