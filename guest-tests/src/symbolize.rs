// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Resolving the frames of a kernel report (`gpiod_free+0x4c/0x60 [gpio_virtio]`) to
//! `file:line`, with the variant's own `vmlinux` and module objects, as the kernel's
//! `scripts/decode_stacktrace.sh` does: the symbol's value from the object's symbol table
//! (`readelf -s`, picking the definition whose size matches the printed one when a name is
//! defined more than once), plus the printed offset, through `addr2line -f -i`. A module is a
//! relocatable object, so its addresses are section offsets (`addr2line -j SECTION`).
//!
//! The console log is never changed: resolved locations go into [`Frame::source`] and
//! [`Frame::inlined_by`] beside the raw frame. A frame whose object has no line table (a
//! kernel built without debug information) or no such symbol is left unresolved, and
//! [`Symbolizer::resolve`] says how many were.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::classify::{Frame, Splat};
use crate::error_chain;

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// A binutils program could not be run.
    #[error("running {program}")]
    Spawn {
        /// `readelf` or `addr2line`.
        program: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A binutils program failed.
    #[error("{program} {object} failed: {stderr}")]
    Failed {
        /// `readelf` or `addr2line`.
        program: &'static str,
        /// The object file.
        object: PathBuf,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// One function symbol of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Symbol {
    value: u64,
    size: u64,
    /// Section name; only needed for relocatable objects.
    section: String,
}

/// The symbol table of one object, read once.
#[derive(Debug)]
struct Object {
    relocatable: bool,
    has_lines: bool,
    symbols: HashMap<String, Vec<Symbol>>,
}

/// The frames asked of one `addr2line`: the object and, for a relocatable one, the
/// section; each with (frame index, address).
type Batch = (PathBuf, Option<String>);

/// How many frames a call resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    /// Frames that got a `file:line`.
    pub resolved: usize,
    /// Frames that did not (no object, no symbol, or no line table).
    pub unresolved: usize,
}

/// Resolves frames against one kernel build: its `vmlinux` and its modules.
#[derive(Debug)]
pub struct Symbolizer {
    vmlinux: PathBuf,
    /// Module name (with `_`) → its `.ko`, from the directories indexed so far.
    modules: HashMap<String, PathBuf>,
    /// Directories still to index, in order: each is walked only when a frame names a module
    /// not found in the earlier ones (a run without module frames walks none).
    unindexed: std::collections::VecDeque<PathBuf>,
    /// Prefixes stripped from source paths (the source tree), longest first.
    roots: Vec<String>,
    objects: HashMap<PathBuf, Option<Object>>,
}

impl Symbolizer {
    /// A symbolizer for `vmlinux`, finding modules (`*.ko`) anywhere under `module_dirs`, and
    /// printing source paths relative to `source_roots` where they start with one.
    pub fn new(vmlinux: &Path, module_dirs: &[PathBuf], source_roots: &[PathBuf]) -> Symbolizer {
        let mut roots: Vec<String> = source_roots
            .iter()
            .map(|r| {
                let mut s = r.display().to_string();
                if !s.ends_with('/') {
                    s.push('/');
                }
                s
            })
            .collect();
        roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
        Symbolizer {
            vmlinux: vmlinux.to_path_buf(),
            modules: HashMap::new(),
            unindexed: module_dirs.iter().cloned().collect(),
            roots,
            objects: HashMap::new(),
        }
    }

    /// A symbolizer for a variant built by `scripts/build-guest`: its `kbuild/vmlinux`, the
    /// modules under its directory (kernel modules and the guest module), source paths
    /// relative to the patched tree named in its `srcdir` file and to its object tree.
    pub fn for_variant(dir: &Path) -> Symbolizer {
        let kbuild = dir.join("kbuild");
        let mut roots = vec![kbuild.clone(), dir.to_path_buf()];
        if let Ok(src) = std::fs::read_to_string(dir.join("srcdir")) {
            roots.push(PathBuf::from(src.trim()));
        }
        // The installed modules and the guest module first: walking the whole directory
        // (the object tree too, about 100 000 files) finds the same objects first, as it
        // visits these two before the tree, and is left for a module found in neither.
        let dirs = [
            dir.join("guest-module"),
            dir.join("modroot"),
            dir.to_path_buf(),
        ];
        Symbolizer::new(&kbuild.join("vmlinux"), &dirs, &roots)
    }

    /// The object file a frame's function lives in.
    fn object_path(&mut self, frame: &Frame) -> Option<PathBuf> {
        let Some(m) = &frame.module else {
            return Some(self.vmlinux.clone());
        };
        let name = m.replace('-', "_");
        loop {
            if let Some(p) = self.modules.get(&name) {
                return Some(p.clone());
            }
            let dir = self.unindexed.pop_front()?;
            index_modules(&dir, &mut self.modules, 0);
        }
    }

    fn object(&mut self, path: &Path) -> Option<&Object> {
        if !self.objects.contains_key(path) {
            let loaded = match load_object(path) {
                Ok(o) => Some(o),
                Err(e) => {
                    log::warn!("symbolizing: {}: {}", path.display(), error_chain(&e));
                    None
                }
            };
            self.objects.insert(path.to_path_buf(), loaded);
        }
        self.objects.get(path).and_then(Option::as_ref)
    }

    /// Resolves every frame of every report in `splats`.
    pub fn resolve_splats(&mut self, splats: &mut [Splat]) -> Resolved {
        let mut frames: Vec<&mut Frame> = splats.iter_mut().flat_map(Splat::frames_mut).collect();
        self.resolve(&mut frames)
    }

    /// Resolves `frames` in place: one `addr2line` per object and section.
    pub fn resolve(&mut self, frames: &mut [&mut Frame]) -> Resolved {
        let mut batches: HashMap<Batch, Vec<(usize, u64)>> = HashMap::new();
        let mut count = Resolved::default();
        for (i, frame) in frames.iter().enumerate() {
            let Some(path) = self.object_path(frame) else {
                count.unresolved += 1;
                continue;
            };
            let Some(object) = self.object(&path) else {
                count.unresolved += 1;
                continue;
            };
            if !object.has_lines {
                count.unresolved += 1;
                continue;
            }
            let Some(symbol) = pick(object.symbols.get(&frame.function), frame.size) else {
                count.unresolved += 1;
                continue;
            };
            let section = object.relocatable.then(|| symbol.section.clone());
            batches
                .entry((path, section))
                .or_default()
                .push((i, symbol.value.saturating_add(frame.offset)));
        }
        for ((path, section), wanted) in batches {
            let addresses: Vec<u64> = wanted.iter().map(|&(_, a)| a).collect();
            let answers = match addr2line(&path, section.as_deref(), &addresses) {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("symbolizing: {}", error_chain(&e));
                    count.unresolved += wanted.len();
                    continue;
                }
            };
            for (&(i, address), answer) in wanted.iter().zip(answers) {
                let Some(frame) = frames.get_mut(i) else {
                    continue;
                };
                match answer.first().and_then(|(_, at)| at.clone()) {
                    Some(at) => {
                        frame.source = Some(self.relative(&at));
                        frame.inlined_by = answer
                            .iter()
                            .skip(1)
                            .map(|(func, at)| match at {
                                Some(at) => format!("{func} ({})", self.relative(at)),
                                None => func.clone(),
                            })
                            .collect();
                        count.resolved += 1;
                    }
                    None => {
                        log::debug!(
                            "symbolizing: no line for {address:#x} in {}",
                            path.display()
                        );
                        count.unresolved += 1;
                    }
                }
            }
        }
        count
    }

    fn relative(&self, at: &str) -> String {
        for root in &self.roots {
            if let Some(rest) = at.strip_prefix(root.as_str()) {
                return collapse_parents(rest);
            }
        }
        at.to_string()
    }
}

/// `kbuild/../drivers/gpio/gpiolib.c` as `drivers/gpio/gpiolib.c`: an out-of-tree build's
/// object directory names sources through `..`; the path is shown relative to the tree.
fn collapse_parents(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            "." => {}
            _ => parts.push(p),
        }
    }
    parts.join("/")
}

/// The definition of a name whose size matches the printed one (static functions of the
/// same name in several files), else the only one.
fn pick(symbols: Option<&Vec<Symbol>>, size: u64) -> Option<&Symbol> {
    let symbols = symbols?;
    symbols
        .iter()
        .find(|s| s.size == size)
        .or_else(|| (symbols.len() == 1).then(|| symbols.first()).flatten())
}

fn index_modules(dir: &Path, out: &mut HashMap<String, PathBuf>, depth: usize) {
    if depth > 12 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            subdirs.push(path);
        } else if path.extension().is_some_and(|e| e == "ko") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                out.entry(stem.replace('-', "_")).or_insert(path);
            }
        }
    }
    subdirs.sort();
    for d in subdirs {
        index_modules(&d, out, depth + 1);
    }
}

fn run(program: &'static str, args: &[&str], object: &Path) -> Result<String, SymbolizeError> {
    let out = Command::new(program)
        .args(args)
        .arg(object)
        .output()
        .map_err(|source| SymbolizeError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(SymbolizeError::Failed {
            program,
            object: object.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn load_object(path: &Path) -> Result<Object, SymbolizeError> {
    let header = run("readelf", &["-hSW"], path)?;
    let relocatable = header
        .lines()
        .any(|l| l.trim_start().starts_with("Type:") && l.contains("REL ("));
    let has_lines = header.contains(" .debug_line ");
    let sections = parse_sections(&header);
    let table = run("readelf", &["-sW"], path)?;
    Ok(Object {
        relocatable,
        has_lines,
        symbols: parse_symbols(&table, &sections),
    })
}

/// Section index → name, from `readelf -S`'s `[Nr] Name Type ...` rows.
fn parse_sections(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix('[') else {
            continue;
        };
        let Some((nr, rest)) = rest.split_once(']') else {
            continue;
        };
        let nr = nr.trim();
        if nr.parse::<u32>().is_err() {
            continue;
        }
        if let Some(name) = rest.split_whitespace().next() {
            out.insert(nr.to_string(), name.to_string());
        }
    }
    out
}

/// Function symbols from `readelf -s`'s `Num: Value Size Type Bind Vis Ndx Name` rows.
fn parse_symbols(text: &str, sections: &HashMap<String, String>) -> HashMap<String, Vec<Symbol>> {
    let mut out: HashMap<String, Vec<Symbol>> = HashMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [num, value, size, kind, _bind, _vis, ndx, name] = cols.as_slice() else {
            continue;
        };
        if !num.ends_with(':') || *kind != "FUNC" || *ndx == "UND" {
            continue;
        }
        let (Ok(value), Some(size)) = (u64::from_str_radix(value, 16), parse_size(size)) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        out.entry(name.to_string()).or_default().push(Symbol {
            value,
            size,
            section: sections.get(*ndx).cloned().unwrap_or_default(),
        });
    }
    out
}

fn parse_size(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One answer of `addr2line -a -f -i -p`: the innermost location first, then what it was
/// inlined into, each as (function, `file:line` or None when unknown).
type Answer = Vec<(String, Option<String>)>;

fn addr2line(
    object: &Path,
    section: Option<&str>,
    addresses: &[u64],
) -> Result<Vec<Answer>, SymbolizeError> {
    let mut args: Vec<String> = vec!["-a".into(), "-f".into(), "-i".into(), "-p".into()];
    if let Some(s) = section {
        args.push("-j".into());
        args.push(s.into());
    }
    args.push("-e".into());
    let addrs: Vec<String> = addresses.iter().map(|a| format!("{a:#x}")).collect();
    let out = Command::new("addr2line")
        .args(&args)
        .arg(object)
        .args(&addrs)
        .output()
        .map_err(|source| SymbolizeError::Spawn {
            program: "addr2line",
            source,
        })?;
    if !out.status.success() {
        return Err(SymbolizeError::Failed {
            program: "addr2line",
            object: object.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse_addr2line(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `addr2line -a -f -i -p` output.
fn parse_addr2line(text: &str) -> Vec<Answer> {
    let mut answers: Vec<Answer> = Vec::new();
    for line in text.lines() {
        let (rest, new) = match line.trim_start().strip_prefix("(inlined by) ") {
            Some(rest) => (rest, false),
            None => match line.split_once(": ") {
                Some((addr, rest)) if addr.starts_with("0x") => (rest, true),
                _ => continue,
            },
        };
        let (func, at) = match rest.split_once(" at ") {
            Some((f, at)) => (f.trim(), at.trim()),
            // `?? ??:0`: neither function nor line known.
            None => (rest.split_whitespace().next().unwrap_or("??"), "??:0"),
        };
        let at = at.split(" (discriminator").next().unwrap_or(at).trim();
        let known = !(at.starts_with("??") || at.ends_with(":0") || at.ends_with(":?"));
        let entry = (func.to_string(), known.then(|| at.to_string()));
        if new {
            answers.push(vec![entry]);
        } else if let Some(last) = answers.last_mut() {
            last.push(entry);
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::parse_frame;

    #[test]
    fn addr2line_output_with_inlining_and_unknowns() {
        let text = "\
0xffffffff8150c0ec: gpiod_free_commit at /src/linux/drivers/gpio/gpiolib.c:2150 (discriminator 2)
 (inlined by) gpiod_free at /src/linux/drivers/gpio/gpiolib.c:2164
0xffffffff81300000: ?? ??:0
0x0000000000000040: virtio_gpio_probe at drivers/gpio/gpio-virtio.c:?
";
        let a = parse_addr2line(text);
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0],
            vec![
                (
                    "gpiod_free_commit".to_string(),
                    Some("/src/linux/drivers/gpio/gpiolib.c:2150".to_string())
                ),
                (
                    "gpiod_free".to_string(),
                    Some("/src/linux/drivers/gpio/gpiolib.c:2164".to_string())
                ),
            ]
        );
        assert_eq!(a[1], vec![("??".to_string(), None)]);
        assert_eq!(a[2][0].1, None);
    }

    #[test]
    fn readelf_tables() {
        let sections = "\
Section Headers:
  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            0000000000000000 000000 000000 00      0   0  0
  [ 2] .text             PROGBITS        0000000000000000 000040 0005e1 00  AX  0   0 16
  [ 5] .text.unlikely    PROGBITS        0000000000000000 000700 000040 00  AX  0   0 16
";
        let s = parse_sections(sections);
        assert_eq!(s["2"], ".text");
        assert_eq!(s["5"], ".text.unlikely");
        let symbols = "\
Symbol table '.symtab' contains 4 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
    10: 0000000000000120   672 FUNC    LOCAL  DEFAULT    2 virtio_gpio_probe
    11: 0000000000000000    64 FUNC    LOCAL  DEFAULT    5 virtio_gpio_remove.cold
    12: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT  UND gpiochip_add_data_with_key
    13: 0000000000000400 0x1c0 FUNC    GLOBAL DEFAULT    2 other@@VERS
";
        let t = parse_symbols(symbols, &s);
        assert_eq!(
            t["virtio_gpio_probe"],
            vec![Symbol {
                value: 0x120,
                size: 672,
                section: ".text".into()
            }]
        );
        assert_eq!(t["virtio_gpio_remove.cold"][0].section, ".text.unlikely");
        assert_eq!(t["other"][0].size, 0x1c0);
        assert!(!t.contains_key("gpiochip_add_data_with_key"));
    }

    #[test]
    fn the_definition_whose_size_matches() {
        let two = vec![
            Symbol {
                value: 0x10,
                size: 0x40,
                section: String::new(),
            },
            Symbol {
                value: 0x90,
                size: 0x60,
                section: String::new(),
            },
        ];
        assert_eq!(pick(Some(&two), 0x60).map(|s| s.value), Some(0x90));
        assert_eq!(pick(Some(&two), 0x99), None);
        assert_eq!(
            pick(Some(&two[..1].to_vec()), 0x99).map(|s| s.value),
            Some(0x10)
        );
        assert_eq!(pick(None, 0x10), None);
    }

    /// Builds a small object with line tables and resolves a frame of it, as a module frame
    /// (relocatable object) would be.
    #[test]
    fn resolves_a_real_relocatable_object() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mod_demo.c");
        std::fs::write(
            &src,
            "int helper(int x)\n{\n\treturn x * 3 + 1;\n}\n\nint entry(int y)\n{\n\tint z = y + 2;\n\treturn helper(z) - 4;\n}\n",
        )
        .unwrap();
        let obj = dir.path().join("mod_demo.ko");
        let status = Command::new("cc")
            .args(["-g", "-O0", "-c", "-o"])
            .arg(&obj)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("cc is needed for this test: {other:?}"),
        }
        let mut sym = Symbolizer::new(
            Path::new("/nonexistent/vmlinux"),
            &[dir.path().to_path_buf()],
            &[dir.path().to_path_buf()],
        );
        let table = load_object(&obj).unwrap();
        assert!(table.relocatable && table.has_lines);
        let entry = &table.symbols["entry"][0];
        let mut frame = parse_frame(&format!("entry+0x4/{:#x} [mod_demo]", entry.size)).unwrap();
        let mut missing = parse_frame("gpiod_free+0x4c/0x60").unwrap();
        let n = sym.resolve(&mut [&mut frame, &mut missing]);
        assert_eq!(
            n,
            Resolved {
                resolved: 1,
                unresolved: 1
            }
        );
        let source = frame.source.expect("resolved");
        assert!(source.starts_with("mod_demo.c:"), "{source}");
        let line: u32 = source.rsplit(':').next().unwrap().parse().unwrap();
        assert!((6..=9).contains(&line), "{source}");
        assert_eq!(missing.source, None, "no vmlinux: left unresolved");
    }
}

#[cfg(test)]
mod collapse_tests {
    use super::collapse_parents;

    #[test]
    fn an_object_directory_prefix_is_collapsed() {
        assert_eq!(
            collapse_parents("kbuild/../drivers/gpio/gpiolib.c:2422"),
            "drivers/gpio/gpiolib.c:2422"
        );
        assert_eq!(collapse_parents("../x/./y.c"), "../x/y.c");
        assert_eq!(collapse_parents("mm/slub.c:4367"), "mm/slub.c:4367");
    }
}
