//! CTF and CSV end to end with the real binaries: a school sends from its
//! MIS export or class spreadsheet, the secondary pulls pack folders and a
//! CTF its MIS can import, with every `<Pupil>` element exactly as the
//! sender's MIS wrote it; and every kind of bad input sends nothing.

use crate::common;

use std::path::Path;

use baton::Laestab;
use baton::ctf::{CtfHeader, CtfReader, pupil_xml_from_record, write_ctf};
use baton::record::TransitionRecord;
use common::Daemon;
use common::cli::{Home, enrol};

const SAMPLE: &[u8] = include_bytes!("../data/ctf/8612001_CTF_8614001_001.xml");

fn pupils_of(bytes: &[u8]) -> (CtfHeader, Vec<(String, TransitionRecord)>) {
    let mut reader = CtfReader::new(bytes).unwrap();
    let header = reader.header().clone();
    let pupils = reader
        .by_ref()
        .map(|p| p.unwrap())
        .map(|p| (p.raw_xml, p.record))
        .collect();
    (header, pupils)
}

async fn setup(daemon: Daemon, root: &Path) -> (Daemon, Home, Home) {
    let primary = enrol(&daemon, root, "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root, "8614001", "secondary", &["dsl", "staff"]).await;
    (daemon, primary, secondary)
}

/// A second CTF in an older shape (CTF 20, `Gender`), made from records.
fn old_style_ctf() -> Vec<u8> {
    let mut xml = Vec::new();
    let now = time::macros::datetime!(2021-07-16 10:00:00);
    let mut header = CtfHeader::new(
        Laestab::parse("8612001").unwrap(),
        baton::Destination::School(Laestab::parse("8614001").unwrap()),
        now,
    );
    header.version = "20.0".into();
    let pupils: Vec<String> = (0..3)
        .map(|i| {
            let body = format!("8612001210{i:02}");
            let upn = format!(
                "{}{body}",
                char::from(baton::upn::check_letter(body.as_bytes()))
            );
            let record = TransitionRecord {
                upn,
                surname: format!("O'Connor & Sons <{i}>"),
                forename: "Zoë".into(),
                dob: "2010-05-06".into(),
                sex: "F".into(),
                ..Default::default()
            };
            pupil_xml_from_record(&record)
                .replace("<Sex>", "<Gender>")
                .replace("</Sex>", "</Gender>")
        })
        .collect();
    write_ctf(&mut xml, &header, &pupils).unwrap();
    xml
}

async fn ctf_round_trip_keeps_every_pupil_element_byte_for_byte(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, primary, secondary) = setup(daemon, root.path()).await;
    let inputs = [
        ("8612001_CTF_8614001_001.xml", SAMPLE.to_vec()),
        ("8612001_CTF_8614001_002.xml", old_style_ctf()),
    ];
    let mut expected = Vec::new();
    for (name, bytes) in &inputs {
        let path = root.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        expected.extend(pupils_of(bytes).1);
        let out = primary.ok(&["send", "--ctf", path.to_str().unwrap()]).await;
        assert!(out.contains("failed 0"), "{out}");
    }
    let (out_dir, mis) = (root.path().join("in"), root.path().join("mis"));
    secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;

    let written: Vec<_> = std::fs::read_dir(&mis)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, ["8612001_CTF_8614001_001.xml"]);
    let (header, pupils) = pupils_of(&std::fs::read(mis.join(&written[0])).unwrap());
    assert_eq!(header.source.laestab.as_str(), "8612001");
    assert_eq!(
        header.dest.destination,
        baton::Destination::School(Laestab::parse("8614001").unwrap())
    );
    assert_eq!(header.document_name, "Common Transfer File");
    assert_eq!(pupils.len(), expected.len());
    for (raw, record) in &expected {
        let found = pupils
            .iter()
            .find(|(_, r)| r.upn == record.upn)
            .expect("every pupil is in the CTF");
        assert_eq!(&found.0, raw, "a <Pupil> element changed on the way");
        let folder = out_dir.join("8612001").join(&record.upn);
        let pulled = TransitionRecord::from_json(
            &std::fs::read_to_string(folder.join("record.json")).unwrap(),
        )
        .unwrap();
        assert!(pulled == *record);
    }
    // Issue 13: a second pull finds every pack already pulled and writes no
    // second CTF of the same pupils for the MIS to import twice.
    let again = secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;
    assert!(again.contains("already pulled"), "{again}");
    assert!(again.contains("not written again"), "{again}");
    assert!(!mis.join("8612001_CTF_8614001_002.xml").exists());
}

async fn csv_with_bom_crlf_and_quoted_notes_round_trips_field_by_field(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, primary, secondary) = setup(daemon, root.path()).await;
    let header = baton::csv::COLUMNS.join(",");
    let rows = [
        "X861200119002,,Mac Giolla Phádraig,Zoë,Rose,,2015-04-06,F,WIRI,POL,yes,no,K,HI;MLD,380,373,2,5,86,82,117,WTS,20,no,8614001,,\"Line one, with a comma\r\nline two with \"\"quotes\"\"\"",
        "L861200119003,,O'Brien,Seán,,Shay,2015-07-28,M,AIND,PAN,no,yes,E,ASD,380,364,16,0,118,97,99,GDS,6,yes,8614001,2026-07-22,Strong reader",
    ];
    let csv = format!("\u{feff}{header}\r\n{}\r\n", rows.join("\r\n"));
    let path = root.path().join("class.csv");
    std::fs::write(&path, &csv).unwrap();
    let expected =
        baton::csv::read(csv.as_bytes(), time::OffsetDateTime::now_utc().date()).unwrap();
    assert!(
        expected.iter().all(|r| r.problems.is_empty()),
        "{expected:?}"
    );
    assert!(expected[0].record.notes.contains("with \"quotes\""));

    let attachments = root.path().join("attachments");
    std::fs::create_dir_all(attachments.join("X861200119002")).unwrap();
    std::fs::write(
        attachments.join("X861200119002/one-page-profile.pdf"),
        b"%PDF profile",
    )
    .unwrap();
    let out = primary
        .ok(&[
            "send",
            "--csv",
            path.to_str().unwrap(),
            "--attachments",
            attachments.to_str().unwrap(),
        ])
        .await;
    assert!(out.contains("sent 2"), "{out}");

    let out_dir = root.path().join("in");
    let mis = root.path().join("mis");
    secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;
    for row in &expected {
        let folder = out_dir.join("8612001").join(&row.record.upn);
        let pulled = TransitionRecord::from_json(
            &std::fs::read_to_string(folder.join("record.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(pulled.to_json(), row.record.to_json());
    }
    let profile = out_dir.join("8612001/X861200119002/one-page-profile.pdf");
    assert_eq!(std::fs::read(profile).unwrap(), b"%PDF profile");
    // Packs from a spreadsheet get a generated <Pupil> that reads back as the record.
    let (_, pupils) = pupils_of(&std::fs::read(mis.join("8612001_CTF_8614001_001.xml")).unwrap());
    for (_, record) in &pupils {
        let row = expected
            .iter()
            .find(|r| r.record.upn == record.upn)
            .unwrap();
        assert_eq!(
            (&record.surname, &record.forename, &record.dob),
            (&row.record.surname, &row.record.forename, &row.record.dob)
        );
    }
}

async fn bad_inputs_are_named_and_send_nothing(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, primary, secondary) = setup(daemon, root.path()).await;
    let sample = String::from_utf8(SAMPLE.to_vec()).unwrap();
    let (_, pupils) = pupils_of(SAMPLE);
    let first_upn = pupils[0].1.upn.clone();
    let second_upn = pupils[1].1.upn.clone();
    let wrong_letter = if first_upn.starts_with('A') { "B" } else { "A" };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "check.xml",
            sample.replacen(&first_upn, &format!("{wrong_letter}{}", &first_upn[1..]), 1),
            "--ctf",
            "element UPN: check letter should be",
        ),
        (
            "nodob.xml",
            sample
                .replacen("<DOB>", "<DOBx>", 1)
                .replacen("</DOB>", "</DOBx>", 1),
            "--ctf",
            "element DOB",
        ),
        (
            "broken.xml",
            sample[..sample.len() / 2].to_string(),
            "--ctf",
            "broken.xml",
        ),
        (
            "empty.xml",
            {
                let a = sample.find("<CTFpupilData>").unwrap() + "<CTFpupilData>".len();
                let b = sample.find("</CTFpupilData>").unwrap();
                format!("{}{}", &sample[..a], &sample[b..])
            },
            "--ctf",
            "holds no pupils",
        ),
        (
            "duplicate.xml",
            sample.replacen(&second_upn, &first_upn, 1),
            "--ctf",
            "the same UPN as",
        ),
        (
            "unknown.xml",
            sample
                .replacen("<Estab>4001</Estab>", "<Estab>XXXX</Estab>", 1)
                .replacen(
                    "<LEA>861</LEA>\n      <Estab>XXXX",
                    "<LEA>XXX</LEA>\n      <Estab>XXXX",
                    1,
                ),
            "--ctf",
            "destination XXXXXXX is not a school",
        ),
        (
            "nodob.csv",
            format!(
                "{}\nH801200001001,,Smith,Ann,,,,F,,,,,,,,,,,,,,,,,8614001,\n",
                baton::csv::COLUMNS.join(",")
            ),
            "--csv",
            "line 2, column dob",
        ),
    ];
    for (name, content, flag, expected) in cases {
        let path = root.path().join(name);
        std::fs::write(&path, content).unwrap();
        for args in [
            vec!["check", path.to_str().unwrap()],
            vec!["send", flag, path.to_str().unwrap()],
        ] {
            let out = primary.baton(&args).await;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {text}");
            assert!(
                text.contains(expected),
                "{name} {args:?}: expected {expected:?} in {text}"
            );
            for (_, record) in &pupils {
                assert!(
                    !text.contains(&record.surname),
                    "{name}: a pupil's name is in the message"
                );
            }
        }
    }
    assert!(
        secondary.json(&["inbox", "--json"]).await.is_empty(),
        "nothing may have been sent"
    );
    let out = primary.ok(&["template", "csv"]).await;
    assert!(out.starts_with(&baton::csv::COLUMNS.join(",")));
}

on_both_backends!(ctf_round_trip_keeps_every_pupil_element_byte_for_byte);
on_both_backends!(csv_with_bom_crlf_and_quoted_notes_round_trips_field_by_field);
on_both_backends!(bad_inputs_are_named_and_send_nothing);

/// `baton check FILE` in a home nothing was enrolled in: exit status and
/// everything printed.
async fn check_alone(root: &Path, file: &Path) -> (Option<i32>, String) {
    let home = Home {
        dir: root.join("not-enrolled"),
    };
    let out = home.baton(&["check", file.to_str().unwrap()]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Issue 13 item 3: values the receiver's `baton check` would refuse in
/// `record.json` are refused in the CTF, each named by pupil, line and
/// element, with the rule and without the pupil's details.
#[tokio::test]
async fn ctf_sex_male_and_punctuated_ethnicity_fail_baton_check() {
    let root = tempfile::tempdir().unwrap();
    let sample = String::from_utf8(SAMPLE.to_vec()).unwrap();
    let bad = sample
        .replacen("<Sex>M</Sex>", "<Sex>Male</Sex>", 1)
        .replacen(
            "<Ethnicity>AIND</Ethnicity>",
            "<Ethnicity>A-IND</Ethnicity>",
            1,
        )
        .replacen("<DOB>2015-07-28</DOB>", "<DOB>2015-02-30</DOB>", 1);
    assert_ne!(bad, sample);
    let path = root.path().join("8612001_CTF_8614001_001.xml");
    std::fs::write(&path, &bad).unwrap();
    let (code, text) = check_alone(root.path(), &path).await;
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "pupil 1, line 26, element Sex: must be M, F or U",
        "pupil 1, line 30, element BasicDetails/Ethnicity: must be a DfE code of letters and digits",
        "pupil 1, line 25, element DOB: not a real date (check the day and the month)",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }
    for (_, record) in pupils_of(SAMPLE).1 {
        assert!(!text.contains(&record.surname), "a name is in {text}");
        assert!(!text.contains(&record.upn), "a UPN is in {text}");
    }
    // The same file as the MIS wrote it passes.
    std::fs::write(&path, &sample).unwrap();
    let (code, text) = check_alone(root.path(), &path).await;
    assert_eq!(code, Some(0), "{text}");
}

/// Issue 13 item 7: a spreadsheet saved by Excel (BOM, CRLF) with a comment
/// line and a note over several lines: each problem names the line its row
/// starts on; dates get a hint or "not a real date".
#[tokio::test]
async fn csv_line_numbers_after_multiline_note_in_baton_check() {
    let root = tempfile::tempdir().unwrap();
    let header = "upn,surname,forename,dob,sex,destination,notes";
    let csv = [
        "\u{feff}# Class 6B, exported for Baton",
        header,
        "H801200001001,Pilot,Robin,2015-03-04,F,8614001,\"one\r\ntwo, \"\"three\"\"\r\nfour\"",
        "L861200119003,Pilot,Robin,28/07/2015,F,8614001,",
        "",
        "X861200119002,Pilot,Robin,2015-02-30,F,8614001,",
        "P861200119005,Pilot,Robin,2015-03-04,Male,8614001,",
    ]
    .join("\r\n")
        + "\r\n";
    let path = root.path().join("class.csv");
    std::fs::write(&path, csv).unwrap();
    let (code, text) = check_alone(root.path(), &path).await;
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "line 6, column dob: looks like day/month/year: write dates as YYYY-MM-DD (28/07/2015 is 2015-07-28)",
        "line 8, column dob: not a real date (check the day and the month)",
        "line 9, column sex: must be M, F or U",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }
    assert!(
        !text.contains("line 3,") && !text.contains("Pilot"),
        "{text}"
    );
}
