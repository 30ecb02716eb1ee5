//! Mapping parsed CTF elements onto Baton's types: the header, and each
//! `<Pupil>` onto a [`TransitionRecord`] with its problems.
//!
//! Mapping (documented here because the CTF does not say it in one place):
//!
//! - `Sex`, or `Gender` in older files;
//! - first language: `BasicDetails/Languages/Type` whose `LanguageType` is `F`;
//! - `fsm`: true when some `FSMhistory/FSMinstance` has no `FSMendDate` (a
//!   current period);
//! - SEN: the `SENhistory/SEN` with the latest `StartDate`; its
//!   `SENprovision` and `SENneeds/SENneed/Type` ordered by `TypeRank`. No
//!   `SENhistory` at all reads as provision `N`;
//! - attendance: the `Attendance/YearData` with the latest `Year`;
//! - KS2: `StageAssessments/KeyStage` with `Stage` KS2; components `RD`,
//!   `MAT`, `GPS` (scaled scores), `WRI` (writing teacher assessment) and
//!   `MTC`, each from its latest `Year`. A non-numeric result (e.g. `A` for
//!   absent) reads as no score;
//! - text values are trimmed.
//!
//! Beside the record the mapping notes where each field came from (element
//! path and line, in [`Places`]), so that a problem the shared record check
//! finds later (`CtfPupil::check`) names the element it was read from.

use super::{CtfError, CtfHeader, CtfProblem, DestSchool, HeaderProblem, SourceSchool};
use crate::laestab::{Destination, Laestab};
use crate::record::{Attendance, Ks2Results, TransitionRecord, check_date};
use crate::upn::Upn;

/// Where each record field was read from: the field's name as
/// [`crate::record::FieldProblem`] gives it (`sex`, `ks2.reading`), the
/// element path inside `<Pupil>` and its line (the nearest enclosing
/// element's, or the `<Pupil>`'s, when the element is absent).
#[derive(Debug, Clone, Default)]
pub(super) struct Places(Vec<(&'static str, String, usize)>);

impl Places {
    /// Notes (or, for a later value that wins, replaces) where `field` came from.
    fn set(&mut self, field: &'static str, element: String, line: usize) {
        match self.0.iter_mut().find(|(f, _, _)| *f == field) {
            Some(place) => *place = (field, element, line),
            None => self.0.push((field, element, line)),
        }
    }

    /// The element path and line `field` was read from.
    pub(super) fn of(&self, field: &str) -> Option<(&str, usize)> {
        self.0
            .iter()
            .find(|(f, _, _)| *f == field)
            .map(|(_, element, line)| (element.as_str(), *line))
    }
}

/// A parsed element: small trees only (one header or one pupil).
#[derive(Debug, Default)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) text: String,
    pub(super) line: usize,
    pub(super) children: Vec<Node>,
}

impl Node {
    pub(super) fn new(name: String, line: usize) -> Self {
        Self {
            name,
            line,
            ..Self::default()
        }
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, name| node.child(name))
    }

    /// The line of the element at `path`, or of the deepest element on the
    /// way to it that is present.
    fn line_at(&self, path: &[&str]) -> usize {
        let mut node = self;
        for name in path {
            match node.child(name) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.line
    }

    fn value(&self) -> &str {
        self.text.trim()
    }

    fn text_at(&self, path: &[&str]) -> String {
        self.at(path)
            .map(|n| n.value().to_string())
            .unwrap_or_default()
    }
}

pub(super) fn parse_header(node: &Node) -> Result<CtfHeader, CtfError> {
    let mut problems = Vec::new();
    let mut bad = |element: &str, line: usize, problem: String| {
        problems.push(HeaderProblem {
            line,
            element: element.into(),
            problem,
        })
    };
    let line_of = |path: &[&str]| node.at(path).map_or(node.line, |n| n.line);
    let version = node.text_at(&["CTFversion"]);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (major, minor) = version.split_once('.').unwrap_or((&version, "0"));
    if version.is_empty() {
        bad("CTFversion", line_of(&["CTFversion"]), "required".into());
    } else if !numeric(major) || !numeric(minor) {
        bad(
            "CTFversion",
            line_of(&["CTFversion"]),
            "must be a version number such as 25.0".into(),
        );
    }
    let source = match node.child("SourceSchool") {
        None => {
            bad("SourceSchool", node.line, "required".into());
            None
        }
        Some(source) => {
            match Laestab::from_parts(&source.text_at(&["LEA"]), &source.text_at(&["Estab"])) {
                Ok(l) => Some(l),
                Err(e) => {
                    bad("SourceSchool/LEA+Estab", source.line, e.to_string());
                    None
                }
            }
        }
    };
    let dest = match node.child("DestSchool") {
        None => {
            bad("DestSchool", node.line, "required".into());
            None
        }
        Some(dest) => match destination(&dest.text_at(&["LEA"]), &dest.text_at(&["Estab"])) {
            Ok(d) => Some(d),
            Err(e) => {
                bad("DestSchool/LEA+Estab", dest.line, e.to_string());
                None
            }
        },
    };
    match (source, dest) {
        (Some(laestab), Some(destination)) if problems.is_empty() => Ok(CtfHeader {
            document_name: node.text_at(&["DocumentName"]),
            version,
            date_time: node.text_at(&["DateTime"]),
            document_qualifier: node.text_at(&["DocumentQualifier"]),
            data_qualifier: node.text_at(&["DataQualifier"]),
            data_descriptor: node.text_at(&["DataDescriptor"]),
            supplier_id: node.text_at(&["SupplierID"]),
            source: SourceSchool {
                laestab,
                urn: node.text_at(&["SourceSchool", "URN"]),
                name: node.text_at(&["SourceSchool", "SchoolName"]),
                academic_year: node.text_at(&["SourceSchool", "AcademicYear"]),
            },
            dest: DestSchool {
                destination,
                urn: node.text_at(&["DestSchool", "URN"]),
            },
        }),
        _ => Err(CtfError::Header(problems)),
    }
}

/// A `DestSchool` is a LAESTAB, or the special codes split as `XXX`+`XXXX`
/// and `MMM`+`MMMM` (or with the code in `LEA` alone).
fn destination(lea: &str, estab: &str) -> Result<Destination, crate::laestab::LaestabError> {
    let all = |s: &str, c: char| !s.is_empty() && s.chars().all(|x| x.eq_ignore_ascii_case(&c));
    let rest_is = |c: char| estab.is_empty() || all(estab, c);
    if all(lea, 'X') && rest_is('X') {
        return Ok(Destination::Unknown);
    }
    if all(lea, 'M') && rest_is('M') {
        return Ok(Destination::AbroadOrIndependent);
    }
    Destination::parse(&format!("{lea}{estab}"))
}

/// A `<Pupil>` mapped: the record, the problems found while reading it, and
/// where each field came from.
pub(super) struct Mapped {
    pub(super) record: TransitionRecord,
    pub(super) problems: Vec<CtfProblem>,
    pub(super) places: Places,
    pub(super) left: Option<time::Date>,
}

pub(super) fn map_pupil(pupil: &Node, position: usize) -> Mapped {
    let mut problems = Vec::new();
    let mut bad = |element: &str, line: usize, problem: String| {
        problems.push(CtfProblem {
            pupil: position,
            line,
            element: element.into(),
            problem,
        })
    };
    let line_of = |path: &[&str]| pupil.at(path).map_or(pupil.line, |n| n.line);
    let basic = |name: &str| pupil.text_at(&["BasicDetails", name]);
    let mut places = Places::default();
    for (field, path) in [
        ("upn", &["UPN"][..]),
        ("former_upn", &["BasicDetails", "FormerUPN"]),
        ("surname", &["Surname"]),
        ("forename", &["Forename"]),
        ("dob", &["DOB"]),
        ("ethnicity", &["BasicDetails", "Ethnicity"]),
        ("first_language", &["BasicDetails", "Languages"]),
        ("sen_provision", &["SENhistory", "SEN", "SENprovision"]),
        ("sen_needs", &["SENhistory", "SEN", "SENneeds"]),
        ("attendance", &["Attendance", "YearData"]),
        ("attendance.year", &["Attendance", "YearData", "Year"]),
    ] {
        places.set(field, path.join("/"), pupil.line_at(path));
    }
    // Older files have `Gender` where newer ones have `Sex`.
    let sex = if pupil.child("Sex").is_none() && pupil.child("Gender").is_some() {
        "Gender"
    } else {
        "Sex"
    };
    places.set("sex", sex.into(), pupil.line_at(&[sex]));

    let mut record = TransitionRecord {
        upn: pupil.text_at(&["UPN"]),
        former_upn: basic("FormerUPN"),
        surname: pupil.text_at(&["Surname"]),
        forename: pupil.text_at(&["Forename"]),
        middle_names: basic("MiddleNames"),
        preferred_forename: basic("PreferredForename"),
        dob: pupil.text_at(&["DOB"]),
        sex: pupil.text_at(&[sex]),
        ethnicity: basic("Ethnicity"),
        ..TransitionRecord::default()
    };

    for (element, value) in [
        ("UPN", &record.upn),
        ("Surname", &record.surname),
        ("Forename", &record.forename),
        ("DOB", &record.dob),
    ] {
        if pupil.child(element).is_none() {
            bad(element, pupil.line, "missing".into());
        } else if value.is_empty() {
            bad(element, line_of(&[element]), "required".into());
        }
    }
    if !record.upn.is_empty()
        && let Err(e) = Upn::parse(&record.upn)
    {
        bad("UPN", line_of(&["UPN"]), e.to_string());
    }
    if !record.former_upn.is_empty()
        && let Err(e) = Upn::parse(&record.former_upn)
    {
        bad(
            "BasicDetails/FormerUPN",
            line_of(&["BasicDetails", "FormerUPN"]),
            e.to_string(),
        );
    }
    if !record.dob.is_empty()
        && let Err(why) = check_date(&record.dob)
    {
        bad("DOB", line_of(&["DOB"]), why);
    }

    if let Some(languages) = pupil.at(&["BasicDetails", "Languages"]) {
        let first = languages
            .all("Type")
            .find(|t| t.text_at(&["LanguageType"]).eq_ignore_ascii_case("F"));
        if let Some(first) = first {
            record.first_language = first.text_at(&["Language"]);
            places.set(
                "first_language",
                "BasicDetails/Languages/Type/Language".into(),
                first.line_at(&["Language"]),
            );
        }
    }

    if let Some(flag) = pupil.at(&["BasicDetails", "MedicalFlag"]) {
        match flag.value().to_ascii_lowercase().as_str() {
            "true" | "1" => record.medical_flag = true,
            "false" | "0" | "" => {}
            _ => bad(
                "BasicDetails/MedicalFlag",
                flag.line,
                "must be true, false, 1 or 0".into(),
            ),
        }
    }

    record.fsm = pupil.child("FSMhistory").is_some_and(|history| {
        history
            .all("FSMinstance")
            .any(|i| i.text_at(&["FSMendDate"]).is_empty())
    });

    record.sen_provision = "N".into();
    if let Some(history) = pupil.child("SENhistory") {
        let latest = history
            .all("SEN")
            .max_by(|a, b| a.text_at(&["StartDate"]).cmp(&b.text_at(&["StartDate"])));
        if let Some(sen) = latest {
            record.sen_provision = sen.text_at(&["SENprovision"]);
            places.set(
                "sen_provision",
                "SENhistory/SEN/SENprovision".into(),
                sen.line_at(&["SENprovision"]),
            );
            places.set(
                "sen_needs",
                "SENhistory/SEN/SENneeds".into(),
                sen.line_at(&["SENneeds"]),
            );
            let mut needs: Vec<(u32, String)> = sen
                .child("SENneeds")
                .map(|n| {
                    n.all("SENneed")
                        .map(|need| {
                            let rank = need.text_at(&["TypeRank"]).parse().unwrap_or(u32::MAX);
                            (rank, need.text_at(&["Type"]))
                        })
                        .collect()
                })
                .unwrap_or_default();
            needs.sort_by_key(|(rank, _)| *rank);
            record.sen_needs = needs.into_iter().map(|(_, need)| need).collect();
        }
    }

    if let Some(attendance) = pupil.child("Attendance") {
        let latest = attendance
            .all("YearData")
            .max_by_key(|y| y.text_at(&["Year"]).parse::<u32>().unwrap_or(0));
        if let Some(year) = latest {
            places.set("attendance", "Attendance/YearData".into(), year.line);
            places.set(
                "attendance.year",
                "Attendance/YearData/Year".into(),
                year.line_at(&["Year"]),
            );
            let mut number = |name: &str| -> u32 {
                let Some(node) = year.child(name) else {
                    return 0;
                };
                match node.value() {
                    "" => 0,
                    text => text.parse().unwrap_or_else(|_| {
                        bad(
                            &format!("Attendance/YearData/{name}"),
                            node.line,
                            "must be a whole number".into(),
                        );
                        0
                    }),
                }
            };
            record.attendance = Some(Attendance {
                year: number("Year"),
                possible: number("SessionsPossible"),
                attended: number("SessionsAttended"),
                authorised: number("SessionsAuthorised"),
                unauthorised: number("SessionsUnauthorised"),
            });
        }
    }

    record.ks2 = ks2(pupil, &mut places);
    let left = leaving_date(pupil, &mut bad);
    Mapped {
        record,
        problems,
        places,
        left,
    }
}

/// The latest `SchoolHistory/School/LeavingDate`: the day the pupil left
/// the school sending the file, when the MIS wrote it.
fn leaving_date(pupil: &Node, bad: &mut impl FnMut(&str, usize, String)) -> Option<time::Date> {
    let history = pupil.child("SchoolHistory")?;
    let mut latest = None;
    for school in history.all("School") {
        let Some(node) = school.child("LeavingDate") else {
            continue;
        };
        match node.value() {
            "" => {}
            text => match crate::dates::parse_ymd(text) {
                Ok(d) => latest = latest.max(Some(d)),
                Err(_) => bad(
                    "SchoolHistory/School/LeavingDate",
                    node.line,
                    format!("{text:?} is not a date YYYY-MM-DD"),
                ),
            },
        }
    }
    latest
}

fn ks2(pupil: &Node, places: &mut Places) -> Option<Ks2Results> {
    let stages = pupil.child("StageAssessments")?;
    let mut results: Option<Ks2Results> = None;
    for stage in stages
        .all("KeyStage")
        .filter(|k| k.text_at(&["Stage"]).eq_ignore_ascii_case("KS2"))
    {
        let out = results.get_or_insert_with(Ks2Results::default);
        // Later years win; within a year, the later element wins.
        let mut assessments: Vec<&Node> = stage.all("StageAssessment").collect();
        assessments.sort_by_key(|a| a.text_at(&["Year"]).parse::<u32>().unwrap_or(0));
        for a in assessments {
            let result = a.text_at(&["Result"]);
            let score = result.parse::<u32>().ok();
            let component = a.text_at(&["Component"]).to_ascii_uppercase();
            let field = match component.as_str() {
                "RD" => {
                    out.reading = score;
                    "ks2.reading"
                }
                "MAT" => {
                    out.maths = score;
                    "ks2.maths"
                }
                "GPS" => {
                    out.gps = score;
                    "ks2.gps"
                }
                "WRI" => {
                    out.writing_ta = result;
                    "ks2.writing_ta"
                }
                "MTC" => {
                    out.mtc = score;
                    "ks2.mtc"
                }
                _ => continue,
            };
            places.set(
                field,
                format!("StageAssessments/KeyStage/StageAssessment[Component={component}]/Result"),
                a.line_at(&["Result"]),
            );
        }
    }
    results
}
