//! Benchmark: reading and splitting a local authority's 5,000-pupil CTF.
//! Generates the file (every pupil a full CTF 25 element with SEN,
//! attendance and KS2 results), then streams it through the reader, and
//! prints the time and the process's peak memory against the file's size.
//!
//! `cargo bench --bench ctf` (release build).

use std::time::Instant;

use baton::Laestab;
use baton::ctf::{CtfHeader, CtfReader, pupil_xml_from_record, write_ctf};
use baton::record::{Attendance, Ks2Results, TransitionRecord};

const PUPILS: u32 = 5_000;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = Laestab::parse("8612001")?;
    let dest = baton::Destination::School(Laestab::parse("8614001")?);
    let header = CtfHeader::new(source, dest, time::macros::datetime!(2026-07-17 15:04:05));
    let pupils = (0..PUPILS).map(|i| {
        let body = format!("86120012{}{:03}", i / 1000, i % 1000);
        let upn = format!(
            "{}{body}",
            char::from(baton::upn::check_letter(body.as_bytes()))
        );
        pupil_xml_from_record(&TransitionRecord {
            upn,
            surname: format!("Mac Giolla Phádraig-{i}"),
            forename: "Zoë".into(),
            middle_names: "Rose Anne".into(),
            dob: "2015-03-04".into(),
            sex: "F".into(),
            ethnicity: "WIRI".into(),
            first_language: "ENG".into(),
            sen_provision: "K".into(),
            sen_needs: vec!["ASD".into(), "SLCN".into()],
            attendance: Some(Attendance {
                year: 2025,
                possible: 380,
                attended: 367,
                authorised: 4,
                unauthorised: 9,
            }),
            ks2: Some(Ks2Results {
                reading: Some(104),
                maths: Some(99),
                gps: Some(110),
                writing_ta: "EXS".into(),
                mtc: Some(20),
            }),
            ..Default::default()
        })
    });
    let dir = std::env::temp_dir().join(format!("baton-bench-ctf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("8612001_CTF_8614001_001.xml");
    write_ctf(
        std::io::BufWriter::new(std::fs::File::create(&path)?),
        &header,
        pupils,
    )?;
    let size = std::fs::metadata(&path)?.len();
    let before = peak_rss_kib();

    let started = Instant::now();
    let reader = CtfReader::new(std::io::BufReader::new(std::fs::File::open(&path)?))?;
    let (mut count, mut bytes, mut problems) = (0u32, 0usize, 0usize);
    for pupil in reader {
        let pupil = pupil?;
        count += 1;
        bytes += pupil.raw_xml.len();
        problems += pupil.problems.len();
    }
    let elapsed = started.elapsed();
    let after = peak_rss_kib();
    std::fs::remove_dir_all(&dir)?;

    assert_eq!((count, problems), (PUPILS, 0));
    println!(
        "ctf: {PUPILS} pupils, file {:.1} MB, {} bytes of <Pupil> elements",
        size as f64 / 1e6,
        bytes
    );
    println!(
        "ctf: parsed and split in {:.0} ms ({:.0} pupils/s, {:.0} MB/s)",
        elapsed.as_secs_f64() * 1e3,
        f64::from(PUPILS) / elapsed.as_secs_f64(),
        size as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!(
        "ctf: peak RSS {} KiB before reading, {} KiB after (growth {} KiB = {:.2}x the file)",
        before,
        after,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 * 1024.0 / size as f64
    );
    Ok(())
}
