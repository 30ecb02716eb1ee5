//! Reading a CTF: the header first, then one `<Pupil>` at a time.
//!
//! The input passes through a small [`BufRead`] adapter that counts lines and
//! records the bytes the XML parser consumes. While a `<Pupil>` is being
//! parsed the recording is kept, so the pupil's exact bytes come out beside
//! its parsed tree; between pupils it is cleared, so memory holds one pupil.
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

use std::io::{self, BufRead, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{CtfError, CtfHeader, CtfProblem, CtfPupil, DestSchool, HeaderProblem, SourceSchool};
use crate::laestab::{Destination, Laestab};
use crate::record::{Attendance, Ks2Results, TransitionRecord, parse_date};
use crate::upn::Upn;

/// A whole CTF in memory: what [`parse_all`] returns.
#[derive(Debug, Clone)]
pub struct Ctf {
    /// The file's header.
    pub header: CtfHeader,
    /// Every pupil, in file order.
    pub pupils: Vec<CtfPupil>,
}

/// Reads a whole CTF from memory. For large files prefer [`CtfReader`].
pub fn parse_all(input: &[u8]) -> Result<Ctf, CtfError> {
    let mut reader = CtfReader::new(input)?;
    let mut pupils = Vec::new();
    while let Some(pupil) = reader.next_pupil() {
        pupils.push(pupil?);
    }
    Ok(Ctf {
        header: reader.header,
        pupils,
    })
}

/// Streams a CTF: [`CtfReader::new`] reads and checks the header, then
/// [`CtfReader::next_pupil`] (or the iterator) yields one pupil at a time.
///
/// After an error the reader yields nothing more.
pub struct CtfReader<R: BufRead> {
    xml: Reader<Tracking<R>>,
    buf: Vec<u8>,
    header: CtfHeader,
    in_pupil_data: bool,
    position: usize,
    finished: bool,
}

impl<R: BufRead> CtfReader<R> {
    /// Reads up to the end of `<Header>` and validates it: the source must
    /// be a valid LAESTAB, the destination a LAESTAB, `XXXXXXX` or
    /// `MMMMMMM`, and the version a number such as `25.0`.
    pub fn new(input: R) -> Result<Self, CtfError> {
        let mut xml = Reader::from_reader(Tracking::new(input));
        let mut buf = Vec::new();
        let mut in_root = false;
        loop {
            buf.clear();
            let event = xml
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(&xml, e))?;
            match event {
                Event::Start(e) | Event::Empty(e) if !in_root => {
                    let name = name_of(e.local_name());
                    if name != "CTfile" {
                        return Err(CtfError::NotCtf { found: name });
                    }
                    in_root = true;
                }
                Event::Start(e) => {
                    let name = name_of(e.local_name());
                    if name == "CTFpupilData" {
                        return Err(CtfError::MissingHeader);
                    }
                    let line = xml.get_ref().line();
                    let node = read_element(&mut xml, &mut buf, name, line)?;
                    if node.name == "Header" {
                        let header = parse_header(&node)?;
                        return Ok(Self {
                            xml,
                            buf,
                            header,
                            in_pupil_data: false,
                            position: 0,
                            finished: false,
                        });
                    }
                }
                Event::Empty(_) => {}
                Event::Eof => return Err(CtfError::MissingHeader),
                _ => {}
            }
        }
    }

    /// The file's header.
    pub fn header(&self) -> &CtfHeader {
        &self.header
    }

    /// The next pupil, or `None` at the end of the file.
    pub fn next_pupil(&mut self) -> Option<Result<CtfPupil, CtfError>> {
        if self.finished {
            return None;
        }
        let result = self.read_next();
        if !matches!(result, Some(Ok(_))) {
            self.finished = true;
        }
        result
    }

    fn read_next(&mut self) -> Option<Result<CtfPupil, CtfError>> {
        loop {
            // Outside a pupil nothing recorded is worth keeping.
            self.xml.get_mut().recorded.clear();
            self.buf.clear();
            let event = match self.xml.read_event_into(&mut self.buf) {
                Ok(event) => event,
                Err(e) => return Some(Err(xml_error(&self.xml, e))),
            };
            match event {
                Event::Start(e) => {
                    let name = name_of(e.local_name());
                    if !self.in_pupil_data && name == "CTFpupilData" {
                        self.in_pupil_data = true;
                        continue;
                    }
                    let line = self.xml.get_ref().line();
                    let is_pupil = self.in_pupil_data && name == "Pupil";
                    let node = match read_element(&mut self.xml, &mut self.buf, name, line) {
                        Ok(node) => node,
                        Err(e) => return Some(Err(e)),
                    };
                    if is_pupil {
                        return Some(self.pupil(node, line));
                    }
                }
                Event::Empty(e) if self.in_pupil_data && name_of(e.local_name()) == "Pupil" => {
                    let line = self.xml.get_ref().line();
                    let node = Node::new("Pupil".into(), line);
                    return Some(self.pupil(node, line));
                }
                Event::End(e) if name_of(e.local_name()) == "CTFpupilData" => {
                    self.in_pupil_data = false;
                }
                Event::Eof => return None,
                _ => {}
            }
        }
    }

    fn pupil(&mut self, node: Node, line: usize) -> Result<CtfPupil, CtfError> {
        self.position += 1;
        let pupil = self.position;
        let recorded = std::mem::take(&mut self.xml.get_mut().recorded);
        let raw_xml = raw_element(recorded).ok_or(CtfError::NotUtf8 { pupil, line })?;
        let (record, problems) = map_pupil(&node, pupil);
        Ok(CtfPupil {
            position: pupil,
            line,
            raw_xml,
            record,
            problems,
        })
    }
}

impl<R: BufRead> Iterator for CtfReader<R> {
    type Item = Result<CtfPupil, CtfError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pupil()
    }
}

impl CtfPupil {
    /// Reads one `<Pupil>` element on its own (as stored in a pack), giving
    /// it `position`. Lines count from the start of `xml`.
    pub fn from_xml(xml: &str, position: usize) -> Result<Self, CtfError> {
        let not_a_pupil = CtfError::NotAPupil { pupil: position };
        let mut reader = Reader::from_reader(Tracking::new(xml.as_bytes()));
        let mut buf = Vec::new();
        let mut found: Option<Node> = None;
        loop {
            buf.clear();
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(&reader, e))?;
            match event {
                Event::Start(_) | Event::Empty(_) if found.is_some() => return Err(not_a_pupil),
                Event::Start(e) if name_of(e.local_name()) == "Pupil" => {
                    let line = reader.get_ref().line();
                    found = Some(read_element(&mut reader, &mut buf, "Pupil".into(), line)?);
                }
                Event::Empty(e) if name_of(e.local_name()) == "Pupil" => {
                    found = Some(Node::new("Pupil".into(), reader.get_ref().line()));
                }
                Event::Start(_) | Event::Empty(_) | Event::End(_) => return Err(not_a_pupil),
                Event::Text(t) if !t.trim().is_empty() => return Err(not_a_pupil),
                Event::Eof => break,
                _ => {}
            }
        }
        let node = found.ok_or(not_a_pupil)?;
        let (record, problems) = map_pupil(&node, position);
        let start = xml.find('<').unwrap_or(0);
        let end = xml.rfind('>').map_or(xml.len(), |i| i + 1);
        Ok(Self {
            position,
            line: node.line,
            raw_xml: xml.get(start..end).unwrap_or(xml).to_string(),
            record,
            problems,
        })
    }
}

/// The recorded bytes of an element, from its `<` on. The recording starts
/// just before the start tag's event, so at most some whitespace precedes it.
fn raw_element(mut recorded: Vec<u8>) -> Option<String> {
    let start = recorded.iter().position(|&b| b == b'<').unwrap_or(0);
    recorded.drain(..start);
    String::from_utf8(recorded).ok()
}

/// Counts lines and records what the XML parser consumes.
struct Tracking<R> {
    inner: R,
    newlines: usize,
    recorded: Vec<u8>,
}

impl<R> Tracking<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            newlines: 0,
            recorded: Vec::new(),
        }
    }

    /// The 1-based line the parser has reached.
    fn line(&self) -> usize {
        self.newlines + 1
    }
}

impl<R: BufRead> Read for Tracking<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tracking<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount > 0 {
            // The bytes being consumed are still in the inner buffer, so this
            // does no I/O.
            if let Ok(available) = self.inner.fill_buf() {
                let taken = &available[..amount.min(available.len())];
                self.newlines += taken.iter().filter(|&&b| b == b'\n').count();
                self.recorded.extend_from_slice(taken);
            }
        }
        self.inner.consume(amount);
    }
}

/// An element's name without any namespace prefix.
fn name_of(name: quick_xml::name::LocalName<'_>) -> String {
    name.as_ref().to_string()
}

fn xml_error<R>(xml: &Reader<Tracking<R>>, error: quick_xml::Error) -> CtfError {
    CtfError::Xml {
        line: xml.get_ref().line(),
        message: error.to_string(),
    }
}

/// A parsed element: small trees only (one header or one pupil).
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    line: usize,
    children: Vec<Node>,
}

impl Node {
    fn new(name: String, line: usize) -> Self {
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

    fn value(&self) -> &str {
        self.text.trim()
    }

    fn text_at(&self, path: &[&str]) -> String {
        self.at(path)
            .map(|n| n.value().to_string())
            .unwrap_or_default()
    }
}

/// Reads the rest of an element whose start tag was just read.
fn read_element<R: BufRead>(
    xml: &mut Reader<Tracking<R>>,
    buf: &mut Vec<u8>,
    name: String,
    line: usize,
) -> Result<Node, CtfError> {
    let mut stack = vec![Node::new(name, line)];
    loop {
        buf.clear();
        let event = xml.read_event_into(buf).map_err(|e| xml_error(xml, e))?;
        let line = xml.get_ref().line();
        let Some(top) = stack.last_mut() else {
            return Err(CtfError::Xml {
                line,
                message: "unbalanced elements".into(),
            });
        };
        match event {
            Event::Start(e) => stack.push(Node::new(name_of(e.local_name()), line)),
            Event::Empty(e) => top.children.push(Node::new(name_of(e.local_name()), line)),
            Event::Text(t) => top.text.push_str(&t.xml10_content()),
            Event::CData(c) => top.text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => top.text.push(c),
                        _ => return Err(CtfError::UnknownEntity { line }),
                    }
                } else {
                    match quick_xml::escape::resolve_predefined_entity(&r) {
                        Some(s) => top.text.push_str(s),
                        None => return Err(CtfError::UnknownEntity { line }),
                    }
                }
            }
            Event::End(_) => {
                let done = stack.pop().unwrap_or_default();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Eof => {
                return Err(CtfError::Xml {
                    line,
                    message: "the file ends inside an element".into(),
                });
            }
            _ => {}
        }
    }
}

fn parse_header(node: &Node) -> Result<CtfHeader, CtfError> {
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

fn map_pupil(pupil: &Node, position: usize) -> (TransitionRecord, Vec<CtfProblem>) {
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

    let mut record = TransitionRecord {
        upn: pupil.text_at(&["UPN"]),
        former_upn: basic("FormerUPN"),
        surname: pupil.text_at(&["Surname"]),
        forename: pupil.text_at(&["Forename"]),
        middle_names: basic("MiddleNames"),
        preferred_forename: basic("PreferredForename"),
        dob: pupil.text_at(&["DOB"]),
        sex: match pupil.child("Sex") {
            Some(sex) => sex.value().to_string(),
            None => pupil.text_at(&["Gender"]),
        },
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
    if !record.dob.is_empty() && parse_date(&record.dob).is_none() {
        bad(
            "DOB",
            line_of(&["DOB"]),
            "not a date in the form YYYY-MM-DD".into(),
        );
    }

    if let Some(languages) = pupil.at(&["BasicDetails", "Languages"]) {
        record.first_language = languages
            .all("Type")
            .find(|t| t.text_at(&["LanguageType"]).eq_ignore_ascii_case("F"))
            .map(|t| t.text_at(&["Language"]))
            .unwrap_or_default();
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

    record.ks2 = ks2(pupil);
    (record, problems)
}

fn ks2(pupil: &Node) -> Option<Ks2Results> {
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
            match a.text_at(&["Component"]).to_ascii_uppercase().as_str() {
                "RD" => out.reading = score,
                "MAT" => out.maths = score,
                "GPS" => out.gps = score,
                "WRI" => out.writing_ta = result,
                "MTC" => out.mtc = score,
                _ => {}
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../tests/data/ctf/8612001_CTF_8614001_001.xml");
    const SAMPLE_UNKNOWN: &[u8] =
        include_bytes!("../../tests/data/ctf/8612001_CTF_XXXXXXX_001.xml");

    fn ctf(version: &str, dest: (&str, &str), pupils: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <DocumentName>Common Transfer File</DocumentName>
    <CTFversion>{version}</CTFversion>
    <DateTime>2021-07-01T10:00:00</DateTime>
    <DocumentQualifier>partial</DocumentQualifier>
    <SourceSchool>
      <LEA>861</LEA>
      <Estab>2001</Estab>
      <SchoolName>St Mark&apos;s &amp; All Saints</SchoolName>
      <AcademicYear>2020</AcademicYear>
    </SourceSchool>
    <DestSchool>
      <LEA>{}</LEA>
      <Estab>{}</Estab>
    </DestSchool>
  </Header>
  <CTFpupilData>
{pupils}
  </CTFpupilData>
</CTfile>
"#,
            dest.0, dest.1
        )
    }

    const GENDER_PUPIL: &str = "    <Pupil>
      <UPN>H801200001001</UPN>
      <Surname>O&apos;Brien &amp; Ní Dhónaill</Surname>
      <Forename>Zoë</Forename>
      <DOB>2010-01-12</DOB>
      <Gender>F</Gender>
      <NewElement2030 attr=\"x\"><Deep>kept &#x263A;</Deep></NewElement2030>
    </Pupil>";

    #[test]
    fn maps_the_sample_pupils() {
        let ctf = parse_all(SAMPLE).unwrap();
        let h = &ctf.header;
        assert_eq!(h.version, "25.0");
        assert_eq!(h.version_number(), Some(25));
        assert_eq!(h.source.laestab.as_str(), "8612001");
        assert_eq!(h.source.name, "Abbey Hulton Primary School");
        assert_eq!(h.source.academic_year, "2025");
        assert_eq!(h.supplier_id, "FIXTURE");
        assert_eq!(h.document_qualifier, "full");
        assert_eq!(
            h.dest.destination,
            Destination::School(Laestab::parse("8614001").unwrap())
        );
        assert_eq!(ctf.pupils.len(), 9);

        let first = &ctf.pupils[0];
        assert_eq!((first.position, first.line), (1, 21));
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        let r = &first.record;
        assert_eq!(r.upn, "L861200119003");
        assert_eq!(r.surname, "Mac Giolla Phádraig");
        assert_eq!(r.forename, "Freya");
        assert_eq!(r.middle_names, "Rose");
        assert_eq!(r.preferred_forename, "");
        assert_eq!(r.dob, "2015-07-28");
        assert_eq!(r.sex, "M");
        assert_eq!(r.ethnicity, "AIND");
        assert_eq!(r.first_language, "PAN");
        assert!(r.medical_flag);
        assert!(!r.fsm);
        assert_eq!(r.sen_provision, "E");
        assert_eq!(r.sen_needs, ["ASD", "SLCN"]);
        assert_eq!(
            r.attendance,
            Some(Attendance {
                year: 2025,
                possible: 380,
                attended: 364,
                authorised: 16,
                unauthorised: 0
            })
        );
        assert_eq!(
            r.ks2,
            Some(Ks2Results {
                reading: Some(118),
                maths: Some(97),
                gps: Some(99),
                writing_ta: "GDS".into(),
                mtc: Some(6)
            })
        );
        assert!(
            first
                .raw_xml
                .starts_with("<Pupil>\n      <UPN>L861200119003</UPN>")
        );
        assert!(first.raw_xml.ends_with("</StageAssessments>\n    </Pupil>"));

        let second = &ctf.pupils[1].record;
        assert_eq!(second.preferred_forename, "Gra");
        assert_eq!(second.sen_provision, "N");
        assert!(second.sen_needs.is_empty());
        // Pupil 6 has a current FSM period.
        assert!(ctf.pupils[5].record.fsm);
    }

    #[test]
    fn raw_pupils_are_the_exact_input_bytes() {
        let text = std::str::from_utf8(SAMPLE).unwrap();
        let ctf = parse_all(SAMPLE).unwrap();
        let mut rest = text;
        for pupil in &ctf.pupils {
            let at = rest.find(&pupil.raw_xml).unwrap();
            assert!(rest[..at].trim().is_empty() || rest[..at].contains("<CTFpupilData>"));
            rest = &rest[at + pupil.raw_xml.len()..];
        }
        assert_eq!(rest.trim(), "</CTFpupilData>\n</CTfile>");
    }

    #[test]
    fn streams_from_a_bufread_with_a_tiny_buffer() {
        let reader = std::io::BufReader::with_capacity(7, SAMPLE);
        let mut ctf = CtfReader::new(reader).unwrap();
        assert_eq!(ctf.header().source.laestab.as_str(), "8612001");
        let streamed: Vec<CtfPupil> = ctf.by_ref().map(Result::unwrap).collect();
        let whole = parse_all(SAMPLE).unwrap();
        assert_eq!(streamed.len(), whole.pupils.len());
        for (a, b) in streamed.iter().zip(&whole.pupils) {
            assert_eq!(a.raw_xml, b.raw_xml);
            assert_eq!(a.line, b.line);
        }
        assert!(ctf.next_pupil().is_none());
    }

    #[test]
    fn special_destinations() {
        let ctf = parse_all(SAMPLE_UNKNOWN).unwrap();
        assert_eq!(ctf.header.dest.destination, Destination::Unknown);
        for (lea, estab, want) in [
            ("XXX", "XXXX", Destination::Unknown),
            ("XXX", "", Destination::Unknown),
            ("MMM", "MMMM", Destination::AbroadOrIndependent),
            ("mmm", "", Destination::AbroadOrIndependent),
            ("MMMMMMM", "", Destination::AbroadOrIndependent),
            (
                "861",
                "4001",
                Destination::School(Laestab::parse("8614001").unwrap()),
            ),
        ] {
            let text = ctf_text("25.0", (lea, estab));
            let got = CtfReader::new(text.as_bytes()).unwrap();
            assert_eq!(got.header().dest.destination, want, "{lea} {estab}");
        }
    }

    fn ctf_text(version: &str, dest: (&str, &str)) -> String {
        ctf(version, dest, GENDER_PUPIL)
    }

    #[test]
    fn old_and_new_versions_and_gender() {
        for version in ["20.0", "26.0", "24"] {
            let text = ctf_text(version, ("861", "4001"));
            let parsed = parse_all(text.as_bytes()).unwrap();
            assert_eq!(parsed.header.version, version);
            assert_eq!(parsed.header.source.name, "St Mark's & All Saints");
            let pupil = &parsed.pupils[0];
            assert!(pupil.problems.is_empty(), "{:?}", pupil.problems);
            assert_eq!(pupil.record.sex, "F");
            assert_eq!(pupil.record.surname, "O'Brien & Ní Dhónaill");
            assert_eq!(pupil.record.forename, "Zoë");
            // Unknown elements stay in the raw XML, entities unexpanded.
            assert_eq!(pupil.raw_xml, GENDER_PUPIL.trim_start());
            assert!(pupil.raw_xml.contains(
                "<NewElement2030 attr=\"x\"><Deep>kept &#x263A;</Deep></NewElement2030>"
            ));
        }
    }

    #[test]
    fn bad_headers_are_reported_together() {
        let text =
            ctf_text("twenty-five", ("86", "4001")).replace("<LEA>861</LEA>", "<LEA>8A1</LEA>");
        let Err(CtfError::Header(problems)) = CtfReader::new(text.as_bytes()) else {
            panic!("expected header problems");
        };
        let elements: Vec<&str> = problems.iter().map(|p| p.element.as_str()).collect();
        assert_eq!(
            elements,
            [
                "CTFversion",
                "SourceSchool/LEA+Estab",
                "DestSchool/LEA+Estab"
            ]
        );
        assert_eq!(problems[0].line, 5);
        let text = ctf_text("", ("861", "4001"));
        let err = CtfReader::new(text.as_bytes()).err().unwrap().to_string();
        assert_eq!(
            err,
            "invalid CTF header: line 5, element CTFversion: required"
        );
    }

    #[test]
    fn not_a_ctf() {
        let err = CtfReader::new(&b"<Other/>"[..]).err().unwrap();
        assert!(matches!(err, CtfError::NotCtf { .. }), "{err}");
        let err = CtfReader::new(&b"<CTfile><CTFpupilData/></CTfile>"[..])
            .err()
            .unwrap();
        assert!(matches!(err, CtfError::MissingHeader), "{err}");
        let err = CtfReader::new(&b"<CTfile><Header>"[..]).err().unwrap();
        assert!(matches!(err, CtfError::Xml { .. }), "{err}");
    }

    #[test]
    fn broken_xml_stops_the_stream_with_a_line() {
        let text = ctf_text("25.0", ("861", "4001")).replace("</Forename>", "</Surname>");
        let mut reader = CtfReader::new(text.as_bytes()).unwrap();
        let err = reader.next_pupil().unwrap().err().unwrap();
        let CtfError::Xml { line, .. } = err else {
            panic!("{err}");
        };
        assert_eq!(line, 23);
        assert!(reader.next_pupil().is_none());
    }

    #[test]
    fn pupil_problems_name_position_element_and_line_only() {
        let pupils = "    <Pupil>
      <UPN>H801200001001</UPN>
      <Surname>Fine</Surname>
      <Forename>Pupil</Forename>
      <DOB>2015-01-01</DOB>
      <Sex>M</Sex>
    </Pupil>
    <Pupil>
      <UPN>Z801200001001</UPN>
      <Forename>Secretname</Forename>
      <DOB>12/01/2015</DOB>
      <Sex>F</Sex>
      <BasicDetails>
        <FormerUPN>nonsense</FormerUPN>
        <MedicalFlag>maybe</MedicalFlag>
      </BasicDetails>
      <Attendance><YearData><Year>2025</Year><SessionsPossible>lots</SessionsPossible></YearData></Attendance>
    </Pupil>
    <Pupil/>";
        let text = ctf("25.0", ("861", "4001"), pupils);
        let parsed = parse_all(text.as_bytes()).unwrap();
        assert!(parsed.pupils[0].problems.is_empty());
        let second = &parsed.pupils[1];
        let shown: Vec<String> = second.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "pupil 2, line 27, element Surname: missing",
                "pupil 2, line 28, element UPN: check letter should be H, found Z",
                "pupil 2, line 33, element BasicDetails/FormerUPN: a UPN has 13 characters, found 8",
                "pupil 2, line 30, element DOB: not a date in the form YYYY-MM-DD",
                "pupil 2, line 34, element BasicDetails/MedicalFlag: must be true, false, 1 or 0",
                "pupil 2, line 36, element Attendance/YearData/SessionsPossible: must be a whole number",
            ]
        );
        for p in &shown {
            assert!(
                !p.contains("801200001001") && !p.contains("Secretname"),
                "{p}"
            );
            assert!(!p.contains("12/01") && !p.contains("nonsense"), "{p}");
        }
        let third = &parsed.pupils[2];
        assert_eq!(third.raw_xml, "<Pupil/>");
        assert_eq!(third.problems.len(), 4);
        assert_eq!(
            third.problems[0].to_string(),
            "pupil 3, line 38, element UPN: missing"
        );
        let debug = format!("{second:?}");
        assert!(!debug.contains("Secretname"), "{debug}");
    }

    #[test]
    fn a_pupil_alone() {
        let pupil = CtfPupil::from_xml(GENDER_PUPIL, 4).unwrap();
        assert_eq!(pupil.position, 4);
        assert_eq!(pupil.raw_xml, GENDER_PUPIL.trim_start());
        assert_eq!(pupil.record.forename, "Zoë");
        assert!(matches!(
            CtfPupil::from_xml("<Pupil/><Pupil/>", 1),
            Err(CtfError::NotAPupil { pupil: 1 })
        ));
        assert!(CtfPupil::from_xml("<Other/>", 1).is_err());
        assert!(CtfPupil::from_xml("text", 1).is_err());
    }

    #[test]
    fn latest_years_and_ranks_win() {
        let pupil = "<Pupil><UPN>H801200001001</UPN><Surname>A</Surname><Forename>B</Forename><DOB>2015-01-01</DOB><Sex>M</Sex>
  <FSMhistory>
    <FSMinstance><FSMstartDate>2020-01-01</FSMstartDate><FSMendDate>2021-01-01</FSMendDate></FSMinstance>
  </FSMhistory>
  <SENhistory>
    <SEN><StartDate>2023-09-01</StartDate><SENprovision>K</SENprovision>
      <SENneeds><SENneed><Type>MLD</Type><TypeRank>2</TypeRank></SENneed><SENneed><Type>HI</Type><TypeRank>1</TypeRank></SENneed></SENneeds></SEN>
    <SEN><StartDate>2020-09-01</StartDate><SENprovision>E</SENprovision></SEN>
  </SENhistory>
  <Attendance>
    <YearData><Year>2025</Year><SessionsPossible>300</SessionsPossible><SessionsAttended>290</SessionsAttended></YearData>
    <YearData><Year>2024</Year><SessionsPossible>380</SessionsPossible><SessionsAttended>370</SessionsAttended></YearData>
  </Attendance>
  <StageAssessments><KeyStage><Stage>KS2</Stage>
    <StageAssessment><Year>2026</Year><Component>RD</Component><Result>A</Result></StageAssessment>
    <StageAssessment><Year>2026</Year><Component>MAT</Component><Result>101</Result></StageAssessment>
    <StageAssessment><Year>2025</Year><Component>MAT</Component><Result>99</Result></StageAssessment>
  </KeyStage><KeyStage><Stage>KS1</Stage>
    <StageAssessment><Year>2022</Year><Component>RD</Component><Result>90</Result></StageAssessment>
  </KeyStage></StageAssessments>
</Pupil>";
        let r = CtfPupil::from_xml(pupil, 1).unwrap().record;
        assert!(!r.fsm);
        assert_eq!(r.sen_provision, "K");
        assert_eq!(r.sen_needs, ["HI", "MLD"]);
        let a = r.attendance.unwrap();
        assert_eq!(
            (a.year, a.possible, a.attended, a.authorised),
            (2025, 300, 290, 0)
        );
        let k = r.ks2.unwrap();
        assert_eq!((k.reading, k.maths, k.gps), (None, Some(101), None));
    }
}
