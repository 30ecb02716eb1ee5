//! `batond admin escrow add`: the trust's escrow holder (e.g. its data
//! lead), who receives the packs of pupils whose next school is unknown
//! (`XXXXXXX`) or outside the maintained sector (`MMMMMMM`), sealed to the
//! escrow's keys so the server still holds only ciphertext, until the
//! pupil's new school is known. The escrow is enrolled like a school
//! (number `XXXXXXX`, `MMMMMMM` its alias); each call issues a one-time
//! code for one more key holder.

use std::io::Write;

use anyhow::Context as _;
use baton::Laestab;
use baton::keys::Role;

use super::{code_subject, new_code, print_code};
use crate::audit::Event;
use crate::config::Config;
use crate::store::{NewSchool, Store, StoreError};

/// Enrols the escrow (the first time) or issues another code for it; the
/// code grants `dsl` and `staff`, so the escrow holds child-protection
/// files too.
pub async fn add<S: Store>(
    store: &S,
    config: &Config,
    name: String,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    let roles = [Role::Dsl, Role::Staff];
    let escrow = NewSchool {
        laestab: Laestab::ESCROW,
        name,
        phase: "escrow".into(),
        urn: String::new(),
    };
    let (code, hash, now, expires) = new_code(config);
    let subject = code_subject(Laestab::ESCROW, &roles);
    let added = store
        .add_school(
            &escrow,
            hash,
            &roles,
            now,
            expires,
            Event::by_admin("escrow.add", &subject),
        )
        .await;
    let what = match added {
        Ok(()) => "enrolled the trust's escrow",
        Err(StoreError::Conflict(_)) => {
            store
                .issue_code(
                    &Laestab::ESCROW,
                    hash,
                    &roles,
                    now,
                    expires,
                    Event::by_admin("escrow.code", &subject),
                )
                .await
                .context("issuing an escrow code")?;
            "issued a code for the trust's escrow"
        }
        Err(e) => return Err(e).context("enrolling the escrow"),
    };
    // The code is the last line, as for `school add` (scripts take it
    // with `tail -n 1`).
    if !json {
        writeln!(
            out,
            "the key holder runs `baton init --school XXXXXXX --code CODE …`; packs to XXXXXXX and MMMMMMM are then sealed to the escrow's keys"
        )?;
    }
    print_code(out, config, Laestab::ESCROW, &code, &roles, json, what)
}
