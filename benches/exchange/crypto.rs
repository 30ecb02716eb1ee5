//! Seal and open beside the reference `age` CLI.

use crate::*;

pub(crate) fn time_it(mut f: impl FnMut() -> Res<()>, min: Duration, min_iters: u32) -> Res<f64> {
    let start = Instant::now();
    let mut n = 0u32;
    while n < min_iters || start.elapsed() < min {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(n))
}

pub(crate) fn run(cmd: &mut std::process::Command) -> Res<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

pub(crate) fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn crypto(from: &School) -> Res<()> {
    println!("\n== crypto: seal and open (baton library) beside the age CLI (a process per file)");
    let dir = tempfile::tempdir()?;
    let have_age = have("age") && have("age-keygen");
    let cli_key = dir.path().join("cli.key");
    let mut cli_recipient = String::new();
    if have_age {
        run(std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&cli_key))?;
        let out = std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&cli_key)
            .output()?;
        cli_recipient = String::from_utf8(out.stdout)?.trim().to_string();
    } else {
        println!("age CLI not found: the age columns are skipped (apt-get install -y age)");
    }
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let to = Laestab::parse("8619001")?;
    println!(
        "seal = baton::crypto::seal, hashing the attachment as it seals (format 2, what `baton send` does); fmt-1 = a hashing pass for the manifest first, as format 1 needed"
    );
    println!(
        "{:>7} {:>4} | {:>10} {:>10} {:>10} | {:>10} {:>10} | {:>6} {:>7} {:>6}",
        "size",
        "rcpt",
        "seal MB/s",
        "fmt-1 MB/s",
        "open MB/s",
        "age -e MB/s",
        "age -d MB/s",
        "seal×",
        "fmt-1×",
        "open×"
    );
    for size in [20 * 1024usize, 10 * 1024 * 1024] {
        let plain = random_bytes(size);
        let plain_file = dir.path().join("plain");
        std::fs::write(&plain_file, &plain)?;
        for n in [1usize, 3] {
            let keys: Vec<SchoolKey> = ids[..n].iter().map(school_key).collect();
            let (min, iters) = if size > 1 << 20 {
                (Duration::from_secs(1), 3)
            } else {
                (Duration::from_millis(500), 50)
            };
            let mut sealed = None;
            let seal_s = time_it(
                || {
                    sealed = Some(seal_pack(from, to, &keys, 1, &plain)?);
                    Ok(())
                },
                min,
                iters,
            )?;
            let (header, ct) = sealed.ok_or("nothing sealed")?;
            let fmt1_s = time_it(
                || {
                    let mut described = manifest_for(1, &plain);
                    described.attachments[0] =
                        AttachmentMeta::describe("report.pdf", &mut plain.as_slice())?;
                    seal_manifest(from, to, &keys, &described, &plain)?;
                    Ok(())
                },
                min,
                iters,
            )?;
            let senders = vec![from.identity.public()];
            let open_s = time_it(
                || {
                    open(
                        &header,
                        &senders,
                        &ids[0],
                        Cursor::new(ct.as_slice()),
                        &mut Discard,
                    )?;
                    Ok(())
                },
                min,
                iters,
            )?;
            let mb = size as f64 / 1e6;
            let (seal_mb, fmt1_mb, open_mb) = (mb / seal_s, mb / fmt1_s, mb / open_s);
            if have_age {
                let enc = dir.path().join("enc.age");
                let mut recipients = vec![cli_recipient.clone()];
                recipients.extend(
                    keys[1..]
                        .iter()
                        .map(|k| k.public.age_recipient().to_string()),
                );
                let age_iters = if size > 1 << 20 { 3 } else { 30 };
                let enc_s = time_it(
                    || {
                        let mut cmd = std::process::Command::new("age");
                        for r in &recipients {
                            cmd.args(["-r", r]);
                        }
                        run(cmd.arg("-o").arg(&enc).arg(&plain_file))
                    },
                    Duration::ZERO,
                    age_iters,
                )?;
                let dec = dir.path().join("dec");
                let dec_s = time_it(
                    || {
                        run(std::process::Command::new("age")
                            .arg("-d")
                            .arg("-i")
                            .arg(&cli_key)
                            .arg("-o")
                            .arg(&dec)
                            .arg(&enc))
                    },
                    Duration::ZERO,
                    age_iters,
                )?;
                let (age_e, age_d) = (mb / enc_s, mb / dec_s);
                println!(
                    "{:>7} {:>4} | {:>10.1} {:>11.1} {:>10.1} | {:>11.1} {:>11.1} | {:>6.2} {:>7.2} {:>6.2}",
                    human(size as u64),
                    n,
                    seal_mb,
                    fmt1_mb,
                    open_mb,
                    age_e,
                    age_d,
                    seal_mb / age_e,
                    fmt1_mb / age_e,
                    open_mb / age_d
                );
            } else {
                println!(
                    "{:>7} {:>4} | {:>10.1} {:>11.1} {:>10.1}",
                    human(size as u64),
                    n,
                    seal_mb,
                    fmt1_mb,
                    open_mb
                );
            }
        }
    }
    Ok(())
}
