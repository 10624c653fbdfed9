// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The matrix as one KCIDB document (KernelCI's common report database, I/O schema v5.3):
//! a checkout per kernel source, a build per kernel variant, a test per run and, per distinct
//! kernel report title, an issue with an incident for every run that showed it.
//!
//! Ids are `<origin>:<submission>.<kind>.<name>`: the origin names the CI system, the
//! submission tells one run of the matrix from another (both configurable), so a document can
//! be submitted next to other CI systems' without clashing. Issue ids are derived from the
//! report title alone (`<origin>:title-<hash>`), so the same splat in two submissions is one
//! issue with two incidents.
//!
//! Test status follows the schema's meaning (its priority order is FAIL, ERROR, MISS, PASS,
//! DONE, SKIP): a run that matched its expectation is PASS, one that differed is FAIL, one
//! the harness could not finish is ERROR, one that never ran because QEMU or a backend did not
//! start is MISS, one run with no expectation for that kernel ("observed") is DONE, and one
//! skipped as not applicable is SKIP.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::classify::Splat;

/// Major and minor version of the schema this module writes.
pub const SCHEMA_VERSION: (u32, u32) = (5, 3);

/// Why the document could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KcidbError {
    /// An origin must be lower-case letters, digits and `_`.
    #[error("KCIDB origin {0:?} must match [a-z0-9_]+")]
    BadOrigin(String),
    /// A submission id must not be empty or contain NUL.
    #[error("KCIDB submission id {0:?} must be non-empty, without NUL")]
    BadSubmission(String),
    /// A run names a build the document does not have.
    #[error("run {kernel}/{scenario} has no build record for kernel {kernel}")]
    UnknownBuild {
        /// Kernel variant.
        kernel: String,
        /// Scenario.
        scenario: String,
    },
}

/// Who submits the document and which submission it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitter {
    /// The CI system (`[a-z0-9_]+`).
    pub origin: String,
    /// This matrix run, unique for the origin (for example a CI job id or a time stamp).
    pub submission: String,
    /// Where the run directory's files can be fetched (`https://ci.example/job/42/`, or a
    /// `file://` URL of the directory); log URLs are this plus a file name.
    pub url_base: String,
}

impl Submitter {
    /// Checks the origin and submission id.
    pub fn new(origin: &str, submission: &str, url_base: &str) -> Result<Submitter, KcidbError> {
        if origin.is_empty()
            || !origin
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(KcidbError::BadOrigin(origin.to_string()));
        }
        if submission.is_empty() || submission.contains('\0') {
            return Err(KcidbError::BadSubmission(submission.to_string()));
        }
        let mut url_base = url_base.to_string();
        if !url_base.is_empty() && !url_base.ends_with('/') {
            url_base.push('/');
        }
        Ok(Submitter {
            origin: origin.to_string(),
            submission: submission.to_string(),
            url_base,
        })
    }

    fn id(&self, kind: &str, name: &str) -> String {
        format!("{}:{}.{kind}.{name}", self.origin, self.submission)
    }

    fn url(&self, file: &str) -> Option<String> {
        (!self.url_base.is_empty() && !file.is_empty())
            .then(|| format!("{}{}", self.url_base, crate::markup::url_path(file)))
    }
}

/// A kernel source: a Debian source package or the user's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// A short name, unique in the document (`linux-source-6.12_6.12.57-1`, `tree-ab12cd`).
    pub name: String,
    /// What people call it (`Debian linux-source-6.12`, a tree's directory name).
    pub tree_name: String,
    /// The version (`6.12.57-1`) or `git describe` (`v7.3-rc2-15-gabc-dirty`).
    pub version: String,
    /// The commit, where the source is a git tree.
    pub git_commit: Option<String>,
    /// The source has changes not in a commit.
    pub dirty: bool,
}

/// One kernel variant as built.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    /// The variant (`6.12-kref`).
    pub variant: String,
    /// Its source, by [`Source::name`].
    pub source: String,
    /// Patch stacks applied, in order (`test`, `kref`).
    pub stacks: Vec<String>,
    /// Config fragments merged onto tinyconfig.
    pub fragments: Vec<String>,
    /// The kernel's release string (`6.12.57-kref`).
    pub krelease: String,
    /// The compiler (`gcc (Debian 12.2.0-14+deb12u1) 12.2.0`).
    pub compiler: String,
    /// Build wall time in seconds, where measured.
    pub seconds: Option<f64>,
    /// The build succeeded.
    pub ok: bool,
}

/// How a run ended, for its KCIDB status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Matched its expectation.
    AsExpected,
    /// Differed from its expectation.
    Differs,
    /// No expectation for this kernel: what happened is reported, not judged.
    Observed,
    /// Not applicable to this kernel.
    Skipped,
    /// The harness could not finish the run (timeout before the first marker, harness error).
    HarnessError,
    /// The run never started (QEMU or a backend failed to start).
    NotStarted,
}

impl Verdict {
    /// The KCIDB status string.
    pub fn status(self) -> &'static str {
        match self {
            Verdict::AsExpected => "PASS",
            Verdict::Differs => "FAIL",
            Verdict::Observed => "DONE",
            Verdict::Skipped => "SKIP",
            Verdict::HarnessError => "ERROR",
            Verdict::NotStarted => "MISS",
        }
    }
}

/// One run of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Run<'a> {
    /// Kernel variant.
    pub kernel: &'a str,
    /// Scenario.
    pub scenario: &'a str,
    /// How it ended.
    pub verdict: Verdict,
    /// The kernel reports seen.
    pub splats: &'a [Splat],
    /// Why the expectation is what it is, and what differed.
    pub comment: String,
    /// The console log's file name in the run directory.
    pub console_log: &'a str,
    /// Other files of the run (backend and QEMU logs), by name.
    pub other_logs: Vec<&'a str>,
    /// When the run started.
    pub started: Option<SystemTime>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Everything observed, as the report has it (kept under `misc`).
    pub observations: Value,
}

/// A test path segment: `[a-zA-Z0-9_-]+`, anything else replaced by `_`.
fn path_segment(s: &str) -> String {
    let seg: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if seg.is_empty() {
        "_".into()
    } else {
        seg
    }
}

/// An id tail: anything but NUL, but kept readable.
fn id_part(s: &str) -> String {
    s.replace(['\0', ' '], "_")
}

/// The stable issue id of a report title.
pub fn issue_id(origin: &str, title: &str) -> String {
    let hash = Sha256::digest(title.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{origin}:title-{hex}")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The KCIDB document for `sources`, `builds` and `runs`.
pub fn document(
    who: &Submitter,
    sources: &[Source],
    builds: &[Build],
    runs: &[Run<'_>],
) -> Result<Value, KcidbError> {
    let checkout_id = |name: &str| who.id("checkout", &id_part(name));
    let build_id = |variant: &str| who.id("build", &id_part(variant));

    let checkouts: Vec<Value> = sources
        .iter()
        .map(|s| {
            let mut c = json!({
                "id": checkout_id(&s.name),
                "origin": who.origin,
                "tree_name": s.tree_name,
                "git_commit_name": s.version,
                "valid": true,
                "misc": { "dirty": s.dirty },
            });
            if let Some(commit) = &s.git_commit {
                if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                    c["git_commit_hash"] = json!(commit.to_ascii_lowercase());
                }
            }
            c
        })
        .collect();

    let built: BTreeMap<&str, &Build> = builds.iter().map(|b| (b.variant.as_str(), b)).collect();
    let builds_json: Vec<Value> = builds
        .iter()
        .map(|b| {
            let mut v = json!({
                "id": build_id(&b.variant),
                "checkout_id": checkout_id(&b.source),
                "origin": who.origin,
                "architecture": "x86_64",
                "compiler": b.compiler,
                "config_name": std::iter::once("tinyconfig".to_string())
                    .chain(b.fragments.iter().cloned())
                    .collect::<Vec<_>>()
                    .join("+"),
                "status": if b.ok { "PASS" } else { "FAIL" },
                "comment": format!("{} with patch stacks: {}", b.variant,
                    if b.stacks.is_empty() { "none".to_string() } else { b.stacks.join(", ") }),
                "misc": {
                    "variant": b.variant,
                    "patch_stacks": b.stacks,
                    "config_fragments": b.fragments,
                    "krelease": b.krelease,
                },
            });
            if let Some(s) = b.seconds {
                v["duration"] = json!(s);
            }
            v
        })
        .collect();

    let mut tests = Vec::new();
    let mut issues: BTreeMap<String, Value> = BTreeMap::new();
    let mut incidents = Vec::new();
    for r in runs {
        if !built.contains_key(r.kernel) {
            return Err(KcidbError::UnknownBuild {
                kernel: r.kernel.to_string(),
                scenario: r.scenario.to_string(),
            });
        }
        let test_id = who.id(
            "test",
            &format!("{}.{}", id_part(r.kernel), id_part(r.scenario)),
        );
        let titles: Vec<&str> = r.splats.iter().map(|s| s.title.as_str()).collect();
        let mut t = json!({
            "id": test_id,
            "build_id": build_id(r.kernel),
            "origin": who.origin,
            "path": format!("vgn.{}", path_segment(r.scenario)),
            "status": r.verdict.status(),
            "duration": r.seconds,
            "comment": r.comment,
            "environment": { "comment": "QEMU (TCG) with vhost-gpio and vhost-i2c-eeprom" },
            "misc": {
                "kernel": r.kernel,
                "scenario": r.scenario,
                "verdict": r.verdict,
                "splat_titles": titles,
                "observations": r.observations,
            },
        });
        if let Some(start) = r.started {
            t["start_time"] = json!(rfc3339(start));
        }
        if let Some(url) = who.url(r.console_log) {
            t["log_url"] = json!(url);
        }
        let outputs: Vec<Value> = r
            .other_logs
            .iter()
            .filter_map(|f| who.url(f).map(|url| json!({ "name": f, "url": url })))
            .collect();
        if !outputs.is_empty() {
            t["output_files"] = json!(outputs);
        }
        if let Some(first) = r.splats.first() {
            // The first report, as the kernel printed its first line: enough to recognise it.
            t["log_excerpt"] = json!(first.headline.chars().take(16 * 1024).collect::<String>());
        }
        for (n, s) in r.splats.iter().enumerate() {
            let id = issue_id(&who.origin, &s.title);
            issues.entry(id.clone()).or_insert_with(|| {
                json!({
                    "id": id,
                    "version": 1,
                    "origin": who.origin,
                    "report_subject": s.title,
                    "culprit": { "code": true },
                    "categories": [format!("runtime.{}", path_segment(&s.kind))],
                    "comment": format!("{} (first seen as: {})", s.title, s.headline),
                })
            });
            incidents.push(json!({
                "id": format!("{test_id}.incident.{n}"),
                "origin": who.origin,
                "issue_id": id,
                "issue_version": 1,
                "build_id": build_id(r.kernel),
                "test_id": test_id,
                "present": true,
                "comment": s.title,
            }));
        }
        tests.push(t);
    }

    Ok(json!({
        "version": { "major": SCHEMA_VERSION.0, "minor": SCHEMA_VERSION.1 },
        "checkouts": checkouts,
        "builds": builds_json,
        "tests": tests,
        "issues": issues.into_values().collect::<Vec<_>>(),
        "incidents": incidents,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn who() -> Submitter {
        Submitter::new("vgn_ci", "job-42", "https://ci.example/job/42").unwrap()
    }

    #[test]
    fn submitter_checks_origin_and_submission() {
        assert_eq!(
            Submitter::new("VGN", "x", ""),
            Err(KcidbError::BadOrigin("VGN".into()))
        );
        assert_eq!(
            Submitter::new("a-b", "x", ""),
            Err(KcidbError::BadOrigin("a-b".into()))
        );
        assert_eq!(
            Submitter::new("vgn", "", ""),
            Err(KcidbError::BadSubmission(String::new()))
        );
        let w = who();
        assert_eq!(w.url_base, "https://ci.example/job/42/");
        assert_eq!(
            w.url("a b#c.log").as_deref(),
            Some("https://ci.example/job/42/a%20b%23c.log")
        );
        assert_eq!(Submitter::new("vgn", "x", "").unwrap().url("c.log"), None);
    }

    #[test]
    fn a_document_with_a_splat_two_runs_one_issue() {
        let console =
            "WARNING: CPU: 0 PID: 71 at drivers/gpio/gpiolib.c:2164 gpiod_free+0x4c/0x60\n";
        let splats = classify(console).splats;
        let sources = [Source {
            name: "linux-source-6.1_6.1.192-3".into(),
            tree_name: "Debian linux-source-6.1".into(),
            version: "6.1.192-3".into(),
            git_commit: None,
            dirty: false,
        }];
        let builds = [Build {
            variant: "6.1-baseline".into(),
            source: "linux-source-6.1_6.1.192-3".into(),
            stacks: vec!["test".into()],
            fragments: vec!["common.config".into(), "6.1.config".into()],
            krelease: "6.1.192-baseline".into(),
            compiler: "gcc 12.2.0".into(),
            seconds: Some(600.5),
            ok: true,
        }];
        let run = |scenario, verdict| Run {
            kernel: "6.1-baseline",
            scenario,
            verdict,
            splats: &splats,
            comment: "the 2020 double put".into(),
            console_log: "6.1-baseline--unbind.console.log",
            other_logs: vec!["6.1-baseline--unbind.qemu.log"],
            started: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000)),
            seconds: 3.25,
            observations: json!({ "gpio_virtio_refcnt": 0 }),
        };
        let runs = [
            run("unbind", Verdict::AsExpected),
            run("unplug-then-unbind", Verdict::Differs),
        ];
        let doc = document(&who(), &sources, &builds, &runs).unwrap();
        if let Some(path) = std::env::var_os("VGN_KCIDB_SAMPLE") {
            // scripts/test validates this sample with kcidb-io's schema.
            std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        }
        assert_eq!(doc["version"]["major"], 5);
        assert_eq!(
            doc["checkouts"][0]["id"],
            "vgn_ci:job-42.checkout.linux-source-6.1_6.1.192-3"
        );
        assert_eq!(doc["builds"][0]["checkout_id"], doc["checkouts"][0]["id"]);
        assert_eq!(
            doc["builds"][0]["config_name"],
            "tinyconfig+common.config+6.1.config"
        );
        let tests = doc["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0]["path"], "vgn.unbind");
        assert_eq!(tests[0]["status"], "PASS");
        assert_eq!(tests[1]["status"], "FAIL");
        assert_eq!(tests[1]["path"], "vgn.unplug-then-unbind");
        assert_eq!(tests[0]["start_time"], "2026-05-28T20:26:40Z");
        assert_eq!(
            tests[0]["log_url"],
            "https://ci.example/job/42/6.1-baseline--unbind.console.log"
        );
        assert_eq!(tests[0]["misc"]["splat_titles"][0], "WARNING in gpiod_free");
        let issues = doc["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "one title, one issue");
        assert_eq!(issues[0]["report_subject"], "WARNING in gpiod_free");
        assert_eq!(issues[0]["id"], issue_id("vgn_ci", "WARNING in gpiod_free"));
        let incidents = doc["incidents"].as_array().unwrap();
        assert_eq!(incidents.len(), 2);
        assert_eq!(incidents[1]["test_id"], tests[1]["id"]);
        assert_eq!(incidents[1]["issue_id"], issues[0]["id"]);
    }

    #[test]
    fn statuses_and_paths() {
        let all = [
            (Verdict::AsExpected, "PASS"),
            (Verdict::Differs, "FAIL"),
            (Verdict::Observed, "DONE"),
            (Verdict::Skipped, "SKIP"),
            (Verdict::HarnessError, "ERROR"),
            (Verdict::NotStarted, "MISS"),
        ];
        for (v, s) in all {
            assert_eq!(v.status(), s);
        }
        assert_eq!(path_segment("level-irq"), "level-irq");
        assert_eq!(path_segment("my scenario.v2"), "my_scenario_v2");
        assert_eq!(path_segment(""), "_");
    }

    #[test]
    fn a_run_without_its_build_is_an_error() {
        let runs = [Run {
            kernel: "nope",
            scenario: "unbind",
            verdict: Verdict::Observed,
            splats: &[],
            comment: String::new(),
            console_log: "",
            other_logs: vec![],
            started: None,
            seconds: 0.0,
            observations: Value::Null,
        }];
        assert_eq!(
            document(&who(), &[], &[], &runs),
            Err(KcidbError::UnknownBuild {
                kernel: "nope".into(),
                scenario: "unbind".into()
            })
        );
    }
}
