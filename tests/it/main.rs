//! The integration tests, one binary: the real `batond` and `baton`, real
//! TLS, SQLite and PostgreSQL, and the reference `age` CLI. Each module is
//! one area (named `daemon_*`, `client_*`, `reliability_*`, sealing and
//! format tests); [`common`] holds the one set of helpers they share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

mod age_interop;
mod client_at_rest;
mod client_clocks;
mod client_ctf_csv;
mod client_docs;
mod client_escrow;
mod client_journey;
mod client_lifecycle;
mod client_pilot;
mod client_rerun;
mod client_ui;
mod client_words;
mod daemon_abuse;
mod daemon_audit;
mod daemon_auth;
mod daemon_backup;
mod daemon_bench;
mod daemon_calendar;
mod daemon_certs;
mod daemon_checkpoints;
mod daemon_dashboard;
mod daemon_download;
mod daemon_federation;
mod daemon_files;
mod daemon_keys;
mod daemon_metrics;
mod daemon_multinode;
mod daemon_operating;
mod daemon_packaging;
mod daemon_peers;
mod daemon_postgres;
mod daemon_receipts;
mod daemon_relay;
mod daemon_relay_escrow;
mod daemon_relay_hostile;
mod daemon_renumber;
mod daemon_retention;
mod daemon_start;
mod daemon_upload;
#[cfg(feature = "fuzz")]
mod fuzz_corpus;
mod hostile_directory;
mod reliability_api;
mod reliability_concurrency;
mod reliability_crash;
mod reliability_tamper;
mod seal_memory;
mod seal_open;
mod vectors;
