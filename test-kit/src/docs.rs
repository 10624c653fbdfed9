// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Man pages (clap_mangen) and shell completions (clap_complete) generated from a
//! program's clap command, and the check that the committed copies under `dist/` are
//! current. Regenerate them all with
//!
//! ```text
//! VGN_UPDATE_DOCS=1 cargo test -p vhost-gpio -p vhost-i2c-eeprom --test docs
//! ```

use std::path::Path;

use clap_complete::Shell;

/// The generated files of `cmd`: (path under `dist/`, contents). The man page of the
/// program and of each subcommand (`NAME-SUB.1`), completions for bash, zsh and fish.
pub fn generate(cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        // clap names are &'static str without its "string" feature; a test leaks a few bytes.
        let leaked: &'static str = Box::leak(sub_name.clone().into_boxed_str());
        pages.push((sub_name, sub.clone().name(leaked)));
    }
    for (page, c) in pages {
        let mut buf = Vec::new();
        // Rendering into a Vec cannot fail.
        let _ = clap_mangen::Man::new(c).render(&mut buf);
        out.push((format!("man/{page}.1"), buf));
    }
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
        out.push((format!("completions/{file}"), buf));
    }
    out
}

/// Compares the generated files with those under `dist`; with `VGN_UPDATE_DOCS=1` in the
/// environment, writes them instead. Returns the stale files' paths (empty when current).
pub fn check_or_update(cmd: clap::Command, dist: &Path) -> Vec<String> {
    let update = std::env::var_os("VGN_UPDATE_DOCS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (rel, contents) in generate(cmd) {
        let path = dist.join(&rel);
        if update {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&path, &contents) {
                stale.push(format!("{rel}: {e}"));
            }
        } else if std::fs::read(&path).ok().as_deref() != Some(contents.as_slice()) {
            stale.push(rel);
        }
    }
    stale
}
