//! Results day: senders upload while receivers pull, on one daemon.
//!
//! The phases before this one measure ingest and delivery each alone. On a
//! results day they happen together (primaries sending while secondaries
//! collect what arrived the day before), and an operator asks what each
//! side gets then: both share the daemon's one SQLite writer, its cores and
//! the disk.

use crate::*;

/// What the mixed phase is compared with: the same run's rates alone.
pub(crate) struct Alone {
    /// 20 KB ingest alone, packs/s.
    pub(crate) ingest: f64,
    /// 20 KB delivery alone (list, download, open, confirm, ack), packs/s.
    pub(crate) delivery: f64,
}

/// Seals `packs` packs twice over (before any clock), uploads the first set
/// (the backlog the receivers find waiting, untimed), then uploads the
/// second while the receivers deliver the backlog, `clients` in flight on
/// each side; prints both rates beside their rates alone, the latencies
/// and the daemon's CPU a pack.
pub(crate) async fn results_day(
    parties: &Parties<'_>,
    packs: usize,
    clients: usize,
    alone: Alone,
) -> Res<()> {
    let (backlog, fresh) = (parties.sealed(packs)?, parties.sealed(packs)?);
    let (channels, tokens) = (parties.channels, parties.tokens);
    upload_all(channels, tokens, backlog, clients).await?;
    let cpu0 = cpu_seconds(parties.daemon.pid());
    let start = Instant::now();
    // The receivers list their inboxes first thing, so they take the
    // backlog and at most a few of the fresh packs.
    let (ingest, delivery) = tokio::join!(
        upload_all(channels, tokens, fresh, clients),
        parties.deliver(clients),
    );
    let (ingest, delivery) = (ingest?, delivery?);
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(parties.daemon.pid()) - cpu0;
    let both = ingest.packs + delivery.packs;
    println!(
        "{} (while receivers pull)",
        ingest.line("results day: ingest 20 KB")
    );
    println!(
        "{} (while senders upload)",
        delivery.line("results day: delivery 20 KB")
    );
    println!(
        "  ingest {:.2} × its rate alone, delivery {:.2} × its rate alone; {both} packs in and out in {wall:.2} s = {:.0} packs/s; daemon CPU {:.0} µs a pack",
        ingest.rate() / alone.ingest,
        delivery.rate() / alone.delivery,
        both as f64 / wall,
        cpu / both.max(1) as f64 * 1e6
    );
    Ok(())
}
