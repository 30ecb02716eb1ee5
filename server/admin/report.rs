//! `batond admin report`: what moved between schools, what was on time and
//! what is overdue, per (from, to, kind), for the transition hub and
//! governors. Metadata only: the daemon holds no pupil data.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use baton::Laestab;
use baton::api::v1;
use prost::Message as _;
use time::Date;

use crate::clocks::{Clocks, calendar::school_days_between};
use crate::store::{PackStatus, Store, StoredPack};

/// Counts for one (from, to, kind).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Packs stored.
    pub sent: u64,
    /// Packs with a receipt.
    pub acknowledged: u64,
    /// Packs whose receipt came by the due date.
    pub on_time: u64,
    /// Open packs past their due date.
    pub overdue: u64,
    /// School days from the leaving date to each receipt.
    pub days: Vec<u32>,
}

impl Counts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        self.on_time += other.on_time;
        self.overdue += other.overdue;
        self.days.extend_from_slice(&other.days);
    }

    fn median(&self) -> Option<f64> {
        let mut d = self.days.clone();
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        let mid = d.len() / 2;
        Some(if d.len() % 2 == 1 {
            f64::from(d[mid])
        } else {
            (f64::from(d[mid - 1]) + f64::from(d[mid])) / 2.0
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"sent": self.sent, "acknowledged": self.acknowledged,
            "on_time": self.on_time, "overdue": self.overdue,
            "median_school_days": self.median()})
    }
}

/// One pack's part in the counts, and its kind.
pub fn count(clocks: &Clocks, today: Date, p: &StoredPack) -> anyhow::Result<(String, Counts)> {
    let header = v1::PackHeader::decode(p.header.as_slice())
        .with_context(|| format!("stored header of pack {} does not decode", p.seq))?;
    let kind = crate::services::wire::kind_of(&header).as_str();
    let left = baton::dates::parse_ymd(&header.left_on).ok();
    let due = clocks.due_of(&header);
    let received = p
        .receipt
        .as_deref()
        .and_then(|r| v1::Receipt::decode(r).ok())
        .map(|r| baton::dates::england_date(r.received_at_ms));
    // A receipt counts even once retention has purged the pack; a pack
    // withdrawn by its sender, or purged uncollected, is overdue no more.
    let acknowledged = p.receipt.is_some();
    let open = matches!(p.status, PackStatus::Pending | PackStatus::Downloaded)
        && p.recalled_at_ms.is_none();
    let mut c = Counts {
        sent: 1,
        ..Counts::default()
    };
    if acknowledged {
        c.acknowledged = 1;
        if let (Some(due), Some(received)) = (due, received)
            && received <= due
        {
            c.on_time = 1;
        }
        if let (Some(left), Some(received)) = (left, received) {
            c.days.push(school_days_between(
                clocks.calendar(&p.from),
                left,
                received,
            ));
        }
    } else if open && due.is_some_and(|d| today > d) {
        c.overdue = 1;
    }
    Ok((kind.to_string(), c))
}

/// One row of the printable page, as text.
struct PageRow {
    from: String,
    from_name: String,
    to: String,
    to_name: String,
    kind: String,
    sent: String,
    acknowledged: String,
    on_time: String,
    overdue: String,
    median: String,
}

impl PageRow {
    fn new(
        c: &Counts,
        from: String,
        from_name: String,
        to: String,
        to_name: String,
        kind: String,
    ) -> Self {
        Self {
            from,
            from_name,
            to,
            to_name,
            kind,
            sent: c.sent.to_string(),
            acknowledged: c.acknowledged.to_string(),
            on_time: c.on_time.to_string(),
            overdue: c.overdue.to_string(),
            median: c
                .median()
                .map_or_else(|| "-".to_string(), |m| m.to_string()),
        }
    }
}

/// The one printable page for heads and governors.
#[derive(askama::Template)]
#[template(path = "report.html")]
struct Page {
    title: String,
    period: String,
    generated: String,
    no_calendar: bool,
    rows: Vec<PageRow>,
    totals: PageRow,
}

/// Prints the report of packs stored from `since` to `until` (inclusive);
/// with `html`, also writes the printable page there.
pub async fn run<S: Store>(
    store: &S,
    since: Option<Date>,
    until: Option<Date>,
    format: Format,
    html: Option<&std::path::Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    let since_ms = since.map_or(0, ms);
    let until_ms = until.and_then(Date::next_day).map_or(i64::MAX, ms);
    let packs = store
        .stored_between(since_ms, until_ms)
        .await
        .context("reading packs")?;
    let clocks = Clocks::load(store).await?;
    let today = baton::dates::england_today();
    let mut pairs: BTreeMap<(Laestab, Laestab, String), Counts> = BTreeMap::new();
    for p in &packs {
        let (kind, c) = count(&clocks, today, p)?;
        pairs.entry((p.from, p.to, kind)).or_default().add(&c);
    }
    let mut totals = Counts::default();
    for c in pairs.values() {
        totals.add(c);
    }
    let names: BTreeMap<Laestab, String> = store
        .list_schools()
        .await
        .context("reading the directory")?
        .into_iter()
        .map(|s| (s.info.laestab, s.info.name))
        .collect();
    let name = |l: &Laestab| names.get(l).cloned().unwrap_or_default();
    if let Some(path) = html {
        let ymd = |d: Option<Date>, none: &str| {
            d.map_or_else(|| none.to_string(), baton::dates::format_ymd)
        };
        let page = Page {
            title: "Transfers between schools".into(),
            period: format!(
                "Packs sent from {} to {}",
                ymd(since, "the beginning"),
                ymd(until, "today")
            ),
            generated: baton::dates::format_ymd(today),
            no_calendar: !clocks.has_default(),
            rows: pairs
                .iter()
                .map(|((from, to, kind), c)| {
                    PageRow::new(
                        c,
                        from.to_string(),
                        name(from),
                        to.to_string(),
                        name(to),
                        kind.clone(),
                    )
                })
                .collect(),
            totals: PageRow::new(
                &totals,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ),
        };
        let text = askama::Template::render(&page).context("rendering the report page")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    match format {
        Format::Json => {
            let items: Vec<_> = pairs
                .iter()
                .map(|((from, to, kind), c)| {
                    let mut v = c.json();
                    v["from"] = from.to_string().into();
                    v["to"] = to.to_string().into();
                    v["kind"] = kind.clone().into();
                    v["from_name"] = name(from).into();
                    v["to_name"] = name(to).into();
                    v
                })
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::json!({"pairs": items, "totals": totals.json(),
                    "since": since.map(baton::dates::format_ymd), "until": until.map(baton::dates::format_ymd),
                    "trust_has_calendar": clocks.has_default()})
            )?;
        }
        Format::Csv => {
            writeln!(
                out,
                "from,to,kind,sent,acknowledged,on_time,overdue,median_school_days"
            )?;
            for ((from, to, kind), c) in &pairs {
                writeln!(
                    out,
                    "{from},{to},{kind},{},{},{},{},{}",
                    c.sent,
                    c.acknowledged,
                    c.on_time,
                    c.overdue,
                    c.median().map(|m| m.to_string()).unwrap_or_default()
                )?;
            }
        }
        Format::Text => {
            if !clocks.has_default() {
                writeln!(
                    out,
                    "the trust has no calendar: school days are weekdays that are not bank holidays"
                )?;
            }
            for ((from, to, kind), c) in &pairs {
                writeln!(
                    out,
                    "{from} {} -> {to} {} ({kind}): sent {}, acknowledged {}, on time {}, overdue {}, median {} school days to receipt",
                    name(from),
                    name(to),
                    c.sent,
                    c.acknowledged,
                    c.on_time,
                    c.overdue,
                    c.median()
                        .map_or_else(|| "-".to_string(), |m| m.to_string())
                )?;
            }
            writeln!(
                out,
                "total: sent {}, acknowledged {}, on time {}, overdue {}",
                totals.sent, totals.acknowledged, totals.on_time, totals.overdue
            )?;
        }
    }
    Ok(())
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
    /// CSV, one row per (from, to, kind).
    Csv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let c = |days: Vec<u32>| Counts {
            days,
            ..Counts::default()
        };
        assert_eq!(c(vec![]).median(), None);
        assert_eq!(c(vec![7]).median(), Some(7.0));
        assert_eq!(c(vec![9, 1, 4]).median(), Some(4.0));
        assert_eq!(c(vec![1, 2, 3, 10]).median(), Some(2.5));
    }
}
