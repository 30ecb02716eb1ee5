//! `baton check`: validate CTF files, class spreadsheets and pack folders
//! without sending anything, and print every problem.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::output::json;
use crate::sources::{Gathered, Options};

/// Validate files without sending.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CTF files (.xml), class spreadsheets (.csv) or pack folders.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Attachments folder (DIR/<UPN>/) to check too.
    #[arg(long, value_name = "DIR")]
    attachments: Option<PathBuf>,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `baton check`.
pub fn run(args: Args) -> Result<()> {
    let opts = Options {
        to: None,
        attachments: args.attachments.as_deref(),
        school: None,
        today: time::OffsetDateTime::now_utc().date(),
    };
    let mut gathered = Gathered::default();
    for file in &args.files {
        let ext = file
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if file.is_dir() {
            gathered.pack_dirs(std::slice::from_ref(file), &opts);
        } else if ext == "xml" {
            gathered.ctf_files(std::slice::from_ref(file), &opts);
        } else if ext == "csv" {
            gathered.csv_file(file, &opts);
        } else if !file.exists() {
            gathered
                .problems
                .push(format!("{}: no such file or folder", file.display()));
        } else {
            gathered.problems.push(format!(
                "{}: not a CTF (.xml), a spreadsheet (.csv) or a pack folder",
                file.display()
            ));
        }
    }
    if args.json {
        json(&serde_json::json!({
            "pupils_ok": gathered.items.len(),
            "unaddressed": gathered.unaddressed,
            "warnings": gathered.warnings,
            "problems": gathered.problems,
        }));
    } else {
        for w in &gathered.warnings {
            println!("warning: {w}");
        }
        for u in &gathered.unaddressed {
            println!("{u}");
        }
        if !gathered.unaddressed.is_empty() {
            println!("{}", crate::sources::UNADDRESSED_HINT);
        }
        for p in &gathered.problems {
            println!("{p}");
        }
        println!(
            "{} pupil(s) ready, {} with no school destination, {} problem(s)",
            gathered.items.len(),
            gathered.unaddressed.len(),
            gathered.problems.len()
        );
    }
    if !gathered.problems.is_empty() || !gathered.unaddressed.is_empty() {
        bail!(
            "`baton send` would refuse these files ({} problem(s), {} pupil(s) with no school destination)",
            gathered.problems.len(),
            gathered.unaddressed.len()
        );
    }
    Ok(())
}
