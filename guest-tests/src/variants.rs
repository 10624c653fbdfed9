// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kernel variant cache written by `scripts/build-guest`:
//! `$VGN_CACHE/variants/<variant>/{bzImage, initramfs.cpio.gz, krelease, ...}`, and the list
//! of variants the project builds, read from `guest-tests/kernel/variants.conf` (the one place
//! that lists them: a variant added there runs without a change here).

use std::path::{Path, PathBuf};

/// The variants of `variants.conf`, in its order (the order reports list them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conf {
    names: Vec<String>,
}

impl Conf {
    /// Parses the text of `variants.conf`: `#` comments, then one variant per line, its name
    /// first.
    pub fn parse(text: &str, path: &str) -> Result<Conf, VariantError> {
        let mut names: Vec<String> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if name.contains('/') || name.starts_with('.') || names.iter().any(|n| n == name) {
                return Err(VariantError::Conf {
                    path: path.to_string(),
                    line: i + 1,
                    message: format!("variant name '{name}' is invalid or repeated"),
                });
            }
            names.push(name.to_string());
        }
        if names.is_empty() {
            return Err(VariantError::Conf {
                path: path.to_string(),
                line: 1,
                message: "no variant".into(),
            });
        }
        Ok(Conf { names })
    }

    /// Reads `variants.conf`.
    pub fn load(path: &Path) -> Result<Conf, VariantError> {
        let text = std::fs::read_to_string(path).map_err(|source| VariantError::ReadConf {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Orders variant names: known ones in the file's order, then others by name.
    pub fn sort(&self, names: &mut [String]) {
        let pos = |n: &String| self.names.iter().position(|k| k == n);
        names.sort_by(|a, b| match (pos(a), pos(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(b),
        });
    }
}

/// Errors locating variants.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    /// Neither VGN_CACHE, XDG_CACHE_HOME nor HOME is set.
    #[error("cannot find the cache: set VGN_CACHE (or HOME)")]
    NoCacheRoot,
    /// Reading the variants directory failed.
    #[error("reading {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A variant asked for is not built (no bzImage or initramfs).
    #[error("variant '{name}' is not built: {missing} missing (run scripts/build-guest)")]
    NotBuilt {
        /// Variant name.
        name: String,
        /// The missing file.
        missing: PathBuf,
    },
    /// A variant name that would escape the cache directory.
    #[error("invalid variant name '{0}'")]
    BadName(String),
    /// `variants.conf` could not be read.
    #[error("reading {path}")]
    ReadConf {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `variants.conf` is not valid.
    #[error("{path}:{line}: {message}")]
    Conf {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Guest memory of a variant, in MiB.
pub const MEMORY_MIB: u32 = 256;

/// Guest memory of a debug variant (see [`Variant::is_debug`]), in MiB.
pub const DEBUG_MEMORY_MIB: u32 = 512;

/// One built kernel variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Name, e.g. `6.1-baseline`.
    pub name: String,
    /// Its directory in the cache.
    pub dir: PathBuf,
}

impl Variant {
    /// The kernel image.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }

    /// The initramfs built by `guest-tests/guest/mkinitramfs`.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio.gz")
    }

    /// The kernel release string, when recorded.
    pub fn krelease(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("krelease"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Whether this is a debug variant: its build's `kbuild/.config` has `CONFIG_KASAN=y`
    /// (the `debug` config fragment). The configuration itself says it, so a debug kernel of
    /// one's own (`--kernel-tree` with KASAN on) is one too.
    pub fn is_debug(&self) -> bool {
        std::fs::read_to_string(self.dir.join("kbuild").join(".config"))
            .is_ok_and(|c| c.lines().any(|l| l.trim() == "CONFIG_KASAN=y"))
    }

    /// Guest memory in MiB: [`DEBUG_MEMORY_MIB`] for a debug variant (KASAN's shadow takes
    /// an eighth of memory, full SLUB debugging and kmemleak's object pool more), else
    /// [`MEMORY_MIB`].
    pub fn memory_mib(&self) -> u32 {
        if self.is_debug() {
            DEBUG_MEMORY_MIB
        } else {
            MEMORY_MIB
        }
    }

    /// Checks that the kernel and the initramfs exist.
    pub fn check_built(&self) -> Result<(), VariantError> {
        for f in [self.bzimage(), self.initramfs()] {
            if !f.is_file() {
                return Err(VariantError::NotBuilt {
                    name: self.name.clone(),
                    missing: f,
                });
            }
        }
        Ok(())
    }
}

/// The cache root from the environment values (VGN_CACHE, XDG_CACHE_HOME, HOME).
pub fn cache_root_from(
    vgn_cache: Option<&str>,
    xdg_cache_home: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let nonempty = |s: Option<&str>| s.filter(|v| !v.is_empty()).map(PathBuf::from);
    nonempty(vgn_cache)
        .or_else(|| nonempty(xdg_cache_home).map(|p| p.join("vhost-gpio-nvmem")))
        .or_else(|| nonempty(home).map(|p| p.join(".cache").join("vhost-gpio-nvmem")))
}

/// The cache root of this process's environment.
pub fn cache_root() -> Result<PathBuf, VariantError> {
    let get = |k: &str| std::env::var(k).ok();
    cache_root_from(
        get("VGN_CACHE").as_deref(),
        get("XDG_CACHE_HOME").as_deref(),
        get("HOME").as_deref(),
    )
    .ok_or(VariantError::NoCacheRoot)
}

/// A variant of the cache by name (not checked for being built).
pub fn variant(cache: &Path, name: &str) -> Result<Variant, VariantError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(VariantError::BadName(name.to_owned()));
    }
    Ok(Variant {
        name: name.to_owned(),
        dir: cache.join("variants").join(name),
    })
}

/// The kernels of the user's own that `scripts/build-guest` built into the cache
/// (`--kernel-tree`, `--patches`, `--kernel-image`): variants whose `origin` file says a kind
/// other than `builtin`, each with that file's text, by name.
pub fn own_kernels(cache: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(cache.join("variants")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let origin = std::fs::read_to_string(e.path().join("origin")).ok()?;
            let kind = origin.lines().find_map(|l| l.strip_prefix("kind: "))?;
            (kind.trim() != "builtin").then_some((name, origin))
        })
        .collect();
    out.sort();
    out
}

/// Every variant of the cache that has a bzImage and an initramfs, in `conf` order.
pub fn built_variants(cache: &Path, conf: &Conf) -> Result<Vec<Variant>, VariantError> {
    let dir = cache.join("variants");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(VariantError::ReadDir { path: dir, source }),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|source| VariantError::ReadDir {
            path: dir.clone(),
            source,
        })?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    conf.sort(&mut names);
    let mut out = Vec::new();
    for n in names {
        let v = variant(cache, &n)?;
        if v.check_built().is_ok() {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_precedence() {
        assert_eq!(
            cache_root_from(Some("/c"), Some("/x"), Some("/h")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_root_from(Some(""), Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/vhost-gpio-nvmem"))
        );
        assert_eq!(
            cache_root_from(None, None, Some("/h")),
            Some(PathBuf::from("/h/.cache/vhost-gpio-nvmem"))
        );
        assert_eq!(cache_root_from(None, None, None), None);
    }

    fn conf() -> Conf {
        Conf::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/variants.conf")).unwrap()
    }

    #[test]
    fn the_conf_lists_the_variants_in_order() {
        let c = Conf::parse(
            "# c\n\n6.1-a  6.1 test -\n  6.1-b 6.1 test 6.1-a # seed\n",
            "v",
        )
        .unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["6.1-a", "6.1-b"]);
        let e = Conf::parse("x 1\nx 2\n", "v").unwrap_err().to_string();
        assert_eq!(e, "v:2: variant name 'x' is invalid or repeated");
        assert!(Conf::parse("# nothing\n", "v").is_err());
        assert!(conf().names().any(|n| n == "6.1-baseline"));
    }

    #[test]
    fn names_sort_known_first() {
        let mut v: Vec<String> = ["zz", "6.12-kref", "6.1-kref-numbfix", "6.1-baseline", "aa"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        conf().sort(&mut v);
        assert_eq!(
            v,
            ["6.1-baseline", "6.1-kref-numbfix", "6.12-kref", "aa", "zz"]
        );
    }

    #[test]
    fn a_kasan_config_makes_a_debug_variant_with_more_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let v = variant(tmp.path(), "6.12-debug").unwrap();
        assert!(!v.is_debug());
        assert_eq!(v.memory_mib(), MEMORY_MIB);
        std::fs::create_dir_all(v.dir.join("kbuild")).unwrap();
        std::fs::write(
            v.dir.join("kbuild/.config"),
            "CONFIG_KASAN_GENERIC=y\n# CONFIG_KASAN is not set\n",
        )
        .unwrap();
        assert!(!v.is_debug());
        std::fs::write(v.dir.join("kbuild/.config"), "CONFIG_X=y\nCONFIG_KASAN=y\n").unwrap();
        assert!(v.is_debug());
        assert_eq!(v.memory_mib(), DEBUG_MEMORY_MIB);
    }

    #[test]
    fn built_variants_needs_kernel_and_initramfs() {
        let tmp = tempfile::tempdir().unwrap();
        let vd = tmp.path().join("variants");
        for (n, files) in [
            ("6.12-kref", &["bzImage", "initramfs.cpio.gz"][..]),
            ("6.1-baseline", &["bzImage", "initramfs.cpio.gz"][..]),
            ("6.1-kref", &["bzImage"][..]),
        ] {
            std::fs::create_dir_all(vd.join(n)).unwrap();
            for f in files {
                std::fs::write(vd.join(n).join(f), b"x").unwrap();
            }
        }
        let got: Vec<String> = built_variants(tmp.path(), &conf())
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(got, ["6.1-baseline", "6.12-kref"]);
        let err = variant(tmp.path(), "6.1-kref").unwrap().check_built();
        assert!(matches!(err, Err(VariantError::NotBuilt { ref name, .. }) if name == "6.1-kref"));
        assert!(matches!(
            variant(tmp.path(), "../x"),
            Err(VariantError::BadName(_))
        ));
        assert!(built_variants(&tmp.path().join("none"), &conf())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn own_kernels_are_the_non_builtin_origins() {
        let cache = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("6.1-baseline", "builtin"),
            ("tree-linux-ab12", "tree"),
            ("image-7.3.0-cd34", "image"),
        ] {
            let d = cache.path().join("variants").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("origin"), format!("variant: {name}\nkind: {kind}\n")).unwrap();
        }
        std::fs::create_dir_all(cache.path().join("variants/no-origin")).unwrap();
        let own: Vec<String> = own_kernels(cache.path())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(own, ["image-7.3.0-cd34", "tree-linux-ab12"]);
        assert!(own_kernels(&cache.path().join("missing")).is_empty());
    }
}
