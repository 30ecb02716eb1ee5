//! Baton passes pupil transition records between schools, end to end
//! encrypted, signed, and acknowledged with signed receipts.
//!
//! This library is what the daemon (`batond`) and the CLI (`baton`) share:
//!
//! - [`api`]: the gRPC wire contract (each domain type converts itself);
//! - [`upn`] and [`laestab`]: pupil and school identifiers;
//! - [`record`]: a pupil's transition record and its `record.json` form;
//! - [`ctf`]: reading and writing Common Transfer Files, pupil by pupil;
//! - [`csv`]: the class spreadsheet a school fills in instead of a CTF;
//! - [`pack`]: the pack format (signed header, receipt, framed contents);
//! - [`keys`]: key ids, roles and signature checks (public keys only);
//! - [`digest`]: SHA-256 of long streams on a second core;
//! - `crypto` (feature `client`): key generation, sealing and opening packs
//!   with age, so a daemon built without it cannot open a pack at all.
//!
//! [`record`], [`ctf`], [`csv`] and the pack's contents (its manifest and
//! framing) are behind feature `records` (part of `client`): the daemon
//! never sees a record, and a daemon-only build does not compile them. The
//! fuzz entry points are behind feature `fuzz`.
//!
//! ```
//! use baton::{Laestab, Upn};
//!
//! let upn = Upn::parse("h801200001001").unwrap();
//! assert_eq!(upn.as_str(), "H801200001001");
//! let err = Upn::parse("Z801200001001").unwrap_err();
//! assert_eq!(err.to_string(), "check letter should be H, found Z");
//! assert!(Laestab::parse("XXXXXXX").is_err());
//! ```

pub mod api;
pub mod bech32;
pub mod checkpoint;
#[cfg(feature = "runtime")]
pub mod cli_docs;
#[cfg(feature = "client")]
pub mod crypto;
#[cfg(feature = "records")]
pub mod csv;
#[cfg(feature = "records")]
pub mod ctf;
pub mod dates;
pub mod digest;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
pub mod keys;
pub mod laestab;
pub mod pack;
#[cfg(feature = "records")]
pub mod record;
pub mod trust;
pub mod upn;
pub mod web;

pub use laestab::{Destination, Laestab};
pub use upn::Upn;
