//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz entry
//! points, plus a bounded smoke run of deterministic mutations of every seed
//! (byte flips, truncations, insertions, splices), so every CI run exercises
//! the readers that face untrusted input. Long coverage-guided runs use
//! `cargo fuzz` (see fuzz/README.md).

use std::path::Path;

/// Mutations tried per seed file.
const MUTATIONS: usize = 2000;

type Target = fn(&[u8]);

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(rng.below(data.len() + 1)),
            2 => {
                let i = rng.below(data.len() + 1);
                let byte = [b'<', b'>', b'"', b',', b'\n', 0, 0xff, b'&'][rng.below(8)];
                data.insert(i, byte);
            }
            3 if !other.is_empty() => {
                let i = rng.below(data.len() + 1);
                let j = rng.below(other.len());
                data.splice(
                    i..i,
                    other[j..(j + 1 + rng.below(64)).min(other.len())]
                        .iter()
                        .copied(),
                );
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                let end = (i + rng.below(32)).min(data.len());
                data.drain(i..end);
            }
            _ => {}
        }
    }
    data
}

fn replay(target: &str, run: Target) {
    let seeds = seeds(target);
    let mut rng = Rng(0x5eed_u64 ^ (target.len() as u64 * 0x9e37_79b9));
    let mut execs = 0;
    for (i, seed) in seeds.iter().enumerate() {
        run(seed);
        let other = &seeds[(i + 1) % seeds.len()];
        for _ in 0..MUTATIONS {
            run(&mutate(seed, other, &mut rng));
            execs += 1;
        }
    }
    println!(
        "{target}: {} seeds, {execs} mutated inputs, no panic",
        seeds.len()
    );
}

#[test]
fn upn() {
    replay("upn", baton::fuzz::upn);
}

#[test]
fn record_json() {
    replay("record_json", baton::fuzz::record_json);
}

#[test]
fn ctf() {
    replay("ctf", baton::fuzz::ctf);
}

#[test]
fn csv() {
    replay("csv", baton::fuzz::csv);
}

#[test]
fn header() {
    replay("header", baton::fuzz::header);
}

#[test]
fn open_pack() {
    replay("open_pack", baton::fuzz::open_pack);
}
