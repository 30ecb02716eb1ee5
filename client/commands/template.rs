//! `baton template csv`: the class spreadsheet's header line and a
//! commented example row, to start a spreadsheet from.

/// Print a template to start from.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// The class spreadsheet: header line and a commented example row.
    Csv,
}

/// Runs `baton template`.
pub fn run(args: Args) {
    match args.what {
        What::Csv => print!("{}", baton::csv::template()),
    }
}
