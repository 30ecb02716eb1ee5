//! A 30-pupil class through the real CLI beside tar + age + sftp to OpenSSH on loopback.

use crate::*;

pub(crate) fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MB", bytes >> 20)
    } else {
        format!("{} KB", bytes >> 10)
    }
}

// ---------------------------------------------------------------- a class

pub(crate) fn sh(script: &str) -> Res<()> {
    run(std::process::Command::new("sh").args(["-ec", script]))
}

pub(crate) async fn class(daemon: &Daemon) -> Res<()> {
    println!("\n== a class: 30 pupils (record.json + a 200 KB PDF-like file each)");
    let root = tempfile::tempdir()?;
    let sender = common::cli::enrol(daemon, root.path(), "8615001", "primary", &["staff"]).await;
    let receiver =
        common::cli::enrol(daemon, root.path(), "8616001", "secondary", &["staff"]).await;
    let packs = root.path().join("packs");
    let mut folders = Vec::new();
    for serial in 0..30u32 {
        let dir = packs.join(format!("pupil-{serial:02}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("record.json"), record(serial).to_json())?;
        let mut pdf = b"%PDF-1.4\n".to_vec();
        pdf.extend(random_bytes(200 * 1024 - pdf.len()));
        std::fs::write(dir.join("profile.pdf"), pdf)?;
        folders.push(dir.display().to_string());
    }
    let mut args = vec!["send", "--to", "8616001"];
    args.extend(folders.iter().map(String::as_str));
    let t = Instant::now();
    sender.ok(&args).await;
    let send_s = t.elapsed().as_secs_f64();
    // The same command again on the unchanged class: nothing to seal or send.
    let t = Instant::now();
    sender.ok(&args).await;
    let rerun_s = t.elapsed().as_secs_f64();
    let out = root.path().join("pulled");
    let out_s = out.display().to_string();
    let t = Instant::now();
    receiver.ok(&["pull", "--all", "--out", &out_s]).await;
    receiver.ok(&["ack", "--all-pulled"]).await;
    let receive_s = t.elapsed().as_secs_f64();
    println!("baton send (30 packs):                  {send_s:.2} s");
    println!(
        "baton send again, class unchanged:      {rerun_s:.3} s  (re-run / first = {:.2})",
        rerun_s / send_s
    );
    let verdict = if rerun_s <= 0.3 * send_s {
        "met"
    } else {
        "NOT met"
    };
    println!("BUDGET re-run of an unchanged class ≤ 0.3 × the first send: {verdict}");
    println!("baton pull --all + ack --all-pulled:    {receive_s:.2} s");

    let why = if !have("age") || !have("age-keygen") {
        Some("the age CLI is not installed (apt-get install -y age)")
    } else if !Path::new("/usr/sbin/sshd").exists() || !have("sftp") || !have("ssh-keygen") {
        Some("openssh-server is not installed (apt-get install -y openssh-server openssh-client)")
    } else {
        None
    };
    if let Some(why) = why {
        println!("tar + age + sftp comparison skipped: {why}");
        return Ok(());
    }
    let Some((send_sftp, receive_sftp)) = sftp_class(root.path(), &packs).await? else {
        return Ok(());
    };
    println!(
        "tar + age + sftp put (30 packs):        {send_sftp:.2} s  (baton / script = {:.2})",
        send_s / send_sftp
    );
    println!(
        "sftp get + age -d + untar:              {receive_sftp:.2} s  (baton / script = {:.2})",
        receive_s / receive_sftp
    );
    for (what, ratio) in [
        ("sent", send_s / send_sftp),
        ("pulled + acknowledged", receive_s / receive_sftp),
    ] {
        println!(
            "BUDGET a class {what} ≤ 0.5 × the age CLI + SFTP script: {ratio:.2}, {}",
            if ratio <= 0.5 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

/// What a trust's IT could script today: returns (send, receive) seconds,
/// or `None` (saying why) when sshd cannot run here.
pub(crate) async fn sftp_class(root: &Path, packs: &Path) -> Res<Option<(f64, f64)>> {
    let ssh = root.join("ssh");
    std::fs::create_dir_all(&ssh)?;
    let d = ssh.display();
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {d}/host_key; ssh-keygen -q -t ed25519 -N '' -f {d}/client_key; \
         cp {d}/client_key.pub {d}/authorized_keys; chmod 600 {d}/authorized_keys; \
         mkdir -p /run/sshd {d}/remote; age-keygen -o {d}/school.key 2>/dev/null"
    ))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = ssh.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin yes\nPidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\n"
        ),
    )?;
    let mut sshd = tokio::process::Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .args(["-p", &port.to_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = sshd.start_kill();
        println!("tar + age + sftp comparison skipped: sshd did not start (are we root?)");
        return Ok(None);
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let sftp = format!(
        "sftp -q -b {d}/batch -i {d}/client_key -P {port} -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {user}@127.0.0.1"
    );
    let p = packs.display();
    let t = Instant::now();
    sh(&format!(
        "R=$(age-keygen -y {d}/school.key); mkdir -p {d}/out; cd {p}; \
         : > {d}/batch; echo 'cd {d}/remote' >> {d}/batch; \
         for f in *; do tar cf - \"$f\" | age -r \"$R\" -o {d}/out/\"$f\".tar.age; \
         echo \"put {d}/out/$f.tar.age\" >> {d}/batch; done; {sftp}"
    ))?;
    let send = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sh(&format!(
        "mkdir -p {d}/in {d}/untar; printf 'cd {d}/remote\\nlcd {d}/in\\nget *.tar.age\\n' > {d}/batch; {sftp}; \
         cd {d}/in; for f in *.tar.age; do age -d -i {d}/school.key \"$f\" | tar xf - -C {d}/untar; done; \
         test $(ls {d}/untar | wc -l) -eq 30"
    ))?;
    let receive = t.elapsed().as_secs_f64();
    let _ = sshd.start_kill();
    Ok(Some((send, receive)))
}

// ---------------------------------------------------------------- main
