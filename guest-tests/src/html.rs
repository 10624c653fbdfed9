// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `report.html`: the kernel x scenario matrix as one self-contained page (no scripts, no
//! network assets) for people triaging a run. Each cell is coloured by outcome (as expected,
//! differs, observed without expectation, skipped, harness error) and opens, with a plain
//! `<details>` element, the run's report titles, symbolized traces, what was observed, the
//! expectation's reasoning and links to the run's logs beside the page.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::classify::{Frame, Splat};
use crate::markup::{escape, url_path};

/// A cell's outcome, which sets its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Matched its expectation.
    AsExpected,
    /// Differed from it.
    Differs,
    /// Ran with no expectation for this kernel.
    Observed,
    /// Not applicable to this kernel.
    Skipped,
    /// The harness could not finish or start the run.
    Error,
}

impl Outcome {
    fn class(self) -> &'static str {
        match self {
            Outcome::AsExpected => "expected",
            Outcome::Differs => "differs",
            Outcome::Observed => "observed",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::AsExpected => "as expected",
            Outcome::Differs => "differs",
            Outcome::Observed => "observed",
            Outcome::Skipped => "skipped",
            Outcome::Error => "harness error",
        }
    }
}

/// One run, as the page shows it.
#[derive(Clone, Debug)]
pub struct Cell<'a> {
    /// Kernel variant (row).
    pub kernel: &'a str,
    /// Scenario (column).
    pub scenario: &'a str,
    /// Outcome.
    pub outcome: Outcome,
    /// Kernel reports.
    pub splats: &'a [Splat],
    /// What was observed, as (name, value) pairs in display order.
    pub observed: Vec<(String, String)>,
    /// The expectation's reasoning.
    pub why: &'a str,
    /// What differed from the expectation.
    pub mismatches: &'a [String],
    /// Logs beside the page, as (label, file name).
    pub logs: Vec<(String, String)>,
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
p.meta { color: #555; margin: 0 0 1em; }
table.matrix { border-collapse: collapse; }
table.matrix th, table.matrix td { border: 1px solid #bbb; padding: 4px 6px; vertical-align: top; }
table.matrix th { background: #eee; text-align: left; }
td.expected, .sw.expected { background: #d8f0d8; }
td.differs, .sw.differs { background: #f6c8c8; }
td.observed, .sw.observed { background: #dde6f6; }
td.skipped, .sw.skipped { background: #eeeeee; color: #666; }
td.error, .sw.error { background: #f6e2b8; }
td.none { background: #fff; }
td summary { cursor: pointer; font-weight: 600; }
td .titles { font-size: 12px; margin: 2px 0 0; padding-left: 1.1em; }
td details[open] { min-width: 34em; }
td pre { font-size: 11px; white-space: pre-wrap; margin: 4px 0; }
td dl { display: grid; grid-template-columns: max-content auto; gap: 0 .8em; font-size: 12px; }
td dt { font-weight: 600; }
td dd { margin: 0; }
ul.legend { list-style: none; padding: 0; display: flex; gap: 1em; }
ul.legend .sw { display: inline-block; width: 1em; height: 1em; border: 1px solid #999; vertical-align: middle; margin-right: .3em; }
table.titles td, table.titles th { border: 1px solid #bbb; padding: 3px 6px; }
table.titles { border-collapse: collapse; margin-top: 1em; }
";

fn frame_line(f: &Frame) -> String {
    let mut s = String::new();
    if !f.reliable {
        s.push_str("? ");
    }
    s.push_str(&f.raw());
    if let Some(src) = &f.source {
        let _ = write!(s, "  {src}");
    }
    for by in &f.inlined_by {
        let _ = write!(s, "\n      (inlined by) {by}");
    }
    s
}

fn splat_block(out: &mut String, s: &Splat) {
    let _ = write!(
        out,
        "<p><b>{}</b><br><code>{}</code></p>",
        escape(&s.title),
        escape(&s.headline)
    );
    let mut text = String::new();
    if let Some(rip) = &s.rip {
        let _ = writeln!(text, "RIP: {}", frame_line(rip));
    }
    if !s.frames.is_empty() {
        text.push_str("Call trace:\n");
        for f in &s.frames {
            let _ = writeln!(text, "  {}", frame_line(f));
        }
    }
    if let Some(m) = &s.memory {
        if !m.access.is_empty() || !m.address.is_empty() {
            let size = m.size.map(|n| format!(" of size {n}")).unwrap_or_default();
            let _ = writeln!(
                text,
                "{} {}{size} at {} by {}",
                m.bug_type, m.access, m.address, m.task
            );
        }
        for (label, stack) in [("Allocated by", &m.allocated_by), ("Freed by", &m.freed_by)] {
            if !stack.is_empty() {
                let _ = writeln!(text, "{label}:");
                for f in stack {
                    let _ = writeln!(text, "  {}", frame_line(f));
                }
            }
        }
        if !m.object.is_empty() {
            let _ = writeln!(text, "{}", m.object);
        }
    }
    if let Some(l) = &s.leak {
        let _ = writeln!(text, "object {} ({} bytes) {}", l.object, l.size, l.comm);
    }
    if !text.is_empty() {
        let _ = write!(out, "<pre>{}</pre>", escape(text.trim_end()));
    }
}

fn cell_html(out: &mut String, c: &Cell<'_>) {
    let _ = write!(
        out,
        "<td class=\"{}\" data-kernel=\"{}\" data-scenario=\"{}\" data-outcome=\"{}\"><details><summary>{}</summary>",
        c.outcome.class(),
        escape(c.kernel),
        escape(c.scenario),
        c.outcome.class(),
        c.outcome.label()
    );
    if !c.splats.is_empty() {
        for s in c.splats {
            splat_block(out, s);
        }
    }
    if !c.mismatches.is_empty() {
        out.push_str("<p><b>Differs:</b></p><ul>");
        for m in c.mismatches {
            let _ = write!(out, "<li>{}</li>", escape(m));
        }
        out.push_str("</ul>");
    }
    if !c.observed.is_empty() {
        out.push_str("<dl>");
        for (k, v) in &c.observed {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
        }
        out.push_str("</dl>");
    }
    if !c.why.is_empty() {
        let _ = write!(out, "<p><b>Why:</b> {}</p>", escape(c.why.trim()));
    }
    if !c.logs.is_empty() {
        out.push_str("<p>");
        for (i, (label, file)) in c.logs.iter().enumerate() {
            if i > 0 {
                out.push_str(" · ");
            }
            let _ = write!(
                out,
                "<a href=\"{}\">{}</a>",
                escape(&url_path(file)),
                escape(label)
            );
        }
        out.push_str("</p>");
    }
    out.push_str("</details>");
    if !c.splats.is_empty() {
        out.push_str("<ul class=\"titles\">");
        for s in c.splats {
            let _ = write!(out, "<li>{}</li>", escape(&s.title));
        }
        out.push_str("</ul>");
    }
    out.push_str("</td>");
}

/// The page. `kernels` and `scenarios` give the row and column order (cells for pairs that
/// did not run are left empty); `title` and `meta` head the page.
pub fn render(
    title: &str,
    meta: &str,
    kernels: &[&str],
    scenarios: &[&str],
    cells: &[Cell<'_>],
) -> String {
    let by_pair: BTreeMap<(&str, &str), &Cell<'_>> =
        cells.iter().map(|c| ((c.kernel, c.scenario), c)).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n<p class=\"meta\">{m}</p>\n",
        t = escape(title),
        m = escape(meta)
    );
    let counts = [
        Outcome::AsExpected,
        Outcome::Differs,
        Outcome::Observed,
        Outcome::Skipped,
        Outcome::Error,
    ]
    .map(|o| (o, cells.iter().filter(|c| c.outcome == o).count()));
    out.push_str("<ul class=\"legend\">");
    for (o, n) in counts {
        let _ = write!(
            out,
            "<li><span class=\"sw {}\"></span>{}: <b>{n}</b></li>",
            o.class(),
            o.label()
        );
    }
    out.push_str(
        "</ul>\n<table class=\"matrix\" id=\"matrix\"><thead><tr><th>kernel \\ scenario</th>",
    );
    for s in scenarios {
        let _ = write!(out, "<th>{}</th>", escape(s));
    }
    out.push_str("</tr></thead><tbody>\n");
    for k in kernels {
        let _ = write!(out, "<tr><th>{}</th>", escape(k));
        for s in scenarios {
            match by_pair.get(&(*k, *s)) {
                Some(c) => cell_html(&mut out, c),
                None => out.push_str("<td class=\"none\"></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");

    // Every distinct report title, with the runs that showed it.
    let mut titles: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in cells {
        for s in c.splats {
            titles
                .entry(s.title.as_str())
                .or_default()
                .insert(format!("{} / {}", c.kernel, c.scenario));
        }
    }
    if !titles.is_empty() {
        out.push_str("<h2>Reports by title</h2>\n<table class=\"titles\" id=\"titles\"><thead><tr><th>title</th><th>runs</th><th>seen in</th></tr></thead><tbody>\n");
        for (t, runs) in &titles {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(t),
                runs.len(),
                escape(&runs.iter().cloned().collect::<Vec<_>>().join(", "))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    #[test]
    fn a_grid_with_every_outcome_and_escaped_text() {
        let splats = classify(
            "WARNING: CPU: 0 PID: 71 at drivers/gpio/gpiolib.c:2164 gpiod_free+0x4c/0x60\nCall Trace:\n release_nodes+0x3d/0xb0\n",
        )
        .splats;
        let mismatch = vec!["refcnt 1 instead of <0>".to_string()];
        let cell = |kernel, scenario, outcome, splats| Cell {
            kernel,
            scenario,
            outcome,
            splats,
            observed: vec![("gpio_virtio refcnt".into(), "0".into())],
            why: "the 2020 double put & more",
            mismatches: if outcome == Outcome::Differs {
                &mismatch
            } else {
                &[]
            },
            logs: vec![(
                "console".into(),
                format!("{kernel}--{scenario}.console.log"),
            )],
        };
        let cells = [
            cell("6.1-baseline", "unbind", Outcome::AsExpected, &splats[..]),
            cell("6.1-baseline", "irq", Outcome::Differs, &[]),
            cell("6.12-kref", "unbind", Outcome::Observed, &splats[..]),
            cell("6.12-kref", "irq", Outcome::Skipped, &[]),
        ];
        let page = render(
            "vhost-gpio-nvmem matrix",
            "2026-12-02, QEMU 10.0.2",
            &["6.1-baseline", "6.12-kref", "7.3-baseline"],
            &["unbind", "irq"],
            &cells,
        );
        if let Some(path) = std::env::var_os("VGN_HTML_SAMPLE") {
            std::fs::write(path, &page).unwrap();
        }
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<td class=\"expected\"").count(), 1);
        assert_eq!(page.matches("<td class=\"differs\"").count(), 1);
        assert_eq!(page.matches("<td class=\"observed\"").count(), 1);
        assert_eq!(page.matches("<td class=\"skipped\"").count(), 1);
        assert_eq!(
            page.matches("<td class=\"none\"").count(),
            2,
            "7.3 did not run"
        );
        assert!(page.contains("WARNING in gpiod_free"));
        assert!(page.contains("release_nodes+0x3d/0xb0"));
        assert!(page.contains("refcnt 1 instead of &lt;0&gt;"));
        assert!(page.contains("double put &amp; more"));
        assert!(page.contains("href=\"6.1-baseline--unbind.console.log\""));
        assert!(!page.contains("<script"), "self-contained, no scripts");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no network assets"
        );
        // Grouped by title: one title seen in two runs.
        assert!(page.contains("<td>WARNING in gpiod_free</td><td>2</td>"));
    }

    #[test]
    fn links_are_percent_encoded() {
        assert_eq!(url_path("a b#c?.log"), "a%20b%23c%3F.log");
    }
}
