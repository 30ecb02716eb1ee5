//! One spreadsheet row onto a [`TransitionRecord`]: reading each cell by
//! the conventions in the module documentation, then checking the record
//! with [`TransitionRecord::problems`], the same check `record.json` and the
//! CTF reader use, so the three readers cannot disagree. Each problem is
//! named by the row's line and its column.

use super::{CsvProblem, CsvRow};
use crate::laestab::Destination;
use crate::record::{Attendance, FieldProblem, Ks2Results, TransitionRecord};

/// Reads the row that starts on `line`; `columns` names each cell.
pub(super) fn read_row(
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

    let left = match cell("left") {
        "" => None,
        value => match crate::dates::parse_ymd(value) {
            Ok(d) => Some(d),
            Err(_) => {
                bad("left", format!("{value:?} is not a date YYYY-MM-DD"));
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
        left,
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
