//! SHA-256 of long streams on a thread of its own.
//!
//! Sealing a pack hashes every byte twice (the attachment, checked against
//! its manifest entry, and the ciphertext, for the signed header), and so
//! does opening one. Hashing on the same thread as the encryption would
//! make the hashes most of the work; [`Sha256Stream`] hashes inline while
//! the stream is short, and hands the state to a thread of its own once it
//! passes [`OFFLOAD_AFTER`] bytes, so long packs use a second core.

use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes hashed inline before the hashing moves to its own thread (a
/// thread costs tens of microseconds: not worth it for a small pack).
pub const OFFLOAD_AFTER: u64 = 1024 * 1024;

/// Buffers in flight to the hashing thread at most (each one write's bytes).
const IN_FLIGHT: usize = 8;

enum State {
    Inline(Sha256),
    Thread {
        work: mpsc::SyncSender<Vec<u8>>,
        spare: mpsc::Receiver<Vec<u8>>,
        worker: JoinHandle<Sha256>,
    },
}

/// A running SHA-256 that may hash on another thread.
pub struct Sha256Stream {
    state: Option<State>,
    len: u64,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    /// An empty hash.
    pub fn new() -> Self {
        Self {
            state: Some(State::Inline(Sha256::new())),
            len: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        match self.state.take() {
            Some(State::Inline(mut hasher)) => {
                hasher.update(data);
                self.state = Some(if self.len > OFFLOAD_AFTER {
                    offload(hasher)
                } else {
                    State::Inline(hasher)
                });
            }
            Some(State::Thread {
                work,
                spare,
                worker,
            }) => {
                let mut buf = spare.try_recv().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                match work.send(buf) {
                    Ok(()) => {
                        self.state = Some(State::Thread {
                            work,
                            spare,
                            worker,
                        });
                    }
                    // The worker is gone (it cannot be, short of a panic in
                    // the hash): finish inline from what it had, or fail at
                    // `finalize`.
                    Err(mpsc::SendError(buf)) => {
                        drop(work);
                        self.state = worker.join().ok().map(|mut hasher| {
                            hasher.update(&buf);
                            State::Inline(hasher)
                        });
                    }
                }
            }
            None => {}
        }
    }

    /// The digest, or `None` if the hashing thread failed.
    pub fn finalize(mut self) -> Option<[u8; 32]> {
        let hasher = match self.state.take()? {
            State::Inline(hasher) => hasher,
            State::Thread { work, worker, .. } => {
                drop(work);
                worker.join().ok()?
            }
        };
        Some(hasher.finalize().into())
    }
}

/// Moves `hasher` to a thread of its own; stays inline if none can be had.
fn offload(hasher: Sha256) -> State {
    let (work, jobs) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (done, spare) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
    let mut moved = Some(hasher.clone());
    let spawned = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || {
            let mut hasher = moved.take().unwrap_or_default();
            for buf in jobs {
                hasher.update(&buf);
                // Hand the buffer back for reuse; dropped if none is wanted.
                let _ = done.try_send(buf);
            }
            hasher
        });
    match spawned {
        Ok(worker) => State::Thread {
            work,
            spare,
            worker,
        },
        Err(_) => State::Inline(hasher),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn equals_sha256_below_at_and_above_the_offload_point() {
        let data: Vec<u8> = (0..3 * OFFLOAD_AFTER as usize + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            OFFLOAD_AFTER as usize,
            OFFLOAD_AFTER as usize + 1,
            data.len(),
        ] {
            for piece in [1usize, 1000, 65_536, 1 << 20] {
                if len / piece > 100_000 {
                    continue;
                }
                let mut stream = Sha256Stream::new();
                for part in data[..len].chunks(piece.min(len.max(1))) {
                    stream.update(part);
                }
                assert_eq!(stream.len(), len as u64);
                let expected: [u8; 32] = Sha256::digest(&data[..len]).into();
                assert_eq!(
                    stream.finalize().unwrap(),
                    expected,
                    "len {len}, piece {piece}"
                );
            }
        }
    }
}
