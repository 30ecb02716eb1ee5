use super::*;
use crate::laestab::{Destination, Laestab};
use crate::record::{Attendance, Ks2Results, TransitionRecord};

const SAMPLE: &[u8] = include_bytes!("../../../tests/data/ctf/8612001_CTF_8614001_001.xml");
const SAMPLE_UNKNOWN: &[u8] = include_bytes!("../../../tests/data/ctf/8612001_CTF_XXXXXXX_001.xml");

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
        assert!(
            pupil
                .raw_xml
                .contains("<NewElement2030 attr=\"x\"><Deep>kept &#x263A;</Deep></NewElement2030>")
        );
    }
}

#[test]
fn bad_headers_are_reported_together() {
    let text = ctf_text("twenty-five", ("86", "4001")).replace("<LEA>861</LEA>", "<LEA>8A1</LEA>");
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
            "pupil 2, line 30, element DOB: looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)",
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

/// Issue 13: every mapped value is checked as strictly as `record.json`.
#[test]
fn ctf_values_are_validated_like_record_json() {
    let pupil = "    <Pupil>
  <UPN>H801200001001</UPN>
  <Surname>Smith</Surname>
  <Forename>Sam</Forename>
  <DOB>2015-02-30</DOB>
  <Sex>Male</Sex>
  <BasicDetails><Ethnicity>W-BRI</Ethnicity></BasicDetails>
</Pupil>";
    let text = ctf("25.0", ("861", "4001"), pupil);
    let mut all = parse_all(text.as_bytes()).unwrap();
    let p = &mut all.pupils[0];
    p.check(time::macros::date!(2026 - 07 - 20));
    let shown: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|s| s.contains("element DOB: not a real date (check the day and the month)")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.contains("element Sex: must be M, F or U")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.contains("element BasicDetails/Ethnicity: must be a DfE code")),
        "{shown:?}"
    );
    // The DOB is reported once, by the mapping, not again by the record check.
    assert_eq!(
        shown.iter().filter(|s| s.contains("element DOB")).count(),
        1
    );
    // No value from the file is repeated.
    assert!(
        !shown
            .iter()
            .any(|s| s.contains("Male") || s.contains("W-BRI"))
    );
}

/// Every pupil the CTF reader accepts is a record the receiver accepts:
/// through `record.json` and back with no problem.
#[test]
fn accepted_ctf_pupils_round_trip_through_record_json() {
    let today = time::macros::date!(2026 - 07 - 20);
    for input in [SAMPLE, SAMPLE_UNKNOWN] {
        for mut p in parse_all(input).unwrap().pupils {
            p.check(today);
            if !p.problems.is_empty() {
                continue;
            }
            let back = TransitionRecord::from_json(&p.record.to_json()).unwrap();
            assert!(back == p.record);
            assert!(back.problems(today).is_empty());
        }
    }
}

#[test]
fn the_leaving_date_comes_from_the_school_history() {
    let pupil = |history: &str| {
        format!(
            "<Pupil><UPN>H801200001001</UPN><Surname>A</Surname><Forename>B</Forename><DOB>2015-01-12</DOB><Gender>F</Gender>{history}</Pupil>"
        )
    };
    let history = "<SchoolHistory><School><LAESTAB>8612002</LAESTAB><EntryDate>2019-09-04</EntryDate><LeavingDate>2021-02-12</LeavingDate></School>\
        <School><LAESTAB>8612001</LAESTAB><EntryDate>2021-02-22</EntryDate><LeavingDate>2026-07-22</LeavingDate></School></SchoolHistory>";
    let text = ctf(
        "25.0",
        ("861", "4001"),
        &format!(
            "{}\n{}\n{}",
            pupil(history),
            pupil(""),
            pupil(
                "<SchoolHistory><School><LeavingDate>22/07/2026</LeavingDate></School></SchoolHistory>"
            )
        ),
    );
    let parsed = parse_all(text.as_bytes()).unwrap();
    assert_eq!(
        parsed.pupils[0].left,
        Some(time::macros::date!(2026 - 07 - 22))
    );
    assert_eq!(parsed.pupils[1].left, None);
    assert_eq!(parsed.pupils[2].left, None);
    let problem = &parsed.pupils[2].problems[0];
    assert_eq!(problem.element, "SchoolHistory/School/LeavingDate");
    assert!(problem.problem.contains("22/07/2026"), "{problem:?}");
}
