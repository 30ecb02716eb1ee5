//! The Common Transfer File (CTF): reading it tolerantly, mapping each pupil
//! onto a [`TransitionRecord`], and writing a CTF for a receiving school.
//!
//! The CTF schema changes every academic year and the current XSD is not
//! public, so this module validates only what Baton relies on and carries
//! every `<Pupil>` element through **byte for byte**: whatever a newer MIS
//! wrote survives the trip even when Baton does not understand it. Reading
//! checks the header's school numbers and version and each pupil's UPN,
//! names and date of birth; [`CtfPupil::check`] then checks every value
//! mapped onto the record with the same rules as `record.json` and the
//! class spreadsheet ([`TransitionRecord::problems`]), so a pupil that
//! passes both is one the receiving school's `baton check` accepts.
//!
//! - [`reader`]: [`CtfReader`] streams a file one pupil at a time, so a
//!   5,000-pupil LA file never sits in memory as a tree; [`parse_all`] is the
//!   one-call helper.
//! - [`writer`]: [`write_ctf`] rebuilds the header for the destination and
//!   inserts the pupils' raw XML unchanged; [`pupil_xml_from_record`] makes a
//!   `<Pupil>` element for a record that came from a spreadsheet or JSON.
//!
//! Error messages and [`CtfProblem`]s name a pupil by its position in the
//! file, the element and the line, never by name, UPN or date of birth.
//!
//! ```
//! use baton::ctf::{self, CtfHeader};
//! use baton::{Destination, Laestab};
//!
//! let header = CtfHeader::new(
//!     Laestab::parse("8612001").unwrap(),
//!     Destination::Unknown,
//!     time::macros::datetime!(2026-07-17 15:04:05),
//! );
//! let record = baton::record::TransitionRecord {
//!     upn: "H801200001001".into(),
//!     surname: "O'Brien & Sons".into(),
//!     forename: "Zoë".into(),
//!     dob: "2015-01-12".into(),
//!     sex: "F".into(),
//!     // No `SENhistory` reads back as provision N.
//!     sen_provision: "N".into(),
//!     ..Default::default()
//! };
//! let pupil = ctf::pupil_xml_from_record(&record);
//! let mut file = Vec::new();
//! ctf::write_ctf(&mut file, &header, [pupil.as_str()]).unwrap();
//!
//! let parsed = ctf::parse_all(&file).unwrap();
//! assert_eq!(parsed.header.dest.destination, Destination::Unknown);
//! assert_eq!(parsed.pupils[0].raw_xml, pupil);
//! assert!(parsed.pupils[0].record == record);
//! ```

mod check;
mod mapping;
pub mod reader;
pub mod writer;

use std::fmt;

use crate::laestab::{Destination, Laestab};
use crate::record::TransitionRecord;

pub use reader::{Ctf, CtfReader, parse_all};
pub use writer::{pupil_xml_from_record, write_ctf};

/// The CTF version Baton writes by default: CTF 25 for 2025/26.
pub const CURRENT_VERSION: &str = "25.0";

/// The `DocumentName` every CTF carries.
pub const DOCUMENT_NAME: &str = "Common Transfer File";

/// The `SupplierID` Baton writes into the files it produces.
pub const SUPPLIER_ID: &str = "BATON";

/// A CTF `<Header>`: who sent the file, to whom, and in which CTF version.
///
/// Optional elements that were absent are empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtfHeader {
    /// `DocumentName`, normally "Common Transfer File".
    pub document_name: String,
    /// `CTFversion`, e.g. "25.0".
    pub version: String,
    /// `DateTime` the file was produced, as written (`YYYY-MM-DDThh:mm:ss`).
    pub date_time: String,
    /// `DocumentQualifier`: "full" or "partial".
    pub document_qualifier: String,
    /// `DataQualifier`, if any.
    pub data_qualifier: String,
    /// `DataDescriptor`, if any.
    pub data_descriptor: String,
    /// `SupplierID` of the software that wrote the file, if any. The writer
    /// always writes [`SUPPLIER_ID`].
    pub supplier_id: String,
    /// `SourceSchool`: the sending school.
    pub source: SourceSchool,
    /// `DestSchool`: the receiving school or a special destination.
    pub dest: DestSchool,
}

/// The sending school in a CTF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSchool {
    /// `LEA` + `Estab`.
    pub laestab: Laestab,
    /// `URN`, if given.
    pub urn: String,
    /// `SchoolName`, if given.
    pub name: String,
    /// `AcademicYear` by its starting calendar year, e.g. "2025".
    pub academic_year: String,
}

/// The destination in a CTF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSchool {
    /// `LEA` + `Estab`: a school, or `XXX`/`XXXX` (unknown) or `MMM`/`MMMM`
    /// (independent school or abroad).
    pub destination: Destination,
    /// `URN`, if given.
    pub urn: String,
}

impl CtfHeader {
    /// A header for a file Baton produces: [`CURRENT_VERSION`], a partial
    /// file, supplier [`SUPPLIER_ID`], and the academic year that contains
    /// `date_time` (September starts a new year).
    pub fn new(source: Laestab, dest: Destination, date_time: time::PrimitiveDateTime) -> Self {
        let year = if u8::from(date_time.month()) >= 9 {
            date_time.year()
        } else {
            date_time.year() - 1
        };
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        Self {
            document_name: DOCUMENT_NAME.into(),
            version: CURRENT_VERSION.into(),
            date_time: date_time.format(&format).unwrap_or_default(),
            document_qualifier: "partial".into(),
            data_qualifier: String::new(),
            data_descriptor: String::new(),
            supplier_id: SUPPLIER_ID.into(),
            source: SourceSchool {
                laestab: source,
                urn: String::new(),
                name: String::new(),
                academic_year: year.to_string(),
            },
            dest: DestSchool {
                destination: dest,
                urn: String::new(),
            },
        }
    }

    /// The major CTF version (25 for "25.0"), when the version is numeric.
    pub fn version_number(&self) -> Option<u32> {
        let version = self.version.trim();
        let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric(major) && numeric(minor) {
            major.parse().ok()
        } else {
            None
        }
    }
}

/// One pupil read from a CTF: its exact XML, what Baton understood of it, and
/// what is wrong with it.
#[derive(Clone)]
pub struct CtfPupil {
    /// 1-based position of the pupil in the file.
    pub position: usize,
    /// Line on which the `<Pupil>` element starts.
    pub line: usize,
    /// The `<Pupil>…</Pupil>` element exactly as it appeared in the input,
    /// from `<` to `>`, with its inner whitespace and any element Baton does
    /// not understand.
    pub raw_xml: String,
    /// The fields Baton maps onto a transition record.
    pub record: TransitionRecord,
    /// What is wrong with the pupil: what reading found, and, once
    /// [`CtfPupil::check`] has run, every value the record check refuses.
    /// Empty after `check` when the pupil may be sent.
    pub problems: Vec<CtfProblem>,
    /// Where each record field was read from, for [`CtfPupil::check`].
    places: mapping::Places,
    /// The day the pupil left, from the latest
    /// `SchoolHistory/School/LeavingDate`, when the MIS wrote one.
    pub left: Option<time::Date>,
}

/// Redacted: the raw XML and the record are about a child.
impl fmt::Debug for CtfPupil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtfPupil")
            .field("position", &self.position)
            .field("line", &self.line)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

/// One problem with one element of one pupil. The message never repeats the
/// element's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtfProblem {
    /// 1-based position of the pupil in the file.
    pub pupil: usize,
    /// Line of the element (of the `<Pupil>` when the element is missing).
    pub line: usize,
    /// Element path inside `<Pupil>`, e.g. `UPN` or `BasicDetails/FormerUPN`.
    pub element: String,
    /// What is wrong, and what is expected.
    pub problem: String,
}

impl fmt::Display for CtfProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pupil {}, line {}, element {}: {}",
            self.pupil, self.line, self.element, self.problem
        )
    }
}

/// One problem with the CTF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProblem {
    /// Line of the element (of `<Header>` when the element is missing).
    pub line: usize,
    /// Element path inside `<Header>`, e.g. `SourceSchool/LEA+Estab`.
    pub element: String,
    /// What is wrong, and what is expected.
    pub problem: String,
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, element {}: {}",
            self.line, self.element, self.problem
        )
    }
}

/// Why a CTF could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtfError {
    /// The input is not well-formed XML (or could not be read).
    #[error("line {line}: not well-formed XML: {message}")]
    Xml {
        /// Line where the parser stopped.
        line: usize,
        /// The parser's description (element names, never text content).
        message: String,
    },
    /// An entity reference other than the five XML ones or a character
    /// reference.
    #[error(
        "line {line}: unknown entity reference; only &amp; &lt; &gt; &quot; &apos; and &#…; are allowed"
    )]
    UnknownEntity {
        /// Line of the reference.
        line: usize,
    },
    /// The root element is not `<CTfile>`.
    #[error("not a CTF: the root element is <{found}>, expected <CTfile>")]
    NotCtf {
        /// The root element's name.
        found: String,
    },
    /// No `<Header>` before `<CTFpupilData>` (or none at all).
    #[error("not a CTF: no <Header> before the pupil data")]
    MissingHeader,
    /// The header is present but unusable.
    #[error("invalid CTF header: {}", join(.0))]
    Header(Vec<HeaderProblem>),
    /// A pupil element is not valid UTF-8.
    #[error("pupil {pupil} (line {line}) is not valid UTF-8")]
    NotUtf8 {
        /// 1-based position of the pupil.
        pupil: usize,
        /// Line on which the pupil starts.
        line: usize,
    },
    /// A string given as a pupil's XML is not one `<Pupil>` element.
    #[error("pupil {pupil}: the XML given is not one <Pupil> element")]
    NotAPupil {
        /// 1-based position of the pupil among those given.
        pupil: usize,
    },
    /// Writing the output failed.
    #[error("writing the CTF failed")]
    Write(#[from] std::io::Error),
}

fn join(problems: &[HeaderProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The file name S2S and MIS expect: `<src>_CTF_<dest>_<nnn>.xml`, with `n`
/// zero-padded to three digits.
pub fn file_name(src: Laestab, dest: Laestab, n: u32) -> String {
    file_name_for(src, Destination::School(dest), n)
}

/// [`file_name`] for any destination, including `XXXXXXX` and `MMMMMMM`.
pub fn file_name_for(src: Laestab, dest: Destination, n: u32) -> String {
    format!("{src}_CTF_{}_{n:03}.xml", dest.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attendance, Ks2Results};
    use proptest::prelude::*;

    const SAMPLE: &[u8] = include_bytes!("../../tests/data/ctf/8612001_CTF_8614001_001.xml");
    const SAMPLE_UNKNOWN: &[u8] =
        include_bytes!("../../tests/data/ctf/8612001_CTF_XXXXXXX_001.xml");

    fn laestab(s: &str) -> Laestab {
        Laestab::parse(s).unwrap()
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_name(laestab("8612001"), laestab("8614001"), 1),
            "8612001_CTF_8614001_001.xml"
        );
        assert_eq!(
            file_name_for(laestab("8612001"), Destination::Unknown, 12),
            "8612001_CTF_XXXXXXX_012.xml"
        );
        assert_eq!(
            file_name_for(laestab("8612001"), Destination::AbroadOrIndependent, 1000),
            "8612001_CTF_MMMMMMM_1000.xml"
        );
    }

    #[test]
    fn new_header_picks_the_academic_year() {
        let h = CtfHeader::new(
            laestab("8612001"),
            Destination::Unknown,
            time::macros::datetime!(2026-07-17 15:04:05),
        );
        assert_eq!(h.source.academic_year, "2025");
        assert_eq!(h.date_time, "2026-07-17T15:04:05");
        assert_eq!(h.version_number(), Some(25));
        let h = CtfHeader::new(
            laestab("8612001"),
            Destination::Unknown,
            time::macros::datetime!(2026-09-01 08:00:00),
        );
        assert_eq!(h.source.academic_year, "2026");
    }

    /// Parse a CTF, write it for the same destination, re-parse: every
    /// pupil's XML is byte-identical and maps to the same record.
    #[test]
    fn round_trip_keeps_every_pupil_byte_for_byte() {
        for sample in [SAMPLE, SAMPLE_UNKNOWN] {
            let first = parse_all(sample).unwrap();
            let mut out = Vec::new();
            write_ctf(
                &mut out,
                &first.header,
                first.pupils.iter().map(|p| p.raw_xml.as_str()),
            )
            .unwrap();
            let second = parse_all(&out).unwrap();
            assert_eq!(second.header.dest, first.header.dest);
            assert_eq!(second.header.source, first.header.source);
            assert_eq!(second.header.supplier_id, SUPPLIER_ID);
            assert_eq!(second.pupils.len(), first.pupils.len());
            for (a, b) in first.pupils.iter().zip(&second.pupils) {
                assert_eq!(a.raw_xml, b.raw_xml);
                assert!(a.record == b.record);
                assert_eq!(a.position, b.position);
            }
        }
    }

    #[test]
    fn the_sample_writes_back_identically() {
        // The sample was written with the same layout as the writer, so the
        // whole file (apart from the header) comes back unchanged.
        let first = parse_all(SAMPLE).unwrap();
        let text = std::str::from_utf8(SAMPLE).unwrap();
        let mut out = Vec::new();
        write_ctf(
            &mut out,
            &first.header,
            first.pupils.iter().map(|p| p.raw_xml.as_str()),
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let body = |s: &str| s[s.find("<CTFpupilData>").unwrap()..].to_string();
        assert_eq!(body(&out), body(text));
    }

    fn name() -> impl Strategy<Value = String> {
        // Letters with diacritics, apostrophes, ampersands, angle brackets,
        // quotes and inner spaces; no surrounding whitespace (the reader
        // trims values).
        "[A-Za-zÀ-ÿŁłŒœ'&<>\"\\-]([A-Za-zÀ-ÿ'&<>\" \\-]{0,20}[A-Za-zéë'&<>\"])?"
    }

    fn optional_name() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name()]
    }

    fn code() -> impl Strategy<Value = String> {
        "[A-Z]{3,4}"
    }

    prop_compose! {
        fn attendance()(year in prop_oneof![Just(0u32), 2000u32..2100],
                        possible in 0u32..400, attended in 0u32..400,
                        authorised in 0u32..50, unauthorised in 0u32..50) -> Attendance {
            Attendance { year, possible, attended, authorised, unauthorised }
        }
    }

    prop_compose! {
        fn ks2()(reading in proptest::option::of(80u32..=120),
                 maths in proptest::option::of(80u32..=120),
                 gps in proptest::option::of(80u32..=120),
                 writing_ta in prop_oneof![Just(String::new()), Just("WTS".to_string()),
                                           Just("EXS".to_string()), Just("GDS".to_string())],
                 mtc in proptest::option::of(0u32..=25)) -> Ks2Results {
            Ks2Results { reading, maths, gps, writing_ta, mtc }
        }
    }

    prop_compose! {
        fn record()(surname in name(), forename in name(), middle_names in optional_name(),
                    preferred_forename in optional_name(),
                    upn in "[A-Z][0-9]{12}", former_upn in prop_oneof![Just(String::new()), "[A-Z][0-9]{11}[0-9A-Z]"],
                    dob in "20[01][0-9]-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
                    sex in prop_oneof![Just("M"), Just("F"), Just("U")],
                    ethnicity in prop_oneof![Just(String::new()), code()],
                    first_language in prop_oneof![Just(String::new()), code()],
                    fsm in any::<bool>(), medical_flag in any::<bool>(),
                    sen_provision in prop_oneof![Just("N"), Just("K"), Just("E")],
                    sen_needs in proptest::collection::vec(code(), 0..3),
                    attendance in proptest::option::of(attendance()),
                    ks2 in proptest::option::of(ks2())) -> TransitionRecord {
            TransitionRecord {
                upn, former_upn, surname, forename, middle_names, preferred_forename, dob,
                sex: sex.into(), ethnicity, first_language, fsm, medical_flag,
                sen_provision: sen_provision.into(), sen_needs, attendance, ks2,
                ..Default::default()
            }
        }
    }

    proptest! {
        #[test]
        fn generated_records_survive_write_and_read(records in proptest::collection::vec(record(), 1..5)) {
            let header = CtfHeader::new(laestab("8612001"), Destination::School(laestab("8614001")),
                time::macros::datetime!(2026-07-17 15:04:05));
            let pupils: Vec<String> = records.iter().map(pupil_xml_from_record).collect();
            let mut out = Vec::new();
            write_ctf(&mut out, &header, pupils.iter().map(String::as_str)).unwrap();
            let parsed = parse_all(&out).unwrap();
            prop_assert_eq!(parsed.pupils.len(), records.len());
            for ((record, xml), pupil) in records.iter().zip(&pupils).zip(&parsed.pupils) {
                prop_assert_eq!(&pupil.raw_xml, xml);
                prop_assert_eq!(record.to_json(), pupil.record.to_json());
            }
        }
    }
}
