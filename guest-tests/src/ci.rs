// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a reproduction or a merge writes for CI beside the table: report.json, the JUnit XML,
//! report.html and, when asked, a KCIDB document; and the exit status of the runs. This module
//! maps the report's runs onto [`crate::html`], [`crate::kcidb`] and [`crate::shard`]; the
//! kernel sources and builds come from the files `scripts/build-guest` leaves in each
//! variant's cache directory (`origin`, `krelease`, `base`, `build-seconds`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value as Json;

use crate::html::{self, Cell, Outcome};
use crate::kcidb::{self, Build, KcidbError, Source, Submitter};
use crate::report::{self, RunReport, Verdict};
use crate::shard::{Exit, RunEnd};

/// Why the outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    /// Writing a file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The KCIDB document could not be made.
    #[error(transparent)]
    Kcidb(#[from] KcidbError),
}

/// How a run ended, for the exit status.
pub fn run_end(r: &RunReport) -> RunEnd {
    if r.infrastructure.is_some() {
        return RunEnd::Infrastructure;
    }
    match r.verdict {
        Verdict::AsExpected => RunEnd::AsExpected,
        Verdict::Unexpected => RunEnd::Differs,
        Verdict::Observed => RunEnd::Observed,
        Verdict::Skipped => RunEnd::Skipped,
    }
}

/// The exit status of a set of runs.
pub fn exit_of(runs: &[RunReport]) -> Exit {
    Exit::of_runs(runs.iter().map(run_end))
}

/// The run's KCIDB verdict.
pub fn kcidb_verdict(r: &RunReport) -> kcidb::Verdict {
    match (&r.infrastructure, r.verdict) {
        (Some(_), _) if r.ended.starts_with("harness error") => kcidb::Verdict::NotStarted,
        (Some(_), _) => kcidb::Verdict::HarnessError,
        (None, Verdict::AsExpected) => kcidb::Verdict::AsExpected,
        (None, Verdict::Unexpected) => kcidb::Verdict::Differs,
        (None, Verdict::Observed) => kcidb::Verdict::Observed,
        (None, Verdict::Skipped) => kcidb::Verdict::Skipped,
    }
}

/// The run's colour on the page.
pub fn outcome(r: &RunReport) -> Outcome {
    match (&r.infrastructure, r.verdict) {
        (Some(_), _) => Outcome::Error,
        (None, Verdict::AsExpected) => Outcome::AsExpected,
        (None, Verdict::Unexpected) => Outcome::Differs,
        (None, Verdict::Observed) => Outcome::Observed,
        (None, Verdict::Skipped) => Outcome::Skipped,
    }
}

/// The other logs of a run (`<kernel>--<scenario>.<what>.log`) present in `dir`, by file
/// name, the console log excluded.
pub fn other_logs(dir: &Path, r: &RunReport) -> Vec<String> {
    let prefix = format!("{}--{}.", r.kernel, r.scenario);
    let mut logs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".log") && *n != r.console_log)
        .collect();
    logs.sort();
    logs
}

/// What a run observed, as (name, value) pairs: the report's fields except the splats.
pub fn observed_pairs(r: &RunReport) -> Vec<(String, String)> {
    let Ok(Json::Object(map)) = serde_json::to_value(&r.observations) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(k, _)| k != "splats")
        .map(|(k, v)| {
            let text = match v {
                Json::String(s) => s,
                Json::Null => "not printed".into(),
                v => v.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// The label of a log on the page, from its file name (`...--unbind.qemu.log`: `qemu`).
fn log_label(file: &str) -> String {
    file.trim_end_matches(".log")
        .rsplit('.')
        .next()
        .unwrap_or(file)
        .to_string()
}

/// The page for `runs`, whose logs are in `dir`.
pub fn html_page(dir: &Path, runs: &[RunReport], meta: &str) -> String {
    let mut kernels: Vec<&str> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in runs {
        if !kernels.contains(&r.kernel.as_str()) {
            kernels.push(&r.kernel);
        }
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let whys: Vec<String> = runs
        .iter()
        .map(|r| match &r.infrastructure {
            Some(i) => format!("{} [infrastructure: {i}]", r.why),
            None => r.why.clone(),
        })
        .collect();
    let cells: Vec<Cell<'_>> = runs
        .iter()
        .zip(&whys)
        .map(|(r, why)| {
            let mut logs = vec![("console".to_string(), r.console_log.clone())];
            logs.extend(other_logs(dir, r).into_iter().map(|f| (log_label(&f), f)));
            Cell {
                kernel: &r.kernel,
                scenario: &r.scenario,
                outcome: outcome(r),
                splats: &r.observations.console.splats,
                observed: {
                    let mut o = Vec::new();
                    if let Some(why) = &r.skipped {
                        o.push(("skipped".to_string(), why.clone()));
                    }
                    if let Some(c) = &r.kernel_config {
                        o.push(("kernel config".to_string(), c.clone()));
                    }
                    o.push(("ended".to_string(), r.ended.clone()));
                    o.extend(observed_pairs(r));
                    o
                },
                why,
                mismatches: &r.mismatches,
                logs,
            }
        })
        .collect();
    html::render(
        "vhost-gpio-nvmem: kernel x scenario",
        meta,
        &kernels,
        &scenarios,
        &cells,
    )
}

/// `key: value` lines of a variant's `origin` file.
fn origin_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The source and build of `variant` from what `scripts/build-guest` recorded in its cache
/// directory `dir`. A field not recorded stays empty ("unrecorded" for the source).
pub fn source_and_build(variant: &str, dir: &Path) -> (Source, Build) {
    let fields = read_trimmed(&dir.join("origin"))
        .map(|t| origin_fields(&t))
        .unwrap_or_default();
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let words = |k: &str| -> Vec<String> {
        get(k)
            .map(|v| {
                v.split_whitespace()
                    .filter(|w| *w != "none")
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let source = if let Some(src) = get("source") {
        // `linux-source-6.12 6.12.57-1`: Debian's source package and its version.
        let (pkg, version) = src.split_once(' ').unwrap_or((src.as_str(), "unknown"));
        Source {
            name: format!("{pkg}_{version}"),
            tree_name: format!("Debian {pkg}"),
            version: version.to_string(),
            git_commit: None,
            dirty: false,
        }
    } else if let Some(tree) = get("tree") {
        let describe = get("describe").unwrap_or_else(|| "not a git tree".into());
        let base = Path::new(&tree)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| tree.clone());
        Source {
            name: format!("tree-{base}-{describe}"),
            tree_name: base,
            dirty: describe.ends_with("-dirty"),
            version: describe,
            git_commit: None,
        }
    } else if let Some(image) = get("image") {
        Source {
            name: format!("image-{variant}"),
            tree_name: image,
            version: read_trimmed(&dir.join("krelease")).unwrap_or_default(),
            git_commit: None,
            dirty: false,
        }
    } else {
        Source {
            name: format!("unrecorded-{variant}"),
            tree_name: "unrecorded (no origin file in the variant's cache directory)".into(),
            version: "unknown".into(),
            git_commit: None,
            dirty: false,
        }
    };
    let compiler = read_trimmed(&dir.join("base"))
        .and_then(|b| {
            b.lines()
                .find_map(|l| l.strip_prefix("cc ").map(str::to_string))
        })
        .unwrap_or_default();
    let build = Build {
        variant: variant.to_string(),
        source: source.name.clone(),
        stacks: words("stacks"),
        fragments: words("config fragments"),
        krelease: read_trimmed(&dir.join("krelease")).unwrap_or_default(),
        compiler,
        seconds: read_trimmed(&dir.join("build-seconds")).and_then(|s| s.parse().ok()),
        ok: true,
    };
    (source, build)
}

/// The KCIDB document for `runs`, their builds read from `variants_dir/<kernel>/` and their
/// logs from `dir`.
pub fn kcidb_document(
    who: &Submitter,
    variants_dir: &Path,
    dir: &Path,
    runs: &[RunReport],
) -> Result<Json, KcidbError> {
    let mut sources: Vec<Source> = Vec::new();
    let mut builds: Vec<Build> = Vec::new();
    for r in runs {
        if builds.iter().any(|b| b.variant == r.kernel) {
            continue;
        }
        let (s, b) = source_and_build(&r.kernel, &variants_dir.join(&r.kernel));
        if !sources.iter().any(|x| x.name == s.name) {
            sources.push(s);
        }
        builds.push(b);
    }
    let logs: Vec<Vec<String>> = runs.iter().map(|r| other_logs(dir, r)).collect();
    let kruns: Vec<kcidb::Run<'_>> = runs
        .iter()
        .zip(&logs)
        .map(|(r, logs)| kcidb::Run {
            kernel: &r.kernel,
            scenario: &r.scenario,
            verdict: kcidb_verdict(r),
            splats: &r.observations.console.splats,
            comment: match (&r.infrastructure, r.mismatches.is_empty()) {
                (Some(i), _) => format!("{} [infrastructure: {i}]", r.why.trim()),
                (None, _) if r.skipped.is_some() => format!(
                    "skipped: {} [{}]",
                    r.skipped.as_deref().unwrap_or_default(),
                    r.why.trim()
                ),
                (None, true) => r.why.trim().to_string(),
                (None, false) => format!("{} [differs: {}]", r.why.trim(), r.mismatches.join("; ")),
            },
            console_log: &r.console_log,
            other_logs: logs.iter().map(String::as_str).collect(),
            started: r
                .started
                .as_deref()
                .and_then(|s| humantime::parse_rfc3339(s).ok()),
            seconds: r.seconds,
            observations: serde_json::to_value(&r.observations).unwrap_or(Json::Null),
        })
        .collect();
    kcidb::document(who, &sources, &builds, &kruns)
}

/// Where and how to write a KCIDB document.
#[derive(Clone, Debug)]
pub struct KcidbOut {
    /// The file.
    pub path: PathBuf,
    /// Origin, submission id and URL base.
    pub who: Submitter,
    /// `$VGN_CACHE/variants`.
    pub variants_dir: PathBuf,
}

/// A submission id for now: a UTC time stamp.
pub fn default_submission() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "")
}

fn write(path: &Path, text: &str) -> Result<(), CiError> {
    std::fs::write(path, text).map_err(|source| CiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes report.json, report.junit.xml and report.html into `dir` (and the KCIDB document if
/// asked); returns the paths written.
pub fn write_outputs(
    dir: &Path,
    runs: &[RunReport],
    meta: &str,
    kcidb: Option<&KcidbOut>,
) -> Result<Vec<PathBuf>, CiError> {
    let json = dir.join("report.json");
    report::write_json(&json, runs).map_err(|source| CiError::Write {
        path: json.clone(),
        source,
    })?;
    let junit = dir.join("report.junit.xml");
    write(&junit, &report::junit(runs))?;
    let page = dir.join("report.html");
    write(&page, &html_page(dir, runs, meta))?;
    let mut out = vec![json, junit, page];
    if let Some(k) = kcidb {
        let doc = kcidb_document(&k.who, &k.variants_dir, dir, runs)?;
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        write(&k.path, &text)?;
        out.push(k.path.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(verdict: Verdict, infra: Option<&str>, ended: &str) -> RunReport {
        let mut r = RunReport::new("6.1-baseline", "unbind", "6.1-baseline--unbind.console.log");
        r.verdict = verdict;
        r.infrastructure = infra.map(str::to_string);
        r.ended = ended.into();
        r
    }

    #[test]
    fn exit_status_from_run_ends() {
        let ok = run(Verdict::AsExpected, None, "done");
        let obs = run(Verdict::Observed, None, "done");
        let differs = run(Verdict::Unexpected, None, "done");
        let no_qemu = run(
            Verdict::Unexpected,
            Some("harness error: starting qemu"),
            "harness error: starting qemu",
        );
        let no_marker = run(
            Verdict::Unexpected,
            Some("the guest never reached its first marker"),
            "timeout",
        );
        assert_eq!(exit_of(&[ok.clone(), obs.clone()]).code(), 0);
        assert_eq!(exit_of(&[ok.clone(), differs.clone()]).code(), 1);
        assert_eq!(exit_of(&[differs.clone(), no_qemu.clone()]).code(), 3);
        assert_eq!(exit_of(&[ok.clone(), no_marker.clone()]).code(), 3);
        assert_eq!(kcidb_verdict(&no_qemu), kcidb::Verdict::NotStarted);
        assert_eq!(kcidb_verdict(&no_marker), kcidb::Verdict::HarnessError);
        assert_eq!(kcidb_verdict(&differs), kcidb::Verdict::Differs);
        assert_eq!(kcidb_verdict(&obs), kcidb::Verdict::Observed);
        let mut skipped = run(Verdict::Skipped, None, "done");
        skipped.skipped = Some("kernel lacks at24.wp_over_config".into());
        assert_eq!(exit_of(&[ok.clone(), skipped.clone()]).code(), 0);
        assert_eq!(exit_of(&[skipped.clone(), differs.clone()]).code(), 1);
        assert_eq!(kcidb_verdict(&skipped), kcidb::Verdict::Skipped);
        assert_eq!(kcidb_verdict(&skipped).status(), "SKIP");
        assert_eq!(outcome(&skipped), Outcome::Skipped);
        assert_eq!(outcome(&no_marker), Outcome::Error);
        assert_eq!(outcome(&ok), Outcome::AsExpected);
    }

    #[test]
    fn sources_and_builds_come_from_the_cache_files() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("6.12-kref");
        std::fs::create_dir(&v).unwrap();
        std::fs::write(
            v.join("origin"),
            "variant: 6.12-kref\nkind: patched\nsource: linux-source-6.12 6.12.57-1\n\
             stacks: test kref\nbase: 6.12-baseline\nconfig fragments: common.config 6.12.config\n",
        )
        .unwrap();
        std::fs::write(v.join("krelease"), "6.12.57-kref\n").unwrap();
        std::fs::write(
            v.join("base"),
            "recipe 3\ncc gcc (Debian 12.2.0-14) 12.2.0\n",
        )
        .unwrap();
        std::fs::write(v.join("build-seconds"), "412\n").unwrap();
        let (s, b) = source_and_build("6.12-kref", &v);
        assert_eq!(s.name, "linux-source-6.12_6.12.57-1");
        assert_eq!(s.version, "6.12.57-1");
        assert_eq!(b.stacks, ["test", "kref"]);
        assert_eq!(b.fragments, ["common.config", "6.12.config"]);
        assert_eq!(b.krelease, "6.12.57-kref");
        assert_eq!(b.compiler, "gcc (Debian 12.2.0-14) 12.2.0");
        assert_eq!(b.seconds, Some(412.0));

        std::fs::write(
            v.join("origin"),
            "variant: mine\nkind: tree\ntree: /src/linux\ndescribe: v7.3-rc2-5-gabc-dirty\n",
        )
        .unwrap();
        let (s, _) = source_and_build("mine", &v);
        assert_eq!((s.tree_name.as_str(), s.dirty), ("linux", true));
        assert_eq!(s.version, "v7.3-rc2-5-gabc-dirty");

        let (s, b) = source_and_build("gone", &d.path().join("gone"));
        assert_eq!(s.version, "unknown");
        assert_eq!(b.seconds, None);
    }

    #[test]
    fn outputs_name_every_run_and_its_logs() {
        let d = tempfile::tempdir().unwrap();
        let mut r = run(Verdict::AsExpected, None, "done");
        r.why = "why <so>".into();
        std::fs::write(d.path().join("6.1-baseline--unbind.console.log"), "x").unwrap();
        std::fs::write(d.path().join("6.1-baseline--unbind.qemu.log"), "x").unwrap();
        let k = KcidbOut {
            path: d.path().join("kcidb.json"),
            who: Submitter::new("vhost_gpio_nvmem", "t1", "https://ci.example/1").unwrap(),
            variants_dir: d.path().join("variants"),
        };
        let written = write_outputs(d.path(), &[r], "shard 1/1", Some(&k)).unwrap();
        assert_eq!(written.len(), 4);
        let page = std::fs::read_to_string(d.path().join("report.html")).unwrap();
        assert_eq!(page.matches("data-kernel=").count(), 1);
        assert!(page.contains("6.1-baseline--unbind.qemu.log"), "{page}");
        assert!(page.contains("why &lt;so&gt;"));
        let doc: Json = serde_json::from_str(&std::fs::read_to_string(&k.path).unwrap()).unwrap();
        let t = &doc["tests"][0];
        assert_eq!(t["status"], "PASS");
        assert_eq!(
            t["log_url"],
            "https://ci.example/1/6.1-baseline--unbind.console.log"
        );
        assert_eq!(
            t["output_files"][0]["name"],
            "6.1-baseline--unbind.qemu.log"
        );
    }
}
