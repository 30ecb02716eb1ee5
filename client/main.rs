//! `baton`, the CLI each school uses: `init` to enrol, `send` a class's
//! packs, `inbox`, `pull` and `ack` on the receiving side, `sent` for the
//! sender's view with signed receipts. The exit code is decided here only:
//! 0 success, 1 failure, 2 usage.

mod checkpoint;
mod clock;
mod commands;
mod connect;
mod home;
mod limits;
mod outbox;
mod output;
mod packdir;
mod pins;
mod sources;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pass pupil records between schools: encrypted on this machine, signed,
/// and acknowledged with signed receipts.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    /// The home folder holding this school's keys, token and state
    /// (default: the platform config folder).
    #[arg(long, global = true, env = "BATON_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this school: generate keys here, redeem the operator's code, save the token.
    Init(Box<commands::init::Args>),
    /// List the schools in the directory, show one's keys, or trust changed keys.
    Schools(commands::schools::Args),
    /// Seal and send pack folders to a school.
    Send(commands::send::Args),
    /// List packs waiting for this school.
    Inbox(commands::inbox::Args),
    /// Download, verify and decrypt packs into pack folders.
    Pull(commands::pull::Args),
    /// Send signed receipts for pulled packs.
    Ack(commands::ack::Args),
    /// List packs this school sent, with their state and receipts.
    Sent(commands::sent::Args),
    /// Withdraw packs this school sent (wrong school, incomplete record).
    Recall(commands::recall::Args),
    /// Forward a pack held in escrow to the school the pupil joined (the
    /// trust's escrow holder only).
    Readdress(commands::readdress::Args),
    /// This school's keys: list, export this device's public key, revoke one.
    Keys(commands::keys::Args),
    /// Validate CTF files, spreadsheets and pack folders without sending.
    Check(commands::check::Args),
    /// Print a template: `baton template csv`.
    Template(commands::template::Args),
    /// Print the newest signed audit checkpoint the server gave this home,
    /// for the trust's data protection officer to hold the server's audit
    /// log to (`batond admin audit verify --checkpoint FILE`).
    Checkpoint,
    /// Open the local page (this computer only) to send, receive and follow
    /// records without the command line.
    Ui(ui::Args),
    /// Print a shell completion script, e.g. `baton completions bash >
    /// /etc/bash_completion.d/baton`.
    Completions {
        /// The shell: bash, zsh, fish, powershell or elvish.
        shell: baton::cli_docs::Shell,
    },
    /// Write man pages for baton and every subcommand (`baton.1`,
    /// `baton-send.1`, …) into a folder, e.g. for `/usr/local/share/man/man1`.
    Man {
        /// The folder to write them into (created if need be).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Ends the process quietly, as other command-line tools do, when what
/// reads its output has gone (`baton sent | head`): printing then fails
/// with a broken pipe, which is not the user's error to read a panic for.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            // 128 + SIGPIPE, what a shell reports for a reader gone.
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<output::UsageError>().is_some() => {
            eprintln!("error: {e:#}");
            eprintln!("For more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    match &cli.command {
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            baton::cli_docs::completions(&mut Cli::command(), "baton", *shell, &mut out);
            return Ok(());
        }
        Command::Man { out } => {
            let pages = baton::cli_docs::man_pages(Cli::command(), out)
                .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", out.display()))?;
            println!("{} man pages in {}", pages.len(), out.display());
            return Ok(());
        }
        _ => {}
    }
    if let Command::Template(args) = cli.command {
        commands::template::run(args);
        return Ok(());
    }
    if let Command::Check(args) = cli.command {
        // `check` works without a home; in an enrolled one it checks more.
        let home = home::Home::locate(cli.home)
            .ok()
            .filter(home::Home::is_initialised);
        return commands::check::run(home.as_ref(), args).await;
    }
    let home = home::Home::locate(cli.home)?;
    match cli.command {
        Command::Check(_)
        | Command::Template(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
        Command::Init(args) => commands::init::run(&home, *args).await,
        Command::Schools(args) => commands::schools::run(&home, args).await,
        Command::Send(args) => commands::send::run(&home, args).await,
        Command::Inbox(args) => commands::inbox::run(&home, args).await,
        Command::Pull(args) => commands::pull::run(&home, args).await,
        Command::Ack(args) => commands::ack::run(&home, args).await,
        Command::Sent(args) => commands::sent::run(&home, args).await,
        Command::Recall(args) => commands::recall::run(&home, args).await,
        Command::Readdress(args) => commands::readdress::run(&home, args).await,
        Command::Ui(args) => ui::run(&home, args).await,
        Command::Keys(args) => commands::keys::run(&home, args).await,
        Command::Checkpoint => checkpoint::print(&home),
    }
}
