//! `batond`, the Baton daemon a trust runs on its own server: it stores and
//! forwards sealed packs and never holds a byte of pupil plaintext.

fn main() {
    println!("batond {}", env!("CARGO_PKG_VERSION"));
}
