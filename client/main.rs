//! `baton`, the CLI each school uses to send, pull and acknowledge transfer packs.

fn main() {
    println!("baton {}", env!("CARGO_PKG_VERSION"));
}
