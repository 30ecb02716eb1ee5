//! Shell completions and man pages for both binaries, made by clap's own
//! generators from the same definitions that parse the command line, so
//! they never drift from it (feature `runtime`).

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// Writes the completion script of `cmd` (installed as `bin`) for `shell`.
pub fn completions(cmd: &mut clap::Command, bin: &str, shell: Shell, out: &mut impl Write) {
    clap_complete::generate(shell, cmd, bin, out);
}

/// Writes one man page per command and subcommand of `cmd` into `dir`
/// (`baton.1`, `baton-send.1`, …), creating it; returns the pages in it.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut pages = pages_in(dir)?;
    pages.sort();
    Ok(pages)
}

fn pages_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "1") {
            out.push(path);
        }
    }
    Ok(out)
}
