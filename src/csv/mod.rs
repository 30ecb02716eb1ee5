//! The class spreadsheet: a CSV a school fills in (or exports) when it has
//! no CTF, one pupil per row, read into [`TransitionRecord`]s.
//!
//! The columns are exactly [`COLUMNS`], in any order; [`REQUIRED`] ones must
//! be present, unknown ones are an error (a misspelt column would otherwise
//! lose data silently). Lines starting with `#` are comments, so the
//! commented [`template`] reads back. Every problem names the line where the
//! row starts and the column, never the value: it may be a child's name.
//!
//! Conventions: booleans are yes/no, y/n, true/false or 1/0 (empty is no);
//! `sen_needs` are separated by `;`; an empty number is "not recorded"; codes
//! (UPNs, sex, ethnicity, language, SEN, writing TA) are upper-cased;
//! attendance is for the academic year that contains `today`; rows whose
//! cells are all empty are skipped.

use std::fmt;
use std::io::Read;

use crate::laestab::Destination;
use crate::record::{Attendance, FieldProblem, Ks2Results, TransitionRecord};

/// Every column the spreadsheet may have, in template order.
pub const COLUMNS: [&str; 26] = [
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
    #[error("line 1: unknown column(s) {}; the columns are those of the template", .0.join(", "))]
    UnknownColumns(Vec<String>),
    /// Required columns that are absent.
    #[error("line 1: missing required column(s) {}", .0.join(", "))]
    MissingColumns(Vec<String>),
    /// A column named twice.
    #[error("line 1: column {0} appears more than once")]
    DuplicateColumn(String),
    /// The file is not readable CSV (e.g. not UTF-8, or an I/O error).
    #[error("line {line}: cannot read the spreadsheet: {message}")]
    Csv {
        /// Line where reading stopped.
        line: usize,
        /// What went wrong (never cell contents).
        message: String,
    },
}

/// Reads a class spreadsheet. `today` bounds dates of birth and sets the
/// attendance year. Problems in rows are returned with the rows; only a bad
/// header or unreadable input is an error.
pub fn read(mut input: impl Read, today: time::Date) -> Result<Vec<CsvRow>, CsvError> {
    // A class spreadsheet is small; holding it lets each row's line be
    // counted from its bytes (the csv crate's own line count is one short
    // after a CRLF line end).
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| CsvError::Csv {
        line: 0,
        message: e.to_string(),
    })?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(bytes.as_slice());
    let mut records = reader.records();
    let header = match records.next() {
        None => return Err(CsvError::Empty),
        Some(header) => header.map_err(csv_error)?,
    };
    let columns = columns(&header)?;
    let year = academic_year(today);
    let mut rows = Vec::new();
    for row in records {
        let row = row.map_err(csv_error)?;
        if row.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        let line = row
            .position()
            .map_or(0, |p| line_at(&bytes, p.byte() as usize));
        rows.push(read_row(&columns, &row, line, year, today));
    }
    Ok(rows)
}

/// The line (1-based) where a record the csv crate places at byte `at`
/// really begins: after any line ends and `#` comment lines it skipped.
fn line_at(bytes: &[u8], at: usize) -> usize {
    let mut start = at.min(bytes.len());
    loop {
        match bytes.get(start) {
            Some(b'\r' | b'\n') => start += 1,
            Some(b'#') if start == 0 || bytes[start - 1] == b'\n' => {
                start = bytes[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| start + n + 1);
            }
            _ => break,
        }
    }
    1 + bytes[..start].iter().filter(|&&b| b == b'\n').count()
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

const HELP: [&str; 26] = [
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
    "free-text notes; put text with commas or line breaks in double quotes",
];

const EXAMPLE: &str = "H801200001001,,Smith,Amy,Jane,Amy,2015-01-12,F,WBRI,ENG,no,no,K,SLCN,380,370,8,2,104,99,101,EXS,21,no,8614001,\"Enjoys art, reads daily\"";

fn csv_error(e: ::csv::Error) -> CsvError {
    let line = e.position().map_or(0, |p| p.line() as usize);
    let message = match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => "the file is not UTF-8 text (save it as CSV UTF-8)".into(),
        ::csv::ErrorKind::Io(io) => io.kind().to_string(),
        _ => "malformed CSV".into(),
    };
    CsvError::Csv { line, message }
}

/// Maps each position in the header to a known column.
fn columns(header: &::csv::StringRecord) -> Result<Vec<&'static str>, CsvError> {
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
            Some(c) if found.contains(c) => return Err(CsvError::DuplicateColumn(name)),
            Some(c) => found.push(c),
            None => unknown.push(if name.is_empty() {
                format!("(empty name, position {})", i + 1)
            } else {
                name
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(CsvError::UnknownColumns(unknown));
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|c| !found.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CsvError::MissingColumns(missing));
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

fn read_row(
    columns: &[&'static str],
    row: &::csv::StringRecord,
    line: usize,
    year: u32,
    today: time::Date,
) -> CsvRow {
    let mut problems = Vec::new();
    let mut bad = |column: &str, problem: String| {
        problems.push(CsvProblem {
            line,
            column: column.into(),
            problem,
        })
    };
    if row.len() > columns.len() {
        bad(
            "(row)",
            format!(
                "has {} cells but the header names {} columns",
                row.len(),
                columns.len()
            ),
        );
    }
    let cell = |name: &str| -> &str {
        columns
            .iter()
            .position(|c| *c == name)
            .and_then(|i| row.get(i))
            .map_or("", str::trim)
    };
    let text = |name: &str| cell(name).to_string();
    let code = |name: &str| cell(name).to_ascii_uppercase();
    let mut flag = |name: &str| match cell(name).to_ascii_lowercase().as_str() {
        "" | "no" | "n" | "false" | "0" => false,
        "yes" | "y" | "true" | "1" => true,
        _ => {
            bad(name, "must be yes or no".into());
            false
        }
    };
    let fsm = flag("fsm");
    let medical_flag = flag("medical_flag");
    let safeguarding_file = flag("safeguarding_file");
    let mut number = |name: &str| -> Option<u32> {
        match cell(name) {
            "" => None,
            value => value.parse().ok().or_else(|| {
                bad(name, "must be a whole number".into());
                None
            }),
        }
    };
    let possible = number("attendance_possible");
    let attended = number("attendance_attended");
    let authorised = number("attendance_authorised");
    let unauthorised = number("attendance_unauthorised");
    let reading = number("ks2_reading");
    let maths = number("ks2_maths");
    let gps = number("ks2_gps");
    let mtc = number("mtc");

    let attendance_given = [
        "attendance_possible",
        "attendance_attended",
        "attendance_authorised",
        "attendance_unauthorised",
    ]
    .iter()
    .any(|c| !cell(c).is_empty());
    let attendance = if attendance_given {
        for (column, value) in [
            ("attendance_possible", possible),
            ("attendance_attended", attended),
        ] {
            if value.is_none() && cell(column).is_empty() {
                bad(
                    column,
                    "required when other attendance columns are filled in".into(),
                );
            }
        }
        Some(Attendance {
            year,
            possible: possible.unwrap_or(0),
            attended: attended.unwrap_or(0),
            authorised: authorised.unwrap_or(0),
            unauthorised: unauthorised.unwrap_or(0),
        })
    } else {
        None
    };
    let writing_ta = code("ks2_writing_ta");
    let ks2_given = [
        "ks2_reading",
        "ks2_maths",
        "ks2_gps",
        "ks2_writing_ta",
        "mtc",
    ]
    .iter()
    .any(|c| !cell(c).is_empty());
    let ks2 = ks2_given.then_some(Ks2Results {
        reading,
        maths,
        gps,
        writing_ta,
        mtc,
    });

    let destination = match cell("destination") {
        "" => None,
        value => match Destination::parse(value) {
            Ok(d) => Some(d),
            Err(e) => {
                bad("destination", e.to_string());
                None
            }
        },
    };

    let record = TransitionRecord {
        upn: code("upn"),
        former_upn: code("former_upn"),
        surname: text("surname"),
        forename: text("forename"),
        middle_names: text("middle_names"),
        preferred_forename: text("preferred_forename"),
        dob: text("dob"),
        sex: code("sex"),
        ethnicity: code("ethnicity"),
        first_language: code("first_language"),
        fsm,
        medical_flag,
        sen_provision: code("sen_provision"),
        sen_needs: cell("sen_needs")
            .split(';')
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect(),
        attendance,
        ks2,
        safeguarding_file,
        notes: text("notes"),
    };
    for FieldProblem { field, problem } in record.problems(today) {
        let column = column_of(&field);
        // A cell that was not a number is already reported.
        if !problems.iter().any(|p| p.column == column) {
            problems.push(CsvProblem {
                line,
                column: column.into(),
                problem,
            });
        }
    }
    CsvRow {
        line,
        record,
        destination,
        problems,
    }
}

/// The spreadsheet column for a record field named by [`FieldProblem`].
fn column_of(field: &str) -> &str {
    match field {
        "attendance" | "attendance.year" => "attendance_possible",
        "ks2.reading" => "ks2_reading",
        "ks2.maths" => "ks2_maths",
        "ks2.gps" => "ks2_gps",
        "ks2.writing_ta" => "ks2_writing_ta",
        "ks2.mtc" => "mtc",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> time::Date {
        time::macros::date!(2026 - 07 - 20)
    }

    const HEADER: &str = "upn,former_upn,surname,forename,middle_names,preferred_forename,dob,sex,ethnicity,first_language,fsm,medical_flag,sen_provision,sen_needs,attendance_possible,attendance_attended,attendance_authorised,attendance_unauthorised,ks2_reading,ks2_maths,ks2_gps,ks2_writing_ta,mtc,safeguarding_file,destination,notes";

    fn sample() -> String {
        format!(
            "{HEADER}
W86120011901B,,Begum,Zoë,James,Zoë,2015-01-12,M,BAFR,ENG,no,no,K,HI;MLD,380,367,4,9,114,86,92,GDS,17,no,8604003,Young carer for a younger sibling; attendance support in place.
X861200119002,G861999919002,Jones,Grace,James,,2015-04-06,M,WIRI,POL,no,no,N,,380,373,2,5,86,82,117,WTS,20,no,8604003,\"Line one of a note
line two, with a comma, and \"\"quotes\"\"\"
L861200119003,,Mac Giolla Phádraig,Freya,Rose,,2015-07-28,M,AIND,PAN,no,yes,E,ASD;SLCN,380,364,16,0,118,97,99,GDS,6,no,8614001,Strong reader; enjoys science club. Needs movement breaks.
P861200119005,,\"O'Brien, Jr\",Aoife,,,2015-07-02,f,refu,vie,Y,1,,,,,,,,,,,,TRUE,XXXXXXX,
"
        )
    }

    #[test]
    fn reads_sample_rows() {
        let rows = read(sample().as_bytes(), today()).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 3, 5, 6]
        );
        for row in &rows {
            assert!(row.problems.is_empty(), "{:?}", row.problems);
        }
        let r = &rows[0].record;
        assert_eq!(
            (r.forename.as_str(), r.preferred_forename.as_str()),
            ("Zoë", "Zoë")
        );
        assert_eq!(r.sen_needs, ["HI", "MLD"]);
        assert_eq!(
            r.attendance,
            Some(Attendance {
                year: 2025,
                possible: 380,
                attended: 367,
                authorised: 4,
                unauthorised: 9
            })
        );
        assert_eq!(
            r.ks2,
            Some(Ks2Results {
                reading: Some(114),
                maths: Some(86),
                gps: Some(92),
                writing_ta: "GDS".into(),
                mtc: Some(17)
            })
        );
        assert_eq!(
            rows[0].destination,
            Some(Destination::parse("8604003").unwrap())
        );
        let r = &rows[1].record;
        assert_eq!(r.former_upn, "G861999919002");
        assert_eq!(
            r.notes,
            "Line one of a note\nline two, with a comma, and \"quotes\""
        );
        assert!(r.sen_needs.is_empty());
        assert!(rows[2].record.medical_flag);
        let r = &rows[3].record;
        assert_eq!(r.surname, "O'Brien, Jr");
        assert_eq!((r.sex.as_str(), r.ethnicity.as_str()), ("F", "REFU"));
        assert!(r.fsm && r.medical_flag && r.safeguarding_file);
        assert_eq!((r.attendance, r.ks2.clone()), (None, None));
        assert_eq!(rows[3].destination, Some(Destination::Unknown));
    }

    #[test]
    fn problems_name_line_and_column_only() {
        let csv = "# a comment line\nupn,surname,forename,dob,sex,attendance_possible,attendance_attended,fsm,ks2_reading,destination,notes
H801200001001,Smith,Amy,2015-01-12,F,380,370,no,104,8614001,\"multi
line\"
Z801200001001,Secretname,,12/01/2015,boy,lots,370,perhaps,150,86140,
# skipped
,,,,,,,,,,
H801200001001,Smith,Amy,2015-01-12,F,,370,no,,,
";
        let rows = read(csv.as_bytes(), today()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 3);
        assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
        let shown: Vec<String> = rows[1].problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 5, column fsm: must be yes or no",
                "line 5, column attendance_possible: must be a whole number",
                "line 5, column destination: a LAESTAB has 7 digits (LA code + establishment number), found 5 characters",
                "line 5, column upn: check letter should be H, found Z",
                "line 5, column forename: required",
                "line 5, column dob: looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)",
                "line 5, column sex: must be M, F or U",
                "line 5, column ks2_reading: a scaled score is between 80 and 120",
            ]
        );
        for p in &shown {
            assert!(
                !p.contains("Secretname") && !p.contains("801200001001"),
                "{p}"
            );
        }
        assert_eq!(rows[2].line, 8);
        assert_eq!(
            rows[2].problems[0].to_string(),
            "line 8, column attendance_possible: required when other attendance columns are filled in"
        );
        assert!(!format!("{:?}", rows[1]).contains("Secretname"));
    }

    #[test]
    fn header_errors() {
        let err = read(
            "upn,surname,forename,dob,sex,shoe_size,Colour\n".as_bytes(),
            today(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: unknown column(s) shoe_size, colour; the columns are those of the template"
        );
        let err = read("upn,forename,sex\n".as_bytes(), today()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: missing required column(s) surname, dob"
        );
        let err = read("upn,upn\n".as_bytes(), today()).unwrap_err();
        assert!(matches!(err, CsvError::DuplicateColumn(_)), "{err}");
        assert!(matches!(read(&b""[..], today()), Err(CsvError::Empty)));
        let bom = "\u{feff}UPN, Surname ,forename,dob,sex\nH801200001001,A,B,2015-01-01,M\n";
        let rows = read(bom.as_bytes(), today()).unwrap();
        assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
        let err = read(
            &b"upn,surname,forename,dob,sex\n\xff,a,b,c,d\n"[..],
            today(),
        )
        .unwrap_err();
        assert!(matches!(err, CsvError::Csv { line: 2, .. }), "{err}");
    }

    #[test]
    fn too_many_cells_is_a_problem() {
        let csv = "upn,surname,forename,dob,sex\nH801200001001,A,B,2015-01-01,M,extra\n";
        let rows = read(csv.as_bytes(), today()).unwrap();
        assert_eq!(
            rows[0].problems[0].to_string(),
            "line 2, column (row): has 6 cells but the header names 5 columns"
        );
    }

    #[test]
    fn template_reads_back_and_its_example_is_valid() {
        let template = template();
        assert!(template.starts_with(&format!("{HEADER}\n# upn: ")));
        assert!(read(template.as_bytes(), today()).unwrap().is_empty());
        let uncommented = template.replace("\n# H801200001001", "\nH801200001001");
        let rows = read(uncommented.as_bytes(), today()).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
        assert_eq!(rows[0].record.notes, "Enjoys art, reads daily");
    }

    /// The line each row starts on, for rows of `text` after `HEADER`.
    fn lines_of(text: &str) -> Vec<usize> {
        read(text.as_bytes(), today())
            .unwrap()
            .iter()
            .map(|r| r.line)
            .collect()
    }

    const ROW: &str = "W86120011901B,,Begum,Zoë,James,Zoë,2015-01-12,M,BAFR,ENG,no,no,K,HI;MLD,380,367,4,9,114,86,92,GDS,17,no,8604003,x";

    #[test]
    fn csv_line_numbers_are_the_lines_rows_start_on() {
        // Issue 13: without a comment line, the first row is line 2.
        assert_eq!(lines_of(&format!("{HEADER}\n{ROW}\n{ROW}\n")), [2, 3]);
        assert_eq!(lines_of(&format!("{HEADER}\r\n{ROW}\r\n{ROW}\r\n")), [2, 3]);
        assert_eq!(
            lines_of(&format!("# a comment\n{HEADER}\n{ROW}\n# another\n{ROW}\n")),
            [3, 5]
        );
    }

    #[test]
    fn csv_line_numbers_after_a_multiline_note() {
        let note = ROW.replace(",x", ",\"one\ntwo\nthree\"");
        assert_eq!(
            lines_of(&format!("{HEADER}\n{note}\n{ROW}\n{ROW}\n")),
            [2, 5, 6]
        );
        assert_eq!(
            lines_of(&format!("{HEADER}\r\n{note}\r\n{ROW}\r\n")),
            [2, 5]
        );
    }
}
