//! `baton check`: validate CTF files, class spreadsheets and pack folders
//! without sending anything, and print every problem. In an enrolled home it
//! also checks what `send` would: that CTFs are this school's, that no pack
//! is addressed to this school itself, and, when the server answers, that
//! every destination is enrolled and no pack is over the server's size limit.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use baton::Laestab;
use baton::api::v1;

use crate::connect::{connect, explain};
use crate::home::Home;
use crate::limits::{OVERHEAD, server_limit};
use crate::output::json;
use crate::sources::{Gathered, Options};

/// Validate files without sending.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CTF files (.xml), class spreadsheets (.csv), pack folders, or folders
    /// of CTF files and spreadsheets.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Attachments folder (DIR/<UPN>/) to check too.
    #[arg(long, value_name = "DIR")]
    attachments: Option<PathBuf>,
    /// Do not ask the server (destinations enrolled, size limit).
    #[arg(long)]
    offline: bool,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `check` finds in `files`: every pupil read and every problem, and,
/// in an enrolled home asked online, whether destinations and sizes were
/// checked. The local page's check runs this too.
pub(crate) async fn gather(
    home: Option<&Home>,
    files: &[PathBuf],
    attachments: Option<&Path>,
    offline: bool,
) -> Result<(Gathered, Option<String>)> {
    let school = match home {
        Some(h) => Some(h.config()?.school),
        None => None,
    };
    let opts = Options {
        to: None,
        attachments,
        school,
        today: time::OffsetDateTime::now_utc().date(),
    };
    let mut gathered = Gathered::default();
    for file in files {
        read(&mut gathered, file, &opts, true);
    }
    gathered.check_duplicates(0);
    let mut online = None;
    if let Some(school) = school {
        gathered.check_addresses(school);
        if let (Some(home), false) = (home, offline) {
            online = Some(match check_online(home, &mut gathered).await {
                Ok(()) => "checked".to_string(),
                Err(e) => format!("not checked: {e:#}"),
            });
        }
    }
    if online.as_deref() != Some("checked") {
        gathered.escrow_unknown();
    }
    Ok((gathered, online))
}

/// Runs `baton check`; `home` is the enrolled home, if there is one.
pub async fn run(home: Option<&Home>, args: Args) -> Result<()> {
    let (gathered, online) =
        gather(home, &args.files, args.attachments.as_deref(), args.offline).await?;
    if args.json {
        json(&serde_json::json!({
            "pupils_ok": gathered.items.len(),
            "unaddressed": gathered.unaddressed,
            "warnings": gathered.warnings,
            "problems": gathered.problems,
            "destinations": online,
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
        if let Some(o) = online.as_ref().filter(|o| o.starts_with("not")) {
            println!("warning: destinations and sizes {o}");
        }
        println!(
            "{} pupil(s) ready, {} with no enrolled school destination, {} problem(s)",
            gathered.items.len(),
            gathered.unaddressed.len(),
            gathered.problems.len()
        );
    }
    if !gathered.problems.is_empty() || !gathered.unaddressed.is_empty() {
        bail!(
            "`baton send` would refuse these files ({} problem(s), {} pupil(s) with no enrolled school destination)",
            gathered.problems.len(),
            gathered.unaddressed.len()
        );
    }
    Ok(())
}

/// Reads one argument: a CTF, a spreadsheet, a pack folder, or (at the top
/// level) a folder of CTFs and spreadsheets.
fn read(gathered: &mut Gathered, file: &Path, opts: &Options<'_>, top: bool) {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if file.is_dir() {
        if top && !file.join("record.json").exists() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(file)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| {
                        x.eq_ignore_ascii_case("xml") || x.eq_ignore_ascii_case("csv")
                    })
                })
                .collect();
            inside.sort();
            if !inside.is_empty() {
                for f in inside {
                    read(gathered, &f, opts, false);
                }
                return;
            }
        }
        gathered.pack_dirs(std::slice::from_ref(&file.to_path_buf()), opts);
    } else if ext == "xml" {
        gathered.ctf_files(std::slice::from_ref(&file.to_path_buf()), opts);
    } else if ext == "csv" {
        gathered.csv_file(file, opts);
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

/// Asks the server whether each destination is enrolled and how large a
/// pack may be.
async fn check_online(home: &Home, gathered: &mut Gathered) -> Result<()> {
    let mut clients = connect(home).await?;
    if let Some(limit) = server_limit(&mut clients).await? {
        gathered.check_sizes(limit, OVERHEAD);
    }
    let mut destinations: Vec<Laestab> = gathered.items.iter().filter_map(|i| i.to).collect();
    destinations.sort();
    destinations.dedup();
    for to in destinations {
        match clients
            .directory
            .get_school(v1::GetSchoolRequest {
                laestab: to.to_string(),
                peer: String::new(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {
                gathered.not_enrolled(to, &crate::pins::NotEnrolled(to).to_string());
            }
            Err(s) => bail!("looking up {to}: {}", explain(&s)),
        }
    }
    Ok(())
}
