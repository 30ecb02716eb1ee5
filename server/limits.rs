//! Per-school caps on concurrent long calls (uploads, downloads, `Watch`
//! streams), so one school's token, stolen or misused, cannot take the
//! memory and file descriptors every other school needs. A call takes a
//! [`Permit`] for its whole life; the permit gives its place back on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton::Laestab;
use tonic::Status;

/// A kind of long call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `Upload`.
    Upload,
    /// `Download`.
    Download,
    /// `Watch`.
    Watch,
}

/// Most concurrent calls of each kind one school may hold.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Concurrent uploads.
    pub uploads: usize,
    /// Concurrent downloads.
    pub downloads: usize,
    /// Concurrent `Watch` streams.
    pub watches: usize,
}

/// The calls each school holds now.
#[derive(Debug)]
pub struct StreamLimits {
    caps: Caps,
    held: Arc<Mutex<HashMap<(Laestab, Stream), usize>>>,
}

/// A place taken by one call; given back on drop.
#[derive(Debug)]
pub struct Permit {
    key: (Laestab, Stream),
    held: Arc<Mutex<HashMap<(Laestab, Stream), usize>>>,
}

impl StreamLimits {
    /// Limits with these caps.
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            held: Arc::default(),
        }
    }

    /// Takes a place for a `kind` call of `school`, or `ResourceExhausted`
    /// naming the cap when the school already holds that many.
    pub fn acquire(&self, school: Laestab, kind: Stream) -> Result<Permit, Status> {
        let cap = match kind {
            Stream::Upload => self.caps.uploads,
            Stream::Download => self.caps.downloads,
            Stream::Watch => self.caps.watches,
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry((school, kind)).or_default();
        if *n >= cap {
            let what = match kind {
                Stream::Upload => "uploads",
                Stream::Download => "downloads",
                Stream::Watch => "Watch streams",
            };
            return Err(Status::resource_exhausted(format!(
                "{school} already has {cap} {what} open, the most one school may: let some finish, then try again"
            )));
        }
        *n += 1;
        Ok(Permit {
            key: (school, kind),
            held: Arc::clone(&self.held),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_per_school_and_kind_and_places_come_back() {
        let limits = StreamLimits::new(Caps {
            uploads: 2,
            downloads: 1,
            watches: 1,
        });
        let a: Laestab = "8612001".parse().unwrap();
        let b: Laestab = "8614001".parse().unwrap();
        let one = limits.acquire(a, Stream::Upload).unwrap();
        let _two = limits.acquire(a, Stream::Upload).unwrap();
        let refused = limits.acquire(a, Stream::Upload).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("2 uploads"));
        // Another school, another kind: their own places.
        let _b = limits.acquire(b, Stream::Upload).unwrap();
        let _d = limits.acquire(a, Stream::Download).unwrap();
        drop(one);
        assert!(limits.acquire(a, Stream::Upload).is_ok());
    }
}
