//! The class spreadsheet: a CSV a school fills in (or exports) when it has
//! no CTF, one pupil per row, read into [`TransitionRecord`]s.
//!
//! The columns are exactly [`COLUMNS`], in any order; [`REQUIRED`] ones must
//! be present, unknown ones are an error (a misspelt column would otherwise
//! lose data silently). Lines starting with `#` are comments, so the
//! commented [`template`] reads back. Every problem names the line where the
//! row starts (the first line of the file is line 1; a quoted note that runs
//! over several lines counts them all; LF and CRLF line ends alike) and the
//! column, never the value: it may be a child's name.
//!
//! Each row becomes a record in `row`, which checks it with
//! [`TransitionRecord::problems`], the one check shared with `record.json`
//! and the CTF reader.
//!
//! Conventions: booleans are yes/no, y/n, true/false or 1/0 (empty is no);
//! `sen_needs` are separated by `;`; an empty number is "not recorded"; codes
//! (UPNs, sex, ethnicity, language, SEN, writing TA) are upper-cased;
//! attendance is for the academic year that contains `today`; rows whose
//! cells are all empty are skipped.

use std::fmt;
use std::io::Read;

use crate::laestab::Destination;
use crate::record::TransitionRecord;

mod row;
#[cfg(test)]
mod tests;

/// Every column the spreadsheet may have, in template order.
pub const COLUMNS: [&str; 27] = [
    "upn",
    "former_upn",
    "surname",
    "forename",
    "middle_names",
    "preferred_forename",
    "dob",
    "sex",
    "ethnicity",
    "first_language",
    "fsm",
    "medical_flag",
    "sen_provision",
    "sen_needs",
    "attendance_possible",
    "attendance_attended",
    "attendance_authorised",
    "attendance_unauthorised",
    "ks2_reading",
    "ks2_maths",
    "ks2_gps",
    "ks2_writing_ta",
    "mtc",
    "safeguarding_file",
    "destination",
    "left",
    "notes",
];

/// The columns a spreadsheet must have.
pub const REQUIRED: [&str; 5] = ["upn", "surname", "forename", "dob", "sex"];

/// One pupil's row.
#[derive(Clone)]
pub struct CsvRow {
    /// The line on which the row starts (the header is line 1).
    pub line: usize,
    /// The pupil's record.
    pub record: TransitionRecord,
    /// The `destination` column: a school, `XXXXXXX` or `MMMMMMM`; `None`
    /// when empty or not valid (then there is a problem).
    pub destination: Option<Destination>,
    /// The `left` column: the day the pupil left; `None` when empty.
    pub left: Option<time::Date>,
    /// Everything wrong with the row; empty when it may be sent.
    pub problems: Vec<CsvProblem>,
}

/// Redacted: the record is about a child.
impl fmt::Debug for CsvRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvRow")
            .field("line", &self.line)
            .field("destination", &self.destination)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

/// One problem in one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    /// Line on which the row starts.
    pub line: usize,
    /// The column's name, e.g. `dob`.
    pub column: String,
    /// What is wrong, and what is expected.
    pub problem: String,
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.problem
        )
    }
}

/// Why a spreadsheet could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// No header line.
    #[error("the file is empty: the first line must name the columns")]
    Empty,
    /// Columns that Baton does not know.
    #[error("line {line}: unknown column(s) {}; the columns are those of the template", .columns.join(", "))]
    UnknownColumns {
        /// The header's line: 1, unless comment lines come before it.
        line: usize,
        /// The unknown names, lower-cased.
        columns: Vec<String>,
    },
    /// Required columns that are absent.
    #[error("line {line}: missing required column(s) {}", .columns.join(", "))]
    MissingColumns {
        /// The header's line.
        line: usize,
        /// The required columns not in the header.
        columns: Vec<String>,
    },
    /// A column named twice.
    #[error("line {line}: column {column} appears more than once")]
    DuplicateColumn {
        /// The header's line.
        line: usize,
        /// The column's name, lower-cased.
        column: String,
    },
    /// The file is not readable CSV (e.g. not UTF-8).
    #[error("line {line}: cannot read the spreadsheet: {message}")]
    Csv {
        /// Line on which the unreadable row starts.
        line: usize,
        /// What went wrong (never cell contents).
        message: String,
    },
    /// The input could not be read at all.
    #[error("cannot read the spreadsheet: {0}")]
    Io(String),
}

/// Reads a class spreadsheet. `today` bounds dates of birth and sets the
/// attendance year. Problems in rows are returned with the rows; only a bad
/// header or unreadable input is an error.
pub fn read(mut input: impl Read, today: time::Date) -> Result<Vec<CsvRow>, CsvError> {
    // A class spreadsheet is small; holding its bytes lets each row's line
    // be found from the csv crate's position (see `start_line`).
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| CsvError::Io(e.kind().to_string()))?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(bytes.as_slice());
    let mut records = reader.records();
    let line_of = |row: &::csv::StringRecord| row.position().map_or(0, |p| start_line(&bytes, p));
    let header = match records.next() {
        None => return Err(CsvError::Empty),
        Some(header) => header.map_err(|e| csv_error(&bytes, e))?,
    };
    let columns = columns(&header, line_of(&header))?;
    let year = academic_year(today);
    let mut rows = Vec::new();
    for row in records {
        let row = row.map_err(|e| csv_error(&bytes, e))?;
        if row.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        rows.push(row::read_row(&columns, &row, line_of(&row), year, today));
    }
    Ok(rows)
}

/// The line (1-based) on which the record the csv crate places at
/// `position` starts.
///
/// The crate's position is where it started reading the record, and its
/// line is right for that byte; but the record itself starts after the line
/// ends and `#` comment lines the crate skips first (the `\n` of the CRLF
/// that ended the row before, blank lines, comments). Only those skipped
/// bytes are looked at, so reading a file stays linear.
fn start_line(bytes: &[u8], position: &::csv::Position) -> usize {
    let at = usize::try_from(position.byte()).map_or(bytes.len(), |b| b.min(bytes.len()));
    let mut start = at;
    loop {
        match bytes.get(start) {
            Some(b'\r' | b'\n') => start += 1,
            // As in csv-core, a comment runs to the next `\n`.
            Some(b'#') => {
                start = bytes
                    .get(start..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                    .map_or(bytes.len(), |n| start + n + 1);
            }
            _ => break,
        }
    }
    let skipped = bytes
        .get(at..start)
        .map_or(0, |gap| gap.iter().filter(|&&b| b == b'\n').count());
    usize::try_from(position.line())
        .unwrap_or(usize::MAX)
        .saturating_add(skipped)
}

/// The header line, then `#` comment lines explaining each column and a
/// commented example row. [`read`] accepts it as it is (no pupils).
pub fn template() -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for (column, help) in COLUMNS.iter().zip(HELP) {
        out.push_str(&format!("# {column}: {help}\n"));
    }
    out.push_str("# Example row (remove the leading \"# \" and replace with real data):\n# ");
    out.push_str(EXAMPLE);
    out.push('\n');
    out
}

const HELP: [&str; 27] = [
    "Unique Pupil Number, 13 characters (required)",
    "previous UPN if records were merged, else empty",
    "legal surname (required)",
    "legal forename (required)",
    "middle names, separated by spaces",
    "preferred forename if different",
    "date of birth as YYYY-MM-DD (required)",
    "M, F or U (required)",
    "DfE ethnicity code, e.g. WBRI",
    "DfE first language code, e.g. ENG",
    "eligible for free school meals: yes or no",
    "the school holds medical information: yes or no",
    "N (none), K (SEN support) or E (EHC plan)",
    "SEN need codes, primary first, separated by ; e.g. SLCN;ASD",
    "sessions possible this academic year",
    "sessions attended",
    "sessions of authorised absence",
    "sessions of unauthorised absence",
    "KS2 reading scaled score, 80-120",
    "KS2 maths scaled score, 80-120",
    "KS2 grammar, punctuation and spelling scaled score, 80-120",
    "KS2 writing teacher assessment, e.g. WTS, EXS, GDS",
    "multiplication tables check score, 0-25",
    "a child-protection file will follow separately: yes or no",
    "receiving school's LAESTAB (7 digits), XXXXXXX if unknown, MMMMMMM if independent or abroad",
    "the day the pupil left (came off roll) as YYYY-MM-DD; empty: `baton send --left`, or today",
    "free-text notes; put text with commas or line breaks in double quotes",
];

const EXAMPLE: &str = "H801200001001,,Smith,Amy,Jane,Amy,2015-01-12,F,WBRI,ENG,no,no,K,SLCN,380,370,8,2,104,99,101,EXS,21,no,8614001,2026-07-22,\"Enjoys art, reads daily\"";

fn csv_error(bytes: &[u8], e: ::csv::Error) -> CsvError {
    let line = e.position().map_or(0, |p| start_line(bytes, p));
    let message = match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => "the file is not UTF-8 text (save it as CSV UTF-8)".into(),
        ::csv::ErrorKind::Io(io) => io.kind().to_string(),
        _ => "malformed CSV".into(),
    };
    CsvError::Csv { line, message }
}

/// Maps each position in the header, which starts on `line`, to a known
/// column.
fn columns(header: &::csv::StringRecord, line: usize) -> Result<Vec<&'static str>, CsvError> {
    let mut found: Vec<&'static str> = Vec::new();
    let mut unknown = Vec::new();
    for (i, name) in header.iter().enumerate() {
        // Excel writes a byte-order mark before the first column name.
        let name = if i == 0 {
            name.trim_start_matches('\u{feff}')
        } else {
            name
        };
        let name = name.trim().to_ascii_lowercase();
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) if found.contains(c) => {
                return Err(CsvError::DuplicateColumn { line, column: name });
            }
            Some(c) => found.push(c),
            None => unknown.push(if name.is_empty() {
                format!("(empty name, position {})", i + 1)
            } else {
                name
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(CsvError::UnknownColumns {
            line,
            columns: unknown,
        });
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|c| !found.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CsvError::MissingColumns {
            line,
            columns: missing,
        });
    }
    Ok(found)
}

/// The academic year (by its starting calendar year) that contains `today`.
fn academic_year(today: time::Date) -> u32 {
    let year = if u8::from(today.month()) >= 9 {
        today.year()
    } else {
        today.year() - 1
    };
    u32::try_from(year).unwrap_or(0)
}
