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
//! Neither side ever holds a whole pack in memory.

mod identity;
mod open;
mod seal;

pub use identity::{Identity, IdentityError};
pub use open::{MemorySink, OpenError, Sink, open};
pub use seal::{Draft, SealError, seal};

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Counts and hashes the bytes written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The wrapped writer, the byte count and the SHA-256 of what was written.
    pub fn finish(self) -> (W, u64, [u8; 32]) {
        (self.inner, self.len, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes the bytes read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The byte count and SHA-256 of what was read.
    pub fn finish(self) -> (u64, [u8; 32]) {
        (self.len, self.hasher.finalize().into())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
