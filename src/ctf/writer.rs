//! Writing a CTF: a header rebuilt for the destination, then each pupil's
//! `<Pupil>` element exactly as given (from a received CTF, or made by
//! [`pupil_xml_from_record`] for a record that came from a spreadsheet).
//!
//! Pupil XML is inserted after four spaces of indentation and never
//! re-encoded: the bytes a reader extracted are the bytes written.

use std::io::Write;

use quick_xml::escape::partial_escape;

use super::{CtfError, CtfHeader, DOCUMENT_NAME, SUPPLIER_ID};
use crate::laestab::Destination;
use crate::record::TransitionRecord;

/// Writes a whole CTF: XML declaration, `<CTfile>`, the header for
/// `header.dest`, and `pupils` inside `<CTFpupilData>`, each unchanged.
///
/// `DocumentName` is always "Common Transfer File", `SupplierID` always
/// [`SUPPLIER_ID`]; an empty `DocumentQualifier` is written as "partial".
/// Each pupil must be one `<Pupil>` element (checked only at its ends, so
/// that nothing is re-parsed or re-encoded).
pub fn write_ctf<W, I>(mut w: W, header: &CtfHeader, pupils: I) -> Result<(), CtfError>
where
    W: Write,
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CTfile>\n")?;
    write_header(&mut w, header)?;
    w.write_all(b"  <CTFpupilData>\n")?;
    for (index, pupil) in pupils.into_iter().enumerate() {
        let pupil = pupil.as_ref();
        let is_element = pupil.starts_with("<Pupil")
            && (pupil.ends_with("</Pupil>") || pupil.ends_with("/>"))
            && pupil[6..].starts_with(['>', '/', ' ', '\t', '\r', '\n']);
        if !is_element {
            return Err(CtfError::NotAPupil { pupil: index + 1 });
        }
        w.write_all(b"    ")?;
        w.write_all(pupil.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.write_all(b"  </CTFpupilData>\n</CTfile>\n")?;
    w.flush()?;
    Ok(())
}

fn write_header<W: Write>(w: &mut W, h: &CtfHeader) -> Result<(), CtfError> {
    let qualifier = match h.document_qualifier.trim() {
        "" => "partial",
        q => q,
    };
    let mut x = Xml::new(2);
    x.open("Header");
    x.leaf("DocumentName", DOCUMENT_NAME);
    x.leaf("CTFversion", &h.version);
    x.leaf("DateTime", &h.date_time);
    x.leaf("DocumentQualifier", qualifier);
    x.optional("DataQualifier", &h.data_qualifier);
    x.optional("DataDescriptor", &h.data_descriptor);
    x.leaf("SupplierID", SUPPLIER_ID);
    x.open("SourceSchool");
    x.leaf("LEA", h.source.laestab.la_code());
    x.leaf("Estab", h.source.laestab.estab());
    x.optional("URN", &h.source.urn);
    x.optional("SchoolName", &h.source.name);
    x.optional("AcademicYear", &h.source.academic_year);
    x.close("SourceSchool");
    x.open("DestSchool");
    let (lea, estab) = match &h.dest.destination {
        Destination::School(l) => (l.la_code(), l.estab()),
        Destination::Unknown => ("XXX", "XXXX"),
        Destination::AbroadOrIndependent => ("MMM", "MMMM"),
    };
    x.leaf("LEA", lea);
    x.leaf("Estab", estab);
    x.optional("URN", &h.dest.urn);
    x.close("DestSchool");
    x.close("Header");
    w.write_all(x.out.as_bytes())?;
    Ok(())
}

/// A `<Pupil>` element for a record that did not come from a CTF, laid out
/// like the samples (to sit at four spaces of indentation). The reader maps
/// it back to an equal record, with these limits: values are trimmed; an
/// empty `sen_provision` reads back as `N`; the record has no dates for FSM
/// or SEN periods, nor a year for KS2 results, so none are written.
pub fn pupil_xml_from_record(r: &TransitionRecord) -> String {
    let mut x = Xml::new(4);
    x.open("Pupil");
    x.leaf("UPN", &r.upn);
    x.leaf("Surname", &r.surname);
    x.leaf("Forename", &r.forename);
    x.leaf("DOB", &r.dob);
    x.leaf("Sex", &r.sex);
    x.open("BasicDetails");
    x.optional("FormerUPN", &r.former_upn);
    x.optional("PreferredForename", &r.preferred_forename);
    x.optional("MiddleNames", &r.middle_names);
    x.optional("Ethnicity", &r.ethnicity);
    if !r.first_language.is_empty() {
        x.open("Languages");
        x.open("Type");
        x.leaf("LanguageType", "F");
        x.leaf("Language", &r.first_language);
        x.close("Type");
        x.close("Languages");
    }
    x.leaf("MedicalFlag", if r.medical_flag { "true" } else { "false" });
    x.close("BasicDetails");
    if r.fsm {
        // A period with no end date is a current one.
        x.open("FSMhistory");
        x.open("FSMinstance");
        x.leaf("UKcountry", "ENG");
        x.close("FSMinstance");
        x.close("FSMhistory");
    }
    if !matches!(r.sen_provision.as_str(), "" | "N") || !r.sen_needs.is_empty() {
        x.open("SENhistory");
        x.open("SEN");
        x.leaf("SENprovision", &r.sen_provision);
        if !r.sen_needs.is_empty() {
            x.open("SENneeds");
            for (rank, need) in r.sen_needs.iter().enumerate() {
                x.open("SENneed");
                x.leaf("Type", need);
                x.leaf("TypeRank", &(rank + 1).to_string());
                x.close("SENneed");
            }
            x.close("SENneeds");
        }
        x.close("SEN");
        x.close("SENhistory");
    }
    if let Some(a) = &r.attendance {
        x.open("Attendance");
        x.open("YearData");
        if a.year != 0 {
            x.leaf("Year", &a.year.to_string());
        }
        x.leaf("SessionsPossible", &a.possible.to_string());
        x.leaf("SessionsAuthorised", &a.authorised.to_string());
        x.leaf("SessionsAttended", &a.attended.to_string());
        x.leaf("SessionsUnauthorised", &a.unauthorised.to_string());
        x.close("YearData");
        x.close("Attendance");
    }
    if let Some(k) = &r.ks2 {
        x.open("StageAssessments");
        x.open("KeyStage");
        x.leaf("Stage", "KS2");
        let scores = [
            ("ENG", "RD", "SS", k.reading),
            ("MAT", "MAT", "SS", k.maths),
            ("ENG", "GPS", "SS", k.gps),
        ];
        for (subject, component, qualifier, score) in scores {
            if let Some(score) = score {
                x.assessment(subject, component, qualifier, &score.to_string());
            }
        }
        if !k.writing_ta.is_empty() {
            x.assessment("ENG", "WRI", "TA", &k.writing_ta);
        }
        if let Some(mtc) = k.mtc {
            x.assessment("MAT", "MTC", "MT", &mtc.to_string());
        }
        x.close("KeyStage");
        x.close("StageAssessments");
    }
    x.close("Pupil");
    // The writer supplies the first line's indentation.
    x.out.trim().to_string()
}

/// A tiny indenting XML text builder; values are escaped, names are ours.
struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    fn new(indent: usize) -> Self {
        Self {
            out: String::new(),
            depth: indent / 2,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn open(&mut self, name: &str) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.out.push_str(&partial_escape(value));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn optional(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.leaf(name, value);
        }
    }

    fn assessment(&mut self, subject: &str, component: &str, qualifier: &str, result: &str) {
        self.open("StageAssessment");
        self.leaf("Locale", "ENG");
        self.leaf("Subject", subject);
        self.leaf("Method", "TT");
        self.leaf("Component", component);
        self.leaf("ResultStatus", "R");
        self.leaf("ResultQualifier", qualifier);
        self.leaf("Result", result);
        self.close("StageAssessment");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::{CtfPupil, parse_all};
    use crate::laestab::Laestab;

    fn header(dest: Destination) -> CtfHeader {
        let mut h = CtfHeader::new(
            Laestab::parse("8612001").unwrap(),
            dest,
            time::macros::datetime!(2026-07-17 15:04:05),
        );
        h.source.name = "St Mark's & <All> Saints".into();
        h
    }

    #[test]
    fn writes_the_header_for_the_destination() {
        let mut out = Vec::new();
        let pupils: [&str; 0] = [];
        write_ctf(&mut out, &header(Destination::AbroadOrIndependent), pupils).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<CTfile>
  <Header>
    <DocumentName>Common Transfer File</DocumentName>
    <CTFversion>25.0</CTFversion>
    <DateTime>2026-07-17T15:04:05</DateTime>
    <DocumentQualifier>partial</DocumentQualifier>
    <SupplierID>BATON</SupplierID>
    <SourceSchool>
      <LEA>861</LEA>
      <Estab>2001</Estab>
      <SchoolName>St Mark's &amp; &lt;All&gt; Saints</SchoolName>
      <AcademicYear>2025</AcademicYear>
    </SourceSchool>
    <DestSchool>
      <LEA>MMM</LEA>
      <Estab>MMMM</Estab>
    </DestSchool>
  </Header>
  <CTFpupilData>
  </CTFpupilData>
</CTfile>
"#
        );
        let back = parse_all(text.as_bytes()).unwrap();
        assert_eq!(back.header.source.name, "St Mark's & <All> Saints");
        assert_eq!(
            back.header.dest.destination,
            Destination::AbroadOrIndependent
        );
    }

    #[test]
    fn refuses_what_is_not_a_pupil() {
        for bad in ["", "<Pupils></Pupils>", "text", "<Pupil>"] {
            let err = write_ctf(Vec::new(), &header(Destination::Unknown), ["<Pupil/>", bad]);
            assert!(
                matches!(err, Err(CtfError::NotAPupil { pupil: 2 })),
                "{bad}"
            );
        }
    }

    #[test]
    fn generated_pupil_reads_back() {
        let record = crate::record::tests::valid_record();
        let xml = pupil_xml_from_record(&record);
        assert!(xml.starts_with("<Pupil>\n      <UPN>H801200001001</UPN>\n"));
        assert!(xml.contains("<Surname>O'Brien-Ní Dhónaill</Surname>"));
        assert!(xml.ends_with("\n    </Pupil>"));
        let pupil = CtfPupil::from_xml(&xml, 1).unwrap();
        assert!(pupil.problems.is_empty(), "{:?}", pupil.problems);
        let mut expected = record.clone();
        // The CTF carries neither notes nor the safeguarding flag.
        expected.notes.clear();
        assert_eq!(pupil.record.to_json(), expected.to_json());
    }
}
