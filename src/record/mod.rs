//! A pupil's transition record and its JSON form (`record.json` in a pack
//! folder): the field names, what is required, and the checks a record must
//! pass before it is sealed. Unknown JSON fields are an error, never dropped.

use serde::{Deserialize, Serialize};

use crate::upn::Upn;

mod wire;

/// A pupil's transition record, as `record.json` holds it.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRecord {
    /// Unique Pupil Number (13 characters, check letter first). Required.
    pub upn: String,
    /// Former UPN after merged records; empty if none.
    #[serde(default)]
    pub former_upn: String,
    /// Legal surname. Required.
    pub surname: String,
    /// Legal forename. Required.
    pub forename: String,
    /// Middle names, space separated.
    #[serde(default)]
    pub middle_names: String,
    /// Preferred forename; empty when the same as the legal one.
    #[serde(default)]
    pub preferred_forename: String,
    /// Date of birth, YYYY-MM-DD. Required.
    pub dob: String,
    /// Sex as the CTF records it: M, F or U. Required.
    pub sex: String,
    /// DfE ethnicity code.
    #[serde(default)]
    pub ethnicity: String,
    /// First language, DfE code.
    #[serde(default)]
    pub first_language: String,
    /// Eligible for free school meals.
    #[serde(default)]
    pub fsm: bool,
    /// The school holds medical information about the pupil.
    #[serde(default)]
    pub medical_flag: bool,
    /// SEN provision: N, K or E; empty if not recorded.
    #[serde(default)]
    pub sen_provision: String,
    /// SEN need codes, primary first.
    #[serde(default)]
    pub sen_needs: Vec<String>,
    /// Attendance in the year of transfer.
    #[serde(default)]
    pub attendance: Option<Attendance>,
    /// Key stage 2 results.
    #[serde(default)]
    pub ks2: Option<Ks2Results>,
    /// A separate child-protection file exists (sent as a safeguarding pack).
    #[serde(default)]
    pub safeguarding_file: bool,
    /// Free-text pastoral and teacher notes.
    #[serde(default)]
    pub notes: String,
}

/// Attendance sessions for one academic year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attendance {
    /// Academic year by its starting calendar year (2025 for 2025/26).
    #[serde(default)]
    pub year: u32,
    /// Sessions possible.
    pub possible: u32,
    /// Sessions attended.
    pub attended: u32,
    /// Sessions of authorised absence.
    #[serde(default)]
    pub authorised: u32,
    /// Sessions of unauthorised absence.
    #[serde(default)]
    pub unauthorised: u32,
}

/// Key stage 2 results.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ks2Results {
    /// Reading scaled score, 80–120.
    #[serde(default)]
    pub reading: Option<u32>,
    /// Mathematics scaled score, 80–120.
    #[serde(default)]
    pub maths: Option<u32>,
    /// Grammar, punctuation and spelling scaled score, 80–120.
    #[serde(default)]
    pub gps: Option<u32>,
    /// Writing teacher assessment, e.g. WTS, EXS, GDS.
    #[serde(default)]
    pub writing_ta: String,
    /// Multiplication tables check score, 0–25.
    #[serde(default)]
    pub mtc: Option<u32>,
}

/// One problem with one field of a record. The message never repeats the
/// field's value (it may be a child's name or UPN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The JSON field name, e.g. `dob` or `ks2.reading`.
    pub field: String,
    /// What is wrong, and what is expected.
    pub problem: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Redacted: a record is about a child.
impl std::fmt::Debug for TransitionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransitionRecord { .. }")
    }
}

impl TransitionRecord {
    /// Parses `record.json` text. Errors carry serde's line and column, and
    /// never a value from the file.
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        serde_json::from_str(text).map_err(|e| JsonError(redact_quoted(&e.to_string())))
    }

    /// The record as pretty JSON, every field present.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Every problem with the record; empty when it may be sent. `today`
    /// bounds the date of birth.
    pub fn problems(&self, today: time::Date) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, problem: String| {
            out.push(FieldProblem {
                field: field.into(),
                problem,
            })
        };
        match Upn::parse(&self.upn) {
            Ok(_) => {}
            Err(e) if self.upn.trim().is_empty() => bad("upn", format!("required ({e})")),
            Err(e) => bad("upn", e.to_string()),
        }
        if !self.former_upn.trim().is_empty() {
            match Upn::parse(&self.former_upn) {
                Ok(f) if Upn::parse(&self.upn).is_ok_and(|u| u == f) => {
                    bad("former_upn", "is the same as upn".into())
                }
                Ok(_) => {}
                Err(e) => bad("former_upn", e.to_string()),
            }
        }
        for (field, value) in [("surname", &self.surname), ("forename", &self.forename)] {
            if value.trim().is_empty() {
                bad(field, "required".into());
            }
        }
        match check_date(&self.dob) {
            Err(_) if self.dob.trim().is_empty() => bad("dob", "required (YYYY-MM-DD)".into()),
            Err(why) => bad("dob", why),
            Ok(d) if d > today => bad("dob", "is in the future".into()),
            Ok(d) if today.year() - d.year() > 30 => bad("dob", "is more than 30 years ago".into()),
            Ok(_) => {}
        }
        match self.sex.trim() {
            "M" | "F" | "U" => {}
            "" => bad("sex", "required (M, F or U)".into()),
            _ => bad("sex", "must be M, F or U".into()),
        }
        for (field, value) in [
            ("ethnicity", &self.ethnicity),
            ("first_language", &self.first_language),
        ] {
            if !is_code(value, 8) {
                bad(
                    field,
                    "must be a DfE code of letters and digits (e.g. WBRI, ENG)".into(),
                );
            }
        }
        if !matches!(self.sen_provision.trim(), "" | "N" | "K" | "E") {
            bad(
                "sen_provision",
                "must be N (none), K (SEN support) or E (EHC plan)".into(),
            );
        }
        if self
            .sen_needs
            .iter()
            .any(|n| n.trim().is_empty() || !is_code(n, 8))
        {
            bad(
                "sen_needs",
                "each need must be a DfE code such as ASD or SLCN".into(),
            );
        }
        if let Some(a) = &self.attendance {
            let sum = u64::from(a.attended) + u64::from(a.authorised) + u64::from(a.unauthorised);
            if sum > u64::from(a.possible) {
                bad(
                    "attendance",
                    "attended + authorised + unauthorised is more than possible sessions".into(),
                );
            }
            if a.year != 0 && !(2000..=2100).contains(&a.year) {
                bad("attendance.year", "must be a year such as 2025".into());
            }
        }
        if let Some(k) = &self.ks2 {
            for (field, value) in [
                ("ks2.reading", k.reading),
                ("ks2.maths", k.maths),
                ("ks2.gps", k.gps),
            ] {
                if value.is_some_and(|v| !(80..=120).contains(&v)) {
                    bad(field, "a scaled score is between 80 and 120".into());
                }
            }
            if k.mtc.is_some_and(|v| v > 25) {
                bad(
                    "ks2.mtc",
                    "the multiplication tables check scores 0 to 25".into(),
                );
            }
            if !is_code(&k.writing_ta, 4) {
                bad(
                    "ks2.writing_ta",
                    "must be a teacher assessment code such as WTS, EXS or GDS".into(),
                );
            }
        }
        out
    }

    /// The normalised UPN, when valid.
    pub fn upn(&self) -> Option<Upn> {
        Upn::parse(&self.upn).ok()
    }
}

/// `record.json` that does not parse: what and where (line, column, field
/// name), with any quoted value from the file replaced by `"…"`: serde
/// repeats the offending value (`invalid type: string "Zoë"`), and a value
/// in a record may be a child's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Replaces the contents of every double-quoted segment with `…`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        match (c, inside) {
            ('"', false) => {
                out.push_str("\"…");
                inside = true;
            }
            ('"', true) => {
                out.push('"');
                inside = false;
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// Parses YYYY-MM-DD.
pub fn parse_date(text: &str) -> Option<time::Date> {
    check_date(text).ok()
}

/// Parses YYYY-MM-DD, or says what is wrong without repeating the value
/// (it may be a pupil's date of birth): a date written day/month/year gets
/// a hint (28/07/2015, 28.07.15), and one of the right form that does not
/// exist (2015-02-30) is "not a real date". `record.json`, the class
/// spreadsheet and the CTF reader all read dates with it.
pub fn check_date(text: &str) -> Result<time::Date, String> {
    let text = text.trim();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &format) {
        return Ok(d);
    }
    let digits = |part: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
    };
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() == 3
        && digits(parts[0], 4..=4)
        && digits(parts[1], 2..=2)
        && digits(parts[2], 2..=2)
    {
        return Err("not a real date (check the day and the month)".into());
    }
    // A spreadsheet may add a time of day: 2015-07-28 00:00:00.
    if let Some((date, _time)) = text.split_once([' ', 'T'])
        && time::Date::parse(date, &format).is_ok()
    {
        return Err("has a time after the date: write the date only, as YYYY-MM-DD".into());
    }
    let dmy: Vec<&str> = text.split(['/', '.', '-']).collect();
    if dmy.len() == 3
        && digits(dmy[0], 1..=2)
        && digits(dmy[1], 1..=2)
        && (digits(dmy[2], 4..=4) || digits(dmy[2], 2..=2))
    {
        return Err(
            "looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)"
                .into(),
        );
    }
    Err("not a date in the form YYYY-MM-DD".into())
}

fn is_code(value: &str, max: usize) -> bool {
    value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn valid_record() -> TransitionRecord {
        TransitionRecord {
            upn: "H801200001001".into(),
            surname: "O'Brien-Ní Dhónaill".into(),
            forename: "Zoë".into(),
            dob: "2015-01-12".into(),
            sex: "F".into(),
            ethnicity: "WIRI".into(),
            first_language: "ENG".into(),
            sen_provision: "K".into(),
            sen_needs: vec!["SLCN".into()],
            attendance: Some(Attendance {
                year: 2025,
                possible: 380,
                attended: 370,
                authorised: 8,
                unauthorised: 2,
            }),
            ks2: Some(Ks2Results {
                reading: Some(104),
                maths: None,
                gps: Some(99),
                writing_ta: "EXS".into(),
                mtc: Some(21),
            }),
            notes: "Line one, with \"quotes\"\nline two".into(),
            ..Default::default()
        }
    }

    fn today() -> time::Date {
        time::macros::date!(2026 - 07 - 20)
    }

    #[test]
    fn valid_record_has_no_problems_and_round_trips() {
        let record = valid_record();
        assert_eq!(record.problems(today()), vec![]);
        let back = TransitionRecord::from_json(&record.to_json()).unwrap();
        assert!(back == record);
    }

    #[test]
    fn minimal_json_is_enough() {
        let json =
            r#"{"upn":"h801200001001","surname":"A","forename":"B","dob":"2015-02-03","sex":"M"}"#;
        let record = TransitionRecord::from_json(json).unwrap();
        assert!(record.problems(today()).is_empty());
    }

    #[test]
    fn unknown_fields_are_an_error() {
        let json = r#"{"upn":"H801200001001","surname":"A","forename":"B","dob":"2015-02-03","sex":"M","shoe_size":3}"#;
        let err = TransitionRecord::from_json(json).unwrap_err().to_string();
        assert!(err.contains("unknown field `shoe_size`"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn json_errors_do_not_repeat_values() {
        let json = r#"{"upn":"H801200001001","surname":"A","forename":"B","dob":"2015-02-03","sex":"M","ks2":{"reading":"Zoë Okafor"}}"#;
        let err = TransitionRecord::from_json(json).unwrap_err().to_string();
        assert!(!err.contains("Zoë"), "{err}");
        assert!(
            err.contains("invalid type") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_named_without_echoing_values() {
        let record = TransitionRecord {
            upn: "Z801200001001".into(),
            former_upn: "nonsense".into(),
            dob: "12/01/2015".into(),
            sex: "boy".into(),
            sen_provision: "Q".into(),
            attendance: Some(Attendance {
                year: 2025,
                possible: 10,
                attended: 10,
                authorised: 1,
                unauthorised: 0,
            }),
            ks2: Some(Ks2Results {
                reading: Some(150),
                mtc: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        };
        let problems = record.problems(today());
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "upn",
                "former_upn",
                "surname",
                "forename",
                "dob",
                "sex",
                "sen_provision",
                "attendance",
                "ks2.reading",
                "ks2.mtc"
            ]
        );
        assert_eq!(problems[0].problem, "check letter should be H, found Z");
        for p in &problems {
            assert!(
                !p.problem.contains("801200001001") && !p.problem.contains("nonsense"),
                "{p}"
            );
        }
    }

    #[test]
    fn dates_written_day_first_get_a_hint_and_impossible_dates_are_named() {
        assert!(
            check_date("28/07/2015")
                .unwrap_err()
                .contains("write dates as YYYY-MM-DD")
        );
        assert!(
            check_date("8.7.2015")
                .unwrap_err()
                .contains("day/month/year")
        );
        assert_eq!(
            check_date("2015-02-30").unwrap_err(),
            "not a real date (check the day and the month)"
        );
        assert_eq!(
            check_date("2015-13-01").unwrap_err(),
            "not a real date (check the day and the month)"
        );
        assert_eq!(
            check_date("soon").unwrap_err(),
            "not a date in the form YYYY-MM-DD"
        );
        assert_eq!(
            check_date(" 2015-07-28 "),
            Ok(time::macros::date!(2015 - 07 - 28))
        );
    }

    #[test]
    fn dates_with_a_two_digit_year_or_a_time_get_a_hint() {
        assert!(
            check_date("28/07/15")
                .unwrap_err()
                .contains("day/month/year")
        );
        assert_eq!(
            check_date("2015-07-28 00:00:00").unwrap_err(),
            "has a time after the date: write the date only, as YYYY-MM-DD"
        );
        assert_eq!(
            check_date("2015-07-28T00:00:00").unwrap_err(),
            "has a time after the date: write the date only, as YYYY-MM-DD"
        );
    }

    #[test]
    fn record_json_dob_2015_02_30_is_not_a_real_date() {
        let mut record = valid_record();
        record.dob = "2015-02-30".into();
        let problems = record.problems(today());
        assert_eq!(
            problems[0].to_string(),
            "dob: not a real date (check the day and the month)"
        );
        record.dob = "28/07/2015".into();
        let problems = record.problems(today());
        assert!(
            problems[0]
                .to_string()
                .starts_with("dob: looks like day/month/year: write dates as YYYY-MM-DD"),
            "{problems:?}"
        );
    }

    #[test]
    fn dates_are_bounded() {
        let mut record = valid_record();
        record.dob = "2027-01-01".into();
        assert_eq!(record.problems(today())[0].problem, "is in the future");
        record.dob = "2015-02-30".into();
        assert_eq!(record.problems(today())[0].field, "dob");
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", valid_record()), "TransitionRecord { .. }");
    }
}
