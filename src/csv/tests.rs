use super::*;
use crate::record::{Attendance, Ks2Results};

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
    assert!(
        matches!(err, CsvError::DuplicateColumn { line: 1, .. }),
        "{err}"
    );
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
    assert!(template.starts_with(&format!("{}\n# upn: ", COLUMNS.join(","))));
    assert!(read(template.as_bytes(), today()).unwrap().is_empty());
    let uncommented = template.replace("\n# H801200001001", "\nH801200001001");
    let rows = read(uncommented.as_bytes(), today()).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
    assert_eq!(rows[0].record.notes, "Enjoys art, reads daily");
    assert_eq!(rows[0].left, Some(time::macros::date!(2026 - 07 - 22)));
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

#[test]
fn csv_header_only_file_is_line_1() {
    assert!(lines_of(&format!("{HEADER}\n")).is_empty());
    assert!(lines_of(HEADER).is_empty());
    let err = read(
        "upn,surname,forename,dob,sex,shoe_size\r\n".as_bytes(),
        today(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("line 1: unknown column(s) shoe_size"),
        "{err}"
    );
    // Comment lines before the header move it down.
    let err = read(
        "# class 6B\r\n# exported from the MIS\r\nupn,forename,sex\r\n".as_bytes(),
        today(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3: missing required column(s) surname, dob"
    );
}

#[test]
fn csv_first_row_is_line_2_with_or_without_crlf() {
    for end in ["\n", "\r\n"] {
        let text = format!("{HEADER}{end}{ROW}{end}");
        assert_eq!(lines_of(&text), [2], "{end:?}");
        // No line end after the last row.
        assert_eq!(lines_of(&format!("{HEADER}{end}{ROW}")), [2], "{end:?}");
    }
}

#[test]
fn csv_line_numbers_after_blank_lines_and_comments_in_a_crlf_file() {
    let text = format!("# top\r\n{HEADER}\r\n\r\n{ROW}\r\n# note\r\n\r\n# more\r\n{ROW}\r\n");
    assert_eq!(lines_of(&text), [4, 8]);
    let text = format!("{HEADER}\n\n\n{ROW}\n\n{ROW}\n");
    assert_eq!(lines_of(&text), [4, 6]);
}

#[test]
fn csv_line_numbers_after_a_multiline_note_with_a_byte_order_mark() {
    let note = ROW.replace(",x", ",\"one\r\n\r\nthree, \"\"quoted\"\"\"");
    let text = format!("\u{feff}{HEADER}\r\n{note}\r\n{ROW}\r\n");
    let rows = read(text.as_bytes(), today()).unwrap();
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 5]);
    assert!(rows.iter().all(|r| r.problems.is_empty()), "{rows:?}");
}

#[test]
fn csv_unreadable_row_names_the_line_it_starts_on() {
    let text = b"upn,surname,forename,dob,sex,notes\r\nH801200001001,A,B,2015-01-01,M,\"a\r\nb\"\r\n\xff,a,b,c,d,e\r\n";
    let err = read(&text[..], today()).unwrap_err();
    assert!(matches!(err, CsvError::Csv { line: 4, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "line 4: cannot read the spreadsheet: the file is not UTF-8 text (save it as CSV UTF-8)"
    );
}

#[test]
fn csv_dd_mm_yyyy_date_gets_a_hint() {
    let text = format!(
        "{HEADER}\r\n{}\r\n",
        ROW.replace("2015-01-12", "28/07/2015")
    );
    let rows = read(text.as_bytes(), today()).unwrap();
    let shown: Vec<String> = rows[0].problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "line 2, column dob: looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)"
        ]
    );
}

#[test]
fn csv_dob_2015_02_30_is_not_a_real_date() {
    let text = format!("{HEADER}\n{}\n", ROW.replace("2015-01-12", "2015-02-30"));
    let rows = read(text.as_bytes(), today()).unwrap();
    let shown: Vec<String> = rows[0].problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["line 2, column dob: not a real date (check the day and the month)"]
    );
}
