//! Keys held by a school, and sealing and opening packs (feature `client`).
//!
//! - [`Identity`]: one key holder's secrets. On disk it is a standard age
//!   identity file (`AGE-SECRET-KEY-1…`), optionally passphrase-protected;
//!   the Ed25519 signing key is derived from it, so one file is the whole key.
//! - [`seal()`]: frames a [`Manifest`](crate::pack::Manifest) and its
//!   attachments, encrypts them as one standard binary age file to every
//!   recipient, streaming into the caller's writer, and signs the header.
//! - [`open()`]: checks the header's signature against the sender's pinned
//!   keys, decrypts and streams the attachments into a [`Sink`], checking every
//!   size and hash and the ciphertext's own length and hash.
//!
//! - [`forward`]: the trust's escrow re-wraps a held pack's file key for the
//!   school the pupil joined, leaving the payload as its sender sealed it.
//!
//! Neither side ever holds a whole pack in memory.

pub mod forward;
mod identity;
mod open;
mod seal;
mod x25519;

pub use identity::{Identity, IdentityError};
pub use open::{MemorySink, OpenError, Sink, open};
pub use seal::{Draft, SealError, seal};

use std::io::{self, Read, Write};

use crate::digest::Sha256Stream;

/// Counts and hashes the bytes written through it (on a thread of its own
/// once the stream is long: see [`crate::digest`]).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Stream,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256Stream::new(),
        }
    }

    /// The wrapped writer, the byte count and the SHA-256 of what was written.
    pub fn finish(self) -> io::Result<(W, u64, [u8; 32])> {
        let len = self.hasher.len();
        let sha = self.hasher.finalize().ok_or_else(hash_failed)?;
        Ok((self.inner, len, sha))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes the bytes read through it (on a thread of its own once
/// the stream is long).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Stream,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Stream::new(),
        }
    }

    /// The byte count and SHA-256 of what was read.
    pub fn finish(self) -> io::Result<(u64, [u8; 32])> {
        let len = self.hasher.len();
        let sha = self.hasher.finalize().ok_or_else(hash_failed)?;
        Ok((len, sha))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn hash_failed() -> io::Error {
    io::Error::other("the hashing thread failed")
}
