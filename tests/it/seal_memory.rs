//! Sealing and opening a 50 MB attachment streams: the process's peak memory
//! grows by far less than the pack's size. The measurement runs in a process
//! of its own (this test binary run again for that one test), so no other
//! test's allocations blur it.

use crate::common::sealing;

use std::io::{self, Read, Write};

use baton::crypto::{self, Identity, Sink};
use baton::keys::Role;
use baton::pack::{AttachmentMeta, Kind, Manifest};
use sealing::{draft, peak_rss, record, school_key};

const SIZE: u64 = 50 * 1024 * 1024;

/// Deterministic pseudo-random bytes, generated as they are read.
struct Generated {
    state: u64,
    left: u64,
}

impl Generated {
    fn new() -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            left: SIZE,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts what it receives and keeps nothing.
#[derive(Default)]
struct Counting(u64);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct CountingSink(Counting);

impl Sink for CountingSink {
    fn create(&mut self, _: usize, _: &AttachmentMeta) -> io::Result<Box<dyn Write + '_>> {
        Ok(Box::new(&mut self.0))
    }
}

/// Set in the child process that takes the measurement.
const ALONE: &str = "BATON_TEST_SEAL_MEMORY_ALONE";

#[test]
fn fifty_megabytes_stream_through_seal_and_open_in_flat_memory() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "seal_memory::measured_alone",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The figures, as the child printed them (after the harness's "test … ").
    for line in stdout
        .lines()
        .filter_map(|l| l.find("50 MiB:").map(|at| &l[at..]))
    {
        println!("{line}");
    }
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the measurement did not run: {stdout}"
    );
}

/// The measurement itself; run only by the test above, in its own process.
#[test]
#[ignore = "run alone, in a process of its own, by fifty_megabytes_stream_through_seal_and_open_in_flat_memory"]
fn measured_alone() {
    assert!(
        std::env::var_os(ALONE).is_some(),
        "run by fifty_megabytes_stream_through_seal_and_open_in_flat_memory, in a process of its own"
    );
    let sender = Identity::generate();
    let to = Identity::generate();
    let keys = vec![school_key(&to, &[Role::Staff])];
    let meta = AttachmentMeta::listed("big.bin", SIZE);
    let empty = AttachmentMeta::listed("empty.txt", 0);
    let mut manifest = Manifest {
        record: record(),
        ctf_pupil_xml: None,
        attachments: vec![meta, empty],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pack.age");

    let before = peak_rss();
    let started = std::time::Instant::now();
    let file = io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (header, file) = crypto::seal(
        &draft(Kind::Transfer),
        &mut manifest,
        |i| {
            Ok::<Box<dyn Read>, io::Error>(if i == 0 {
                Box::new(Generated::new())
            } else {
                Box::new(io::empty())
            })
        },
        &keys,
        &sender,
        file,
    )
    .unwrap();
    file.into_inner().unwrap().sync_all().unwrap();
    let sealed = started.elapsed();

    let started = std::time::Instant::now();
    let mut sink = CountingSink(Counting::default());
    let reader = io::BufReader::new(std::fs::File::open(&path).unwrap());
    let opened = crypto::open(&header, &[sender.public()], &to, reader, &mut sink).unwrap();
    let opened_in = started.elapsed();
    let growth = peak_rss().saturating_sub(before);

    assert!(opened == manifest);
    let expected = AttachmentMeta::describe("big.bin", &mut Generated::new()).unwrap();
    assert_eq!(manifest.attachments[0].sha256, expected.sha256);
    assert_eq!(sink.0.0, SIZE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        header.header().ciphertext_len
    );
    println!(
        "50 MiB: seal {:.0} MB/s, open {:.0} MB/s, peak RSS growth {} KiB",
        SIZE as f64 / 1e6 / sealed.as_secs_f64(),
        SIZE as f64 / 1e6 / opened_in.as_secs_f64(),
        growth / 1024
    );
    assert!(
        growth < 16 * 1024 * 1024,
        "peak RSS grew by {growth} bytes for a {SIZE}-byte pack"
    );
}
