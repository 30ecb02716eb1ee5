//! One module per `baton` subcommand: its arguments (the help text) and what it does.

pub mod ack;
pub mod check;
pub mod inbox;
pub mod init;
pub mod keys;
pub mod pull;
pub mod readdress;
pub mod recall;
pub mod schools;
pub mod send;
pub mod sent;
pub mod template;
