//! Where packs come from: pack folders, CTF files from an MIS export, or a
//! class spreadsheet. Each source is read and checked whole before anything
//! is sent, and every problem names its file and the line, pupil, column or
//! field at fault. The result is a list of [`Item`]s, one per pupil.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use baton::ctf::{CtfError, CtfReader};
use baton::pack::AttachmentMeta;
use baton::record::TransitionRecord;
use baton::{Destination, Laestab};

use crate::packdir::{PackDir, read_attachments};

/// One pupil's pack, ready to seal.
pub struct Item {
    /// Where it came from, for messages and the journal: "FILE line 4".
    pub source: String,
    /// The destination; `None` for a pack folder sent without `--to`.
    pub to: Option<Laestab>,
    /// The record.
    pub record: TransitionRecord,
    /// The `<Pupil>` element exactly as the MIS wrote it, for CTF sources.
    pub ctf_pupil_xml: Option<String>,
    /// Attachments: where each is, and what it is.
    pub attachments: Vec<(PathBuf, AttachmentMeta)>,
    /// The day the pupil left, when the source says (a CSV `left` cell).
    pub left: Option<time::Date>,
}

/// What reading the sources found.
#[derive(Default)]
pub struct Gathered {
    /// Pupils that may be sent.
    pub items: Vec<Item>,
    /// Problems: each a whole message naming file and place.
    pub problems: Vec<String>,
    /// Pupils whose destination is not a school (XXXXXXX or MMMMMMM).
    pub unaddressed: Vec<String>,
    /// Warnings that do not stop a send.
    pub warnings: Vec<String>,
}

/// Options shared by every kind of source.
pub struct Options<'a> {
    /// `--to`: the destination for pack folders, an override for CTF and CSV.
    pub to: Option<Laestab>,
    /// `--attachments DIR`: attachments in `DIR/<UPN>/`.
    pub attachments: Option<&'a Path>,
    /// Our own school, which a CTF's source school must match.
    pub school: Option<Laestab>,
    /// Today, for date checks.
    pub today: time::Date,
}

impl Gathered {
    /// Reads pack folders (each needs `--to`).
    pub fn pack_dirs(&mut self, dirs: &[PathBuf], opts: &Options<'_>) {
        let start = self.items.len();
        for dir in dirs {
            match PackDir::read(dir, opts.today) {
                Ok(pack) => self.items.push(Item {
                    source: dir.display().to_string(),
                    to: opts.to,
                    record: pack.record,
                    ctf_pupil_xml: None,
                    attachments: pack.attachments,
                    left: None,
                }),
                Err(mut problems) => self.problems.append(&mut problems),
            }
        }
        self.check_duplicates(start);
    }

    /// Reads CTF files, one pack per pupil.
    pub fn ctf_files(&mut self, files: &[PathBuf], opts: &Options<'_>) {
        for file in files {
            let start = self.items.len();
            if let Err(e) = self.ctf_file(file, opts) {
                self.problems.push(format!("{}: {e}", file.display()));
            }
            self.check_duplicates(start);
        }
    }

    fn ctf_file(&mut self, file: &Path, opts: &Options<'_>) -> Result<(), CtfError> {
        let shown = file.display();
        let input = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) => {
                self.problems.push(format!("{shown}: cannot be read ({e})"));
                return Ok(());
            }
        };
        let mut reader = CtfReader::new(std::io::BufReader::new(input))?;
        let header = reader.header().clone();
        if let Some(school) = opts.school
            && header.source.laestab != school
        {
            self.problems.push(format!(
                "{shown}: the CTF's source school is {}, but this home sends as {school}",
                header.source.laestab
            ));
            return Ok(());
        }
        let to = match (opts.to, header.dest.destination) {
            (Some(to), Destination::School(dest)) if to != dest => {
                self.warnings.push(format!(
                    "{shown}: DestSchool is {dest}; sending to {to} as --to says"
                ));
                to
            }
            (Some(to), _) => to,
            (None, Destination::School(dest)) => dest,
            // Held by the trust's escrow, if it has one (checked online).
            (None, special) => Laestab::from_destination(special),
        };
        let mut count = 0;
        while let Some(pupil) = reader.next_pupil() {
            let mut pupil = pupil?;
            pupil.check(opts.today);
            count += 1;
            let place = format!("{shown}: pupil {} (line {})", pupil.position, pupil.line);
            if !pupil.problems.is_empty() {
                self.problems
                    .extend(pupil.problems.iter().map(|p| format!("{shown}: {p}")));
                continue;
            }
            self.push(
                place,
                Some(to),
                pupil.record,
                Some(pupil.raw_xml),
                None,
                opts,
            );
        }
        if count == 0 {
            self.problems
                .push(format!("{shown}: the CTF holds no pupils"));
        }
        Ok(())
    }

    /// Reads a class spreadsheet, one pack per row.
    pub fn csv_file(&mut self, file: &Path, opts: &Options<'_>) {
        let start = self.items.len();
        let shown = file.display();
        let rows = match std::fs::File::open(file)
            .map_err(|e| format!("cannot be read ({e})"))
            .and_then(|f| baton::csv::read(f, opts.today).map_err(|e| e.to_string()))
        {
            Ok(rows) => rows,
            Err(e) => {
                self.problems.push(format!("{shown}: {e}"));
                return;
            }
        };
        if rows.is_empty() {
            self.problems
                .push(format!("{shown}: the spreadsheet holds no pupils"));
        }
        for row in rows {
            let place = format!("{shown}: line {}", row.line);
            if !row.problems.is_empty() {
                self.problems
                    .extend(row.problems.iter().map(|p| format!("{shown}: {p}")));
                continue;
            }
            let to = match (opts.to, row.destination) {
                (Some(to), _) => to,
                (None, Some(Destination::School(dest))) => dest,
                (None, Some(special)) => Laestab::from_destination(special),
                (None, None) => {
                    self.problems.push(format!(
                        "{place}, column destination: empty; fill it in or pass --to LAESTAB"
                    ));
                    continue;
                }
            };
            self.push(place, Some(to), row.record, None, row.left, opts);
        }
        self.check_duplicates(start);
    }

    fn push(
        &mut self,
        source: String,
        to: Option<Laestab>,
        record: TransitionRecord,
        xml: Option<String>,
        left: Option<time::Date>,
        opts: &Options<'_>,
    ) {
        let mut attachments = Vec::new();
        if let (Some(dir), Some(upn)) = (opts.attachments, record.upn()) {
            let folder = dir.join(upn.as_str());
            if folder.is_dir() {
                match read_attachments(&folder) {
                    Ok(found) => attachments = found,
                    Err(mut problems) => {
                        self.problems.append(&mut problems);
                        return;
                    }
                }
            }
        }
        self.items.push(Item {
            source,
            to,
            record,
            ctf_pupil_xml: xml,
            attachments,
            left,
        });
    }

    /// The same pupil twice for the same destination, among the items from
    /// `start` on, is a problem (`start` 0 checks across every source).
    pub fn check_duplicates(&mut self, start: usize) {
        let mut seen: HashMap<(String, Option<Laestab>), String> = HashMap::new();
        let mut index = start;
        while index < self.items.len() {
            let item = &self.items[index];
            let key = item.record.upn().map(|u| (u.to_string(), item.to));
            match key.and_then(|k| {
                seen.get(&k).cloned().or_else(|| {
                    seen.insert(k, item.source.clone());
                    None
                })
            }) {
                Some(first) => {
                    // The later copy is dropped: with --skip-invalid the first is still sent.
                    let item = self.items.remove(index);
                    self.problems
                        .push(format!("{}: the same UPN as {first}", item.source));
                }
                None => index += 1,
            }
        }
    }
}

impl Gathered {
    /// A pack to our own school is a mistake (a CTF exported the wrong way
    /// round, or `--to` our own LAESTAB).
    pub fn check_addresses(&mut self, school: Laestab) {
        let (own, rest): (Vec<Item>, Vec<Item>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|i| i.to == Some(school));
        self.items = rest;
        for item in own {
            self.problems.push(format!(
                "{}: the destination is this school ({school}) itself; a pack goes to the school the pupil joins",
                item.source
            ));
        }
    }

    /// Packs the server would refuse as too large, caught before sealing:
    /// their attachments plus `overhead` exceed `limit` bytes.
    pub fn check_sizes(&mut self, limit: u64, overhead: u64) {
        let (big, rest): (Vec<Item>, Vec<Item>) =
            std::mem::take(&mut self.items).into_iter().partition(|i| {
                i.attachments.iter().map(|(_, m)| m.size).sum::<u64>() + overhead > limit
            });
        self.items = rest;
        for item in big {
            let total: u64 = item.attachments.iter().map(|(_, m)| m.size).sum();
            self.problems.push(format!(
                "{}: the attachments come to {} bytes, more than this server accepts in one pack ({limit} bytes): leave out or shrink the largest files, or ask the trust's operator to raise max_pack_bytes",
                item.source, total
            ));
        }
    }

    /// The pupils for `to`, a school the directory does not know (or an
    /// escrow code where the trust has no escrow), become unaddressed:
    /// `--skip-unaddressed` sends the others.
    pub fn not_enrolled(&mut self, to: Laestab, why: &str) {
        let (gone, rest): (Vec<Item>, Vec<Item>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|i| i.to == Some(to));
        self.items = rest;
        for item in gone {
            if to.is_escrow() {
                self.unaddressed.push(format!(
                    "{}: destination {to} is not a school, and this trust has no escrow holder to keep the pack until the pupil's new school is known",
                    item.source
                ));
            } else {
                self.unaddressed.push(format!("{}: {why}", item.source));
            }
        }
    }

    /// Offline, whether the trust holds an escrow is unknown: pupils for
    /// `XXXXXXX` or `MMMMMMM` are listed as unaddressed.
    pub fn escrow_unknown(&mut self) {
        for code in [Laestab::ESCROW, Laestab::ESCROW_ABROAD] {
            let (gone, rest): (Vec<Item>, Vec<Item>) = std::mem::take(&mut self.items)
                .into_iter()
                .partition(|i| i.to == Some(code));
            self.items = rest;
            for item in gone {
                self.unaddressed.push(format!(
                    "{}: destination {code} is not a school (sent to the trust's escrow, where it has one: check online to know)",
                    item.source
                ));
            }
        }
    }
}

/// Hint printed once when some pupils have no school destination.
pub const UNADDRESSED_HINT: &str = "XXXXXXX (destination unknown) and MMMMMMM (independent school or abroad) \
are not schools, nor is a school not enrolled on this server: file those pupils through the DfE's \
school-to-school service as today, or ask the trust's operator to enrol an escrow holder (`batond admin \
escrow add`), who keeps such packs, readable by nobody else, until the pupil's new school is known";
