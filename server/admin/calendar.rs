//! `batond admin calendar …`: the trust's term dates (and schools' own),
//! from which every pack's due date is counted.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};
use baton::Laestab;
use time::{Date, OffsetDateTime};

use crate::audit::Event;
use crate::clocks::calendar;
use crate::clocks::{
    Calendar, SAFEGUARDING_SCHOOL_DAYS, TRANSFER_SCHOOL_DAYS, holidays, nth_school_day_after,
};
use crate::store::{Store, StoredCalendar, now_ms};

/// Reads, checks and stores a calendar file for `school` (the trust's
/// default when `None`).
pub async fn import<S: Store>(
    store: &S,
    file: &Path,
    school: Option<Laestab>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading calendar {}", file.display()))?;
    let cal = Calendar::from_toml(&text).with_context(|| format!("{}", file.display()))?;
    if let Some(s) = school
        && store
            .school(&s)
            .await
            .context("reading the directory")?
            .is_none()
    {
        bail!("school {s} is not enrolled: enrol it before giving it its own calendar");
    }
    let stored = StoredCalendar {
        school,
        name: cal.name.clone(),
        body: serde_json::to_string(&cal)?,
        imported_at_ms: now_ms(),
    };
    let scope = school.map_or_else(|| "trust".to_string(), |s| s.to_string());
    store
        .set_calendar(
            &stored,
            Event::by_admin("calendar.import", format!("{scope} {}", cal.name)),
        )
        .await
        .context("storing the calendar")?;
    let days: u32 = cal
        .terms
        .iter()
        .map(|t| term_days(&cal, t.start, t.end))
        .sum();
    writeln!(
        out,
        "imported {:?} for {}: {} terms, {days} school days",
        cal.name,
        school.map_or_else(|| "the trust".to_string(), |s| format!("school {s}")),
        cal.terms.len()
    )?;
    Ok(())
}

/// School days in a term, its first day included.
fn term_days(cal: &Calendar, start: Date, end: Date) -> u32 {
    start.previous_day().map_or(0, |before| {
        calendar::school_days_between(Some(cal), before, end)
    })
}

/// Prints every calendar with its terms, closures and school days, the
/// bank holidays in its span, and the due dates of a pupil leaving today.
pub async fn show<S: Store>(store: &S, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let calendars = crate::clocks::stored(store).await?;
    let today = OffsetDateTime::now_utc().date();
    let default = calendars
        .iter()
        .find(|(s, _)| s.school.is_none())
        .map(|(_, c)| c);
    let due_transfer = nth_school_day_after(default, today, TRANSFER_SCHOOL_DAYS);
    let due_cp = nth_school_day_after(default, today, SAFEGUARDING_SCHOOL_DAYS);
    let years: Vec<i32> = match (
        calendars
            .iter()
            .flat_map(|(_, c)| c.terms.first())
            .map(|t| t.start.year())
            .min(),
        calendars
            .iter()
            .flat_map(|(_, c)| c.terms.last())
            .map(|t| t.end.year())
            .max(),
    ) {
        (Some(a), Some(b)) => (a..=b).collect(),
        _ => vec![today.year()],
    };
    let bank: Vec<Date> = years
        .iter()
        .flat_map(|y| holidays::bank_holidays(*y))
        .collect();
    if json {
        let items: Vec<_> = calendars
            .iter()
            .map(|(s, c)| {
                serde_json::json!({
                    "school": s.school.map(|l| l.to_string()),
                    "name": c.name,
                    "imported_at": crate::audit::time(s.imported_at_ms),
                    "terms": c.terms.iter().map(|t| serde_json::json!({
                        "start": baton::dates::format_ymd(t.start), "end": baton::dates::format_ymd(t.end),
                        "closures": t.closures.iter().map(|d| baton::dates::format_ymd(*d)).collect::<Vec<_>>(),
                        "school_days": term_days(c, t.start, t.end),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "calendars": items,
                "trust_has_calendar": default.is_some(),
                "bank_holidays": bank.iter().map(|d| baton::dates::format_ymd(*d)).collect::<Vec<_>>(),
                "leaving_today": {
                    "transfer_due": due_transfer.map(baton::dates::format_ymd),
                    "safeguarding_due": due_cp.map(baton::dates::format_ymd),
                },
            })
        )?;
        return Ok(());
    }
    if default.is_none() {
        writeln!(
            out,
            "the trust has no calendar: school days are weekdays that are not England and Wales bank holidays (`batond admin calendar import FILE`)"
        )?;
    }
    for (s, c) in &calendars {
        let scope = s
            .school
            .map_or_else(|| "trust default".to_string(), |l| l.to_string());
        writeln!(
            out,
            "{} ({scope}, imported {})",
            c.name,
            crate::audit::time(s.imported_at_ms)
        )?;
        for t in &c.terms {
            let closures: Vec<String> = t
                .closures
                .iter()
                .map(|d| baton::dates::format_ymd(*d))
                .collect();
            writeln!(
                out,
                "  {} to {}  {:>3} school days{}",
                baton::dates::format_ymd(t.start),
                baton::dates::format_ymd(t.end),
                term_days(c, t.start, t.end),
                if closures.is_empty() {
                    String::new()
                } else {
                    format!("  closed {}", closures.join(", "))
                }
            )?;
        }
    }
    let bank_text: Vec<String> = bank.iter().map(|d| baton::dates::format_ymd(*d)).collect();
    writeln!(out, "bank holidays: {}", bank_text.join(", "))?;
    let due = |d: Option<Date>| {
        d.map_or_else(
            || "unknown (past the calendar's last term: import the next terms)".to_string(),
            baton::dates::format_ymd,
        )
    };
    writeln!(
        out,
        "a pupil leaving today ({}): transfer pack due {}, child-protection file due {}",
        baton::dates::format_ymd(today),
        due(due_transfer),
        due(due_cp)
    )?;
    Ok(())
}
