//! Ingest and delivery of 20 KB packs again with the daemon on one core and
//! the bench's clients on the others (`taskset`), as deployed: a school's
//! machine seals and opens its own packs, the server's cores only run the
//! daemon. In the shared run the receivers' own crypto (open, verify, sign
//! a receipt), which `ingest` does not have (its packs are sealed before
//! the clock), competes with the daemon for the same two cores.

use crate::*;

/// The daemon pinned to CPU 0 and this process to the rest, for as long
/// as it lives; both get every CPU back when it is dropped.
struct Pinned {
    pids: [u32; 2],
    all: String,
}

impl Pinned {
    /// `None` (saying why) on one core or without `taskset`.
    fn new(daemon: u32) -> Option<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 || !have("taskset") {
            println!("split cores: skipped (needs 2 cores and taskset)");
            return None;
        }
        let pinned = Self {
            pids: [daemon, std::process::id()],
            all: format!("0-{}", cores - 1),
        };
        let others = format!("1-{}", cores - 1);
        for (pid, cpus) in [(daemon, "0"), (std::process::id(), others.as_str())] {
            if !taskset(pid, cpus) {
                println!("split cores: skipped (taskset failed)");
                return None;
            }
        }
        Some(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in self.pids {
            taskset(pid, &self.all);
        }
    }
}

/// Every thread of `pid` (`-a`) onto `cpus`.
fn taskset(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Seals `packs` new 20 KB packs (before any clock), then uploads and
/// delivers them with the daemon on its own core; prints both rates, the
/// daemon's CPU a pack in each, and the delivery budget's ratio.
pub(crate) async fn split_cores(parties: &Parties<'_>, packs: usize, clients: usize) -> Res<()> {
    let daemon = parties.daemon;
    let jobs = parties.sealed(packs)?;
    let Some(pinned) = Pinned::new(daemon.pid()) else {
        return Ok(());
    };
    let cpu0 = cpu_seconds(daemon.pid());
    let ingest = upload_all(parties.channels, parties.tokens, jobs, clients).await?;
    let ingest_cpu = (cpu_seconds(daemon.pid()) - cpu0) / packs.max(1) as f64;
    let cpu0 = cpu_seconds(daemon.pid());
    let delivery = parties.deliver(clients).await?;
    let delivery_cpu = (cpu_seconds(daemon.pid()) - cpu0) / delivery.packs.max(1) as f64;
    drop(pinned);
    println!(
        "{} (daemon on CPU 0, clients on the others)",
        ingest.line("split cores: ingest 20 KB")
    );
    println!("  daemon CPU {:.0} µs a pack", ingest_cpu * 1e6);
    println!("{}", delivery.line("split cores: delivery 20 KB"));
    println!(
        "  daemon CPU {:.0} µs a pack ({:.2} × ingest's)",
        delivery_cpu * 1e6,
        delivery_cpu / ingest_cpu
    );
    let speed = delivery.rate() / ingest.rate();
    println!(
        "BUDGET delivery ≥ 0.8 × ingest (20 KB packs; daemon and clients on separate cores): {:.0} / {:.0} = {speed:.2}, {}",
        delivery.rate(),
        ingest.rate(),
        if speed >= 0.8 { "met" } else { "MISSED" }
    );
    Ok(())
}
