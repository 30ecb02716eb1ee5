//! `Inbox` and `Sent` with a million packs in the store: page latency
//! through the real daemon, and the query plans behind them.
//!
//! One real pack is uploaded, then its row is copied a million times with
//! SQL into the daemon's own database (other ids, schools and states; no
//! ciphertext rows, which listings never read): 50 receiving schools with
//! 20,000 packs each, 400 sending schools with 2,500 each, all but the
//! newest 2,000 acknowledged (earlier years' transfers), so a school's inbox
//! is a few dozen open packs among tens of thousands it has received.

use crate::*;

/// The listing queries, as both stores run them (`INBOX_SQL` and
/// `SENT_SQL` in `server/store/shared.rs`: the inbox's predicate is the
/// partial index `packs_inbox_live`'s, word for word, or SQLite will not use
/// it). Keep them in step with the store's.
const INBOX: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
     chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
     FROM packs WHERE to_laestab = $1 AND seq > $2 AND (status IN ('pending', 'downloaded') \
     OR (status = 'acknowledged' AND recalled_at_ms IS NOT NULL)) ORDER BY seq LIMIT $3";
const SENT: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
     chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
     FROM packs WHERE from_laestab = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

/// Receiving and sending schools the copies are spread over; the newest
/// `OPEN` copies are not acknowledged.
const RECEIVERS: i64 = 50;
const SENDERS: i64 = 400;
const OPEN: i64 = 2000;

/// The SQL that copies the one real pack row `total` times.
fn copy_sql(postgres: bool, total: i64, to: &str, from: &str) -> String {
    // School i % RECEIVERS == 0 is the enrolled receiver, i % SENDERS == 0
    // the enrolled sender; the others are names only.
    let (series, text) = if postgres {
        (
            format!("generate_series(1, {total}) AS n(i)"),
            "lpad(CAST(i % {m} AS TEXT), 4, '0')",
        )
    } else {
        (
            format!(
                "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total}) SELECT i FROM n) AS n"
            ),
            "printf('%04d', i % {m})",
        )
    };
    let to_other = text.replace("{m}", &RECEIVERS.to_string());
    let from_other = text.replace("{m}", &SENDERS.to_string());
    format!(
        "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
         ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
         status, uploaded_at_ms, acknowledged_at_ms) \
         SELECT 'copy-' || i, \
           CASE WHEN i % {SENDERS} = 0 THEN '{from}' ELSE '871' || {from_other} END, \
           CASE WHEN i % {RECEIVERS} = 0 THEN '{to}' ELSE '872' || {to_other} END, \
           p.kind, p.created_at_ms, p.ciphertext_length, p.ciphertext_sha256, p.sender_key_id, \
           p.header, 'copy-upload-' || i, 0, \
           CASE WHEN i > {total} - {OPEN} THEN 'pending' ELSE 'acknowledged' END, \
           p.uploaded_at_ms, \
           CASE WHEN i > {total} - {OPEN} THEN NULL ELSE p.uploaded_at_ms END \
         FROM {series}, (SELECT * FROM packs ORDER BY seq LIMIT 1) AS p"
    )
}

/// Times `f` `n` times; returns the median and the worst, ms.
async fn median_ms<F, Fut>(n: usize, mut f: F) -> Res<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((
        percentile(&times, 0.5),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    ))
}

/// Pages through a listing to its end; returns (pages, entries).
async fn page_all(
    client: &mut ExchangeClient<Channel>,
    token: &str,
    inbox: bool,
) -> Res<(usize, usize)> {
    let (mut pages, mut entries, mut page_token) = (0, 0, String::new());
    loop {
        let next = if inbox {
            let r = client
                .inbox(with_token(
                    token,
                    v1::InboxRequest {
                        page_size: 100,
                        page_token,
                    },
                ))
                .await?
                .into_inner();
            entries += r.packs.len();
            r.next_page_token
        } else {
            let r = client
                .sent(with_token(
                    token,
                    v1::SentRequest {
                        page_size: 100,
                        page_token,
                    },
                ))
                .await?
                .into_inner();
            entries += r.packs.len();
            r.next_page_token
        };
        pages += 1;
        if next.is_empty() {
            return Ok((pages, entries));
        }
        page_token = next;
    }
}

/// Fills a fresh daemon's store with `total` packs and measures listings.
pub(crate) async fn scale(label: &str, daemon: &Daemon, total: usize) -> Res<()> {
    println!("\n== {label}: Inbox and Sent with {total} packs in the store");
    let receiver = daemon.enrol("8619201").await;
    let sender = daemon.enrol("8619202").await;
    let keys = vec![school_key(&receiver.identity)];
    let (header, ct) = seal_pack(&sender, receiver.laestab, &keys, 1, b"scale")?;
    let ch = daemon.channel().await;
    let job = Job {
        sender: 0,
        header: v1::PackHeader::from(&header),
        body: Body::Bytes(Arc::new(ct)),
    };
    upload_all(
        std::slice::from_ref(&ch),
        std::slice::from_ref(&sender.token),
        vec![job],
        1,
    )
    .await?;

    let total = i64::try_from(total)?;
    let (to, from) = (receiver.laestab.to_string(), sender.laestab.to_string());
    let start = Instant::now();
    let plans = match &daemon.database_url {
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(copy_sql(true, total, &to, &from)))
                .execute(&pool)
                .await?;
            sqlx::query("ANALYZE packs").execute(&pool).await?;
            println!("filled in {:.1} s", start.elapsed().as_secs_f64());
            let mut plans = Vec::new();
            for (name, sql, school, cursor) in
                [("Inbox", INBOX, &to, 0i64), ("Sent", SENT, &from, i64::MAX)]
            {
                let explain = format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}");
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
                    .bind(school)
                    .bind(cursor)
                    .bind(101i64)
                    .fetch_all(&pool)
                    .await?;
                plans.push((name, rows.into_iter().map(|(l,)| l).collect::<Vec<_>>()));
            }
            pool.close().await;
            plans
        }
        None => {
            use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
            let options = SqliteConnectOptions::new()
                .filename(daemon.data.join("baton.db"))
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(copy_sql(false, total, &to, &from)))
                .execute(&pool)
                .await?;
            sqlx::query("ANALYZE").execute(&pool).await?;
            println!("filled in {:.1} s", start.elapsed().as_secs_f64());
            let mut plans = Vec::new();
            for (name, sql, school, cursor) in
                [("Inbox", INBOX, &to, 0i64), ("Sent", SENT, &from, i64::MAX)]
            {
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(explain))
                        .bind(school)
                        .bind(cursor)
                        .bind(101i64)
                        .fetch_all(&pool)
                        .await?;
                plans.push((name, rows.into_iter().map(|r| r.3).collect::<Vec<_>>()));
            }
            let (partial, _) = median_ms(20, || async {
                sqlx::query(INBOX)
                    .bind(&to)
                    .bind(0i64)
                    .bind(101i64)
                    .fetch_all(&pool)
                    .await?;
                Ok(())
            })
            .await?;
            // What the partial index saves: the same inbox query forced
            // onto a plain (to_laestab, seq) index, which walks every
            // acknowledged pack of the school.
            sqlx::query("CREATE INDEX bench_inbox_all ON packs (to_laestab, seq)")
                .execute(&pool)
                .await?;
            let forced = INBOX.replace("FROM packs", "FROM packs INDEXED BY bench_inbox_all");
            let (plain, _) = median_ms(20, || async {
                sqlx::query(sqlx::AssertSqlSafe(forced.clone()))
                    .bind(&to)
                    .bind(0i64)
                    .bind(101i64)
                    .fetch_all(&pool)
                    .await?;
                Ok(())
            })
            .await?;
            sqlx::query("DROP INDEX bench_inbox_all")
                .execute(&pool)
                .await?;
            println!(
                "inbox query alone: {partial:.2} ms with the partial index, {plain:.2} ms on an index of every pack"
            );
            pool.close().await;
            plans
        }
    };

    let mut client = exchange(&ch);
    let (p50, worst) = median_ms(50, || {
        let mut c = client.clone();
        let token = receiver.token.clone();
        async move {
            c.inbox(with_token(&token, v1::InboxRequest::default()))
                .await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "Inbox first page (receiver of {} packs): p50 {p50:.2} ms, worst {worst:.2} ms",
        total / RECEIVERS
    );
    let (p50, worst) = median_ms(50, || {
        let mut c = client.clone();
        let token = sender.token.clone();
        async move {
            c.sent(with_token(&token, v1::SentRequest::default()))
                .await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "Sent first page (sender of {} packs): p50 {p50:.2} ms, worst {worst:.2} ms",
        total / SENDERS
    );
    let t = Instant::now();
    let (pages, entries) = page_all(&mut client, &receiver.token, true).await?;
    println!(
        "Inbox, every page: {entries} open packs in {pages} pages, {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let (pages, entries) = page_all(&mut client, &sender.token, false).await?;
    println!(
        "Sent, every page: {entries} packs in {pages} pages, {:.1} ms ({:.2} ms a page)",
        t.elapsed().as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3 / pages as f64
    );
    for (name, lines) in plans {
        println!("{name} query plan:");
        for line in lines {
            println!("    {line}");
        }
    }
    Ok(())
}
