// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Classification of a guest's serial console: kernel reports (WARNING, BUG, Oops, general
//! protection faults, KASAN, KFENCE, kmemleak, ODEBUG, lockdep, refcount_t, module refcount and
//! slab reports) with their location, function, call trace and a stable title, and the
//! informational gpiolib lines the reproduction counts.
//!
//! The parser reads the console as the kernel prints it on x86_64 (`printk` time stamps
//! optional, `\r` tolerated) and never guesses: a report it cannot place is still recorded,
//! with what it could read.
//!
//! # Titles
//!
//! Every report gets a title in the style of syzkaller's Linux report parser (the names kernel
//! developers search the lists and syzbot for): `WARNING in gpiod_free`, `KASAN:
//! slab-use-after-free Read in gpiod_free`, `BUG: unable to handle kernel NULL pointer
//! dereference in gpio_name_to_desc`, `general protection fault in __srcu_read_lock`,
//! `kernel BUG at kernel/module/main.c:LINE!`, `memory leak in kstrdup_const`, `possible
//! deadlock in gpiod_free`. Line numbers and compiler suffixes (`.isra.0`, `.cold`) are left
//! out, so one bug keeps one title across kernel versions and builds.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One stack frame as the kernel printed it (`name+0xoff/0xsize [module]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function, as printed (compiler suffixes kept).
    pub function: String,
    /// Offset into the function.
    pub offset: u64,
    /// The function's size.
    pub size: u64,
    /// The module the function lives in; none for vmlinux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// False for the unwinder's guesses (`? name+...`).
    pub reliable: bool,
    /// `file:line` of the address, from the variant's debug information (see
    /// [`crate::symbolize`]); none until symbolized, or where the object has no line table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The functions this address was inlined into, innermost first, each as
    /// `function (file:line)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined_by: Vec<String>,
}

impl Frame {
    /// The frame as the kernel printed it.
    pub fn raw(&self) -> String {
        let mut s = format!("{}+{:#x}/{:#x}", self.function, self.offset, self.size);
        if let Some(m) = &self.module {
            s.push_str(" [");
            s.push_str(m);
            s.push(']');
        }
        s
    }
}

/// What a KASAN or KFENCE report adds: the access and the object's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// `slab-use-after-free`, `use-after-free`, `null-ptr-deref`, `out-of-bounds`, ...
    pub bug_type: String,
    /// `Read` or `Write` (empty for a bad free).
    pub access: String,
    /// Bytes accessed, where printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The accessed address (or, for `null-ptr-deref in range`, the range).
    pub address: String,
    /// `comm/pid` of the task that made the access.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// Where the object was allocated, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocated_by: Vec<Frame>,
    /// Where it was freed, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freed_by: Vec<Frame>,
    /// "The buggy address belongs to the object at ... which belongs to the cache ..."
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
}

/// What a kmemleak report adds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReport {
    /// The object's address as printed.
    pub object: String,
    /// Its size in bytes.
    pub size: u64,
    /// The task that allocated it, as printed (`comm "modprobe", pid 70`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comm: String,
}

/// One kernel report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    /// `warning`, `refcount`, `module-refcount`, `odebug`, `lockdep`, `might-sleep`,
    /// `null-deref`, `page-fault`, `gpf`, `bug`, `kasan`, `kfence`, `leak`, `slab` or `oops`.
    pub kind: String,
    /// A stable title in syzkaller's style (see the module docs); the key that groups the same
    /// report across runs.
    #[serde(default)]
    pub title: String,
    /// `file:line` where the kernel printed one (WARNING, kernel BUG at), else the faulting
    /// instruction as `symbol+off/size`.
    pub location: String,
    /// The function the report names: the WARN site's or the faulting one (RIP).
    pub function: String,
    /// Functions of the call trace, innermost first, without offsets; unreliable (`?`)
    /// entries are left out.
    pub trace: Vec<String>,
    /// The report's first line.
    pub headline: String,
    /// The faulting or warning instruction (`RIP:`), as a frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rip: Option<Frame>,
    /// The call trace with offsets and modules, innermost first, unreliable entries included
    /// (flagged). For a kmemleak report, the allocation backtrace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// KASAN, KFENCE and `KASAN: ... in range` details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
    /// kmemleak details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak: Option<LeakReport>,
}

impl Splat {
    /// True if `name` is the reported function or appears in the trace.
    pub fn involves(&self, name: &str) -> bool {
        self.function == name || self.trace.iter().any(|f| f == name)
    }

    /// Every frame of the report (RIP, trace, allocation and free stacks), for symbolizing.
    pub fn frames_mut(&mut self) -> impl Iterator<Item = &mut Frame> {
        let memory = self
            .memory
            .as_mut()
            .map(|m| m.allocated_by.iter_mut().chain(m.freed_by.iter_mut()));
        self.rip
            .iter_mut()
            .chain(self.frames.iter_mut())
            .chain(memory.into_iter().flatten())
    }
}

/// What a console shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleFindings {
    /// Kernel reports, in console order.
    pub splats: Vec<Splat>,
    /// gpiolib printed "REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED".
    pub still_requested: bool,
    /// How many times gpiolib printed "backing chip is gone".
    pub backing_chip_gone: u32,
    /// The same, by the function that printed it (`gpiod_put`, `gpiod_set_value_cansleep`).
    pub backing_chip_gone_by: BTreeMap<String, u32>,
}

impl ConsoleFindings {
    /// True if a report shows the kernel died in a task (an oops of any kind), after which the
    /// guest may never make progress again.
    pub fn fatal(&self) -> bool {
        self.splats.iter().any(|s| {
            !matches!(
                s.kind.as_str(),
                "warning"
                    | "refcount"
                    | "module-refcount"
                    | "odebug"
                    | "lockdep"
                    | "might-sleep"
                    | "slab"
                    | "leak"
                    | "kasan"
                    | "kfence"
            )
        })
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("valid regex")
}

static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| re(r"^\[\s*\d+\.\d+\]\s?"));
static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    // 6.x: "WARNING: CPU: 0 PID: 71 at drivers/gpio/gpiolib.c:2164 gpiod_free+0x4c/0x60";
    // 7.x: "WARNING: lib/refcount.c:28 at refcount_warn_saturate+0x4a/0x59, CPU#0: rmmod/160".
    re(concat!(
        r"^WARNING: (?:(?:CPU: \d+ PID: \d+ )?at (?P<file>\S+):(?P<line>\d+) (?P<func>\S+?)",
        r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*",
        r"|(?P<file7>\S+):(?P<line7>\d+) at (?P<func7>[^\s+,]+)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?, CPU#\d+: .*)$"
    ))
});
static CHIP_GONE: LazyLock<Regex> = LazyLock::new(|| re(r"(\w+): backing chip is gone"));
static LOCKDEP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^WARNING: (possible circular locking dependency detected|possible recursive locking detected|possible irq lock inversion dependency detected|inconsistent lock state|suspicious RCU usage|bad unlock balance detected!|held lock freed!|lock held when returning to user space!?)",
    )
});
static WARNING_ANY: LazyLock<Regex> = LazyLock::new(|| re(r"^WARNING: "));
static KERNEL_BUG_AT: LazyLock<Regex> = LazyLock::new(|| re(r"^kernel BUG at (\S+):(\d+)!"));
static KASAN: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^BUG: KASAN: (\S+) in (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*$")
});
static KASAN_ACCESS: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(Read|Write)(?: of size (\d+))? at addr ([0-9a-fx]+) by task (\S+)"));
static KASAN_FREE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^Free of addr ([0-9a-fx]+) by task (\S+)"));
static KASAN_RANGE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^KASAN: (\S+) in range (\[[0-9a-fx-]+\])"));
static KFENCE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^BUG: KFENCE: (.+?)(?: (read|write))? in (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*$",
    )
});
static KFENCE_ACCESS: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(?:Use-after-free|Out-of-bounds|Invalid) (read|write) at (0x[0-9a-f]+)")
});
static NULL_DEREF: LazyLock<Regex> =
    LazyLock::new(|| re(r"^BUG: (?:unable to handle )?kernel NULL pointer dereference"));
static PAGE_FAULT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^BUG: (?:unable to handle page fault|unable to handle kernel paging request)")
});
static MIGHT_SLEEP: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^BUG: (sleeping function called from invalid context|scheduling while atomic)")
});
static GPF: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:Oops: )?general protection fault"));
static SLAB: LazyLock<Regex> = LazyLock::new(|| re(r"^BUG (\S+) \(.*\): (.*?)\s*$"));
static OTHER_BUG: LazyLock<Regex> = LazyLock::new(|| re(r"^BUG: ([^:]*)"));
static OOPS: LazyLock<Regex> = LazyLock::new(|| re(r"^Oops: "));
static LEAK: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:# )?unreferenced object (0x[0-9a-f]+) \(size (\d+)\):"));
static LEAK_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:# )?\s{2,}(\S.*)$"));
static RIP: LazyLock<Regex> =
    LazyLock::new(|| re(r"^RIP: [0-9a-f]{4}:(\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)"));
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(\? )?([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)(?: \[(\w+)\])?$")
});
static TRACE_ENTRY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s*(?:\[<[0-9a-fx]+>\] )?(\? )?[A-Za-z_.$][\w.$]*\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?\s*$",
    )
});
static LOCK_AT: LazyLock<Regex> =
    LazyLock::new(|| re(r"\bat: (?:\S+ )?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"));
static SRC_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^(\S+\.[ch]):\d+ "));
static COMPILER_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.\d+)?)+$"));

/// The text of a console line without its time stamp and line-end.
fn body(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    match TIMESTAMP.find(line) {
        Some(m) => &line[m.end()..],
        None => line,
    }
}

/// Parses `name+0xoff/0xsize [module]`, with an optional `? ` and `[<address>] ` in front.
pub fn parse_frame(text: &str) -> Option<Frame> {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix("[<") {
        t = rest.split_once(">] ")?.1.trim_start();
    }
    let c = FRAME.captures(t)?;
    Some(Frame {
        function: c[2].to_string(),
        offset: u64::from_str_radix(&c[3], 16).ok()?,
        size: u64::from_str_radix(&c[4], 16).ok()?,
        module: c.get(5).map(|m| m.as_str().to_string()),
        reliable: c.get(1).is_none(),
        source: None,
        inlined_by: Vec::new(),
    })
}

/// A function name without the compiler's clone suffixes, for titles.
fn stable(name: &str) -> &str {
    match COMPILER_SUFFIX.find(name) {
        Some(m) => &name[..m.start()],
        None => name,
    }
}

/// Frames that say where a report was printed, not where the bug is (matched as prefixes).
const REPORTING_FRAMES: &[&str] = &[
    "dump_stack",
    "show_stack",
    "__warn",
    "warn_",
    "report_bug",
    "handle_bug",
    "exc_invalid_op",
    "asm_exc_",
    "__might_",
    "might_sleep",
    "__schedule_bug",
    "___might_sleep",
    "lock_acquire",
    "lock_release",
    "print_",
    "check_",
    "kasan_",
    "__kasan_",
    "kfence_",
    "__kfence_",
    "__asan_",
    "panic",
];

/// Where the report's location is: the first reliable frame of the trace whose name doesn't
/// start with one of `skip` or a reporting helper.
fn first_frame<'a>(frames: &'a [Frame], skip: &[&str]) -> Option<&'a str> {
    frames
        .iter()
        .filter(|f| f.reliable)
        .map(|f| f.function.as_str())
        .find(|name| {
            !REPORTING_FRAMES.iter().any(|p| name.starts_with(p))
                && !skip.iter().any(|p| name.starts_with(p) || name.contains(p))
        })
}

/// Names allocation helpers in a kmemleak backtrace (substrings, as syzkaller skips them).
const ALLOC_FRAMES: &[&str] = &[
    "kmemleak",
    "kmalloc",
    "kcalloc",
    "kzalloc",
    "vmalloc",
    "mmap",
    "kmem",
    "slab",
    "alloc",
    "create_object",
    "idr_get",
    "list_lru_init",
    "kasprintf",
    "kvasprintf",
    "pcpu_create",
    "strdup",
    "strndup",
    "memdup",
    "kstrdup",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    /// Before the call trace.
    Head,
    /// Inside `Call Trace:` (or a KFENCE access stack).
    Trace,
    /// KASAN/KFENCE "Allocated by" stack.
    Allocated,
    /// KASAN/KFENCE "Freed by" stack.
    Freed,
    /// After the stacks (object description, memory state).
    Tail,
    /// A kmemleak report's lines.
    Leak,
}

/// Classifies a whole console log.
pub fn classify(console: &str) -> ConsoleFindings {
    let mut out = ConsoleFindings::default();
    let mut open: Option<Section> = None;
    let mut previous = "";
    for raw in console.lines() {
        let line = body(raw);
        if line.contains("REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED") {
            out.still_requested = true;
        }
        if line.contains("backing chip is gone") {
            out.backing_chip_gone += 1;
            let func = CHIP_GONE
                .captures(line)
                .map_or_else(|| "?".to_string(), |c| c[1].to_string());
            *out.backing_chip_gone_by.entry(func).or_default() += 1;
        }

        if let Some(splat) = start_of_report(line, previous, open, &out) {
            if let Some(last) = out.splats.last_mut() {
                finish(last);
            }
            open = Some(if splat.kind == "leak" {
                Section::Leak
            } else {
                Section::Head
            });
            out.splats.push(splat);
            previous = line;
            continue;
        }

        if let (Some(section), Some(current)) = (open.as_mut(), out.splats.last_mut()) {
            if !continue_report(current, section, line, previous) {
                open = None;
            }
        }
        previous = line;
    }
    if let Some(last) = out.splats.last_mut() {
        finish(last);
    }
    out
}

/// Takes one more line of an open report; false when the report has ended.
fn continue_report(current: &mut Splat, section: &mut Section, line: &str, previous: &str) -> bool {
    if *section == Section::Leak {
        return continue_leak(current, line);
    }
    if line.starts_with("---[ end trace") || line.starts_with("==========") {
        return false;
    }
    if let Some(c) = RIP.captures(line) {
        if let Some(frame) = parse_frame(&c[1]) {
            if current.function.is_empty() {
                current.function = frame.function.clone();
            }
            if current.location.is_empty() {
                current.location = c[1].split(' ').next().unwrap_or_default().to_string();
            }
            // Only the first RIP is the report's: a user-space one after the trace isn't.
            if current.rip.is_none() {
                current.rip = Some(frame);
            }
        }
        return true;
    }
    if let Some(c) = KASAN_RANGE.captures(line) {
        let memory = current.memory.get_or_insert_with(MemoryReport::default);
        memory.bug_type = c[1].to_string();
        memory.address = c[2].to_string();
        return true;
    }
    if let Some(memory) = current.memory.as_mut() {
        if let Some(c) = KASAN_ACCESS.captures(line) {
            memory.access = c[1].to_string();
            memory.size = c.get(2).and_then(|m| m.as_str().parse().ok());
            memory.address = c[3].to_string();
            memory.task = c[4].to_string();
            return true;
        }
        if let Some(c) = KASAN_FREE.captures(line) {
            memory.address = c[1].to_string();
            memory.task = c[2].to_string();
            return true;
        }
        if let Some(c) = KFENCE_ACCESS.captures(line) {
            memory.access = capitalized(&c[1]);
            memory.address = c[2].to_string();
            *section = Section::Trace;
            return true;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("allocated by task") {
            *section = Section::Allocated;
            return true;
        }
        if lower.starts_with("freed by task") {
            *section = Section::Freed;
            return true;
        }
        if line.starts_with("The buggy address belongs to") {
            memory.object = line.to_string();
            *section = Section::Tail;
            return true;
        }
        if *section == Section::Tail && previous.starts_with("The buggy address belongs to") {
            memory.object.push(' ');
            memory.object.push_str(line.trim());
            return true;
        }
    }
    if line.trim() == "Call Trace:" {
        *section = Section::Trace;
        return true;
    }
    if line.trim() == "</TASK>" || line.trim() == "</IRQ>" {
        if *section == Section::Trace {
            *section = Section::Tail;
        }
        return true;
    }
    if TRACE_ENTRY.is_match(line) {
        if let Some(frame) = parse_frame(line) {
            match section {
                Section::Trace => {
                    if frame.reliable {
                        current.trace.push(frame.function.clone());
                    }
                    current.frames.push(frame);
                }
                Section::Allocated => {
                    if let Some(m) = current.memory.as_mut() {
                        m.allocated_by.push(frame);
                    }
                }
                Section::Freed => {
                    if let Some(m) = current.memory.as_mut() {
                        m.freed_by.push(frame);
                    }
                }
                Section::Head | Section::Tail | Section::Leak => {}
            }
        }
        return true;
    }
    if current.kind == "lockdep" && current.function.is_empty() {
        if let Some(c) = LOCK_AT.captures(line) {
            if previous.contains("is trying to acquire")
                || previous.contains("is trying to release")
                || previous.contains("just changed the state of lock")
                || previous.contains("takes:")
            {
                current.function = c[1].to_string();
            }
        }
        if let Some(c) = SRC_LINE.captures(line) {
            if current.location.is_empty() && line.contains("suspicious") {
                current.location = c[1].to_string();
            }
        }
    }
    true
}

fn continue_leak(current: &mut Splat, line: &str) -> bool {
    let Some(c) = LEAK_LINE.captures(line) else {
        return false;
    };
    let text = &c[1];
    if text.starts_with("comm ") {
        if let Some(leak) = current.leak.as_mut() {
            leak.comm = text.split(", jiffies").next().unwrap_or(text).to_string();
        }
    } else if let Some(frame) = parse_frame(text) {
        if frame.reliable {
            current.trace.push(frame.function.clone());
        }
        current.frames.push(frame);
    }
    true
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// If `line` starts a new report, the report so far.
fn start_of_report(
    line: &str,
    previous: &str,
    open: Option<Section>,
    out: &ConsoleFindings,
) -> Option<Splat> {
    let splat = |kind: &str, location: String, function: String| Splat {
        kind: kind.to_string(),
        location,
        function,
        headline: line.to_string(),
        ..Splat::default()
    };
    if let Some(c) = LEAK.captures(line) {
        let mut s = splat("leak", String::new(), String::new());
        s.headline = line.trim_start_matches("# ").to_string();
        s.leak = Some(LeakReport {
            object: c[1].to_string(),
            size: c[2].parse().unwrap_or(0),
            comm: String::new(),
        });
        return Some(s);
    }
    if let Some(c) = LOCKDEP.captures(line) {
        let mut s = splat("lockdep", String::new(), String::new());
        s.headline = c[0].to_string();
        return Some(s);
    }
    if let Some(c) = WARNING.captures(line) {
        let get = |a: &str, b: &str| c.name(a).or_else(|| c.name(b)).map_or("", |m| m.as_str());
        let (file, at_line, function) = (
            get("file", "file7"),
            get("line", "line7"),
            get("func", "func7"),
        );
        let kind = if previous.starts_with("refcount_t: ") || file.ends_with("lib/refcount.c") {
            "refcount"
        } else if previous.starts_with("ODEBUG: ") || file.ends_with("lib/debugobjects.c") {
            "odebug"
        } else if file.ends_with("kernel/module/main.c") && function == "module_put" {
            "module-refcount"
        } else {
            "warning"
        };
        return Some(splat(
            kind,
            format!("{file}:{at_line}"),
            function.to_string(),
        ));
    }
    if WARNING_ANY.is_match(line) {
        return Some(splat("warning", String::new(), String::new()));
    }
    if let Some(c) = KASAN.captures(line) {
        let mut s = splat("kasan", String::new(), c[2].to_string());
        s.memory = Some(MemoryReport {
            bug_type: c[1].to_string(),
            ..MemoryReport::default()
        });
        return Some(s);
    }
    if let Some(c) = KFENCE.captures(line) {
        let mut s = splat("kfence", String::new(), c[3].to_string());
        s.memory = Some(MemoryReport {
            bug_type: c[1].to_string(),
            access: c
                .get(2)
                .map(|m| capitalized(m.as_str()))
                .unwrap_or_default(),
            ..MemoryReport::default()
        });
        return Some(s);
    }
    if let Some(c) = KERNEL_BUG_AT.captures(line) {
        return Some(splat("bug", format!("{}:{}", &c[1], &c[2]), String::new()));
    }
    if NULL_DEREF.is_match(line) {
        return Some(splat("null-deref", String::new(), String::new()));
    }
    if PAGE_FAULT.is_match(line) {
        return Some(splat("page-fault", String::new(), String::new()));
    }
    if MIGHT_SLEEP.is_match(line) {
        let location = line
            .split_once(" at ")
            .map(|(_, at)| at.trim().to_string())
            .unwrap_or_default();
        return Some(splat("might-sleep", location, String::new()));
    }
    if GPF.is_match(line) {
        // 6.12 prints "Oops: general protection fault" as the first line; 6.1 prints
        // "general protection fault" and no separate Oops line.
        return Some(splat("gpf", String::new(), String::new()));
    }
    if SLAB.is_match(line) {
        return Some(splat("slab", String::new(), String::new()));
    }
    if OTHER_BUG.is_match(line) {
        return Some(splat("bug", String::new(), String::new()));
    }
    if OOPS.is_match(line) {
        // An Oops line belongs to the BUG/fault report it follows; only a bare one is new.
        let open_fault = open.is_some()
            && out.splats.last().is_some_and(|s| {
                matches!(
                    s.kind.as_str(),
                    "null-deref" | "page-fault" | "bug" | "gpf" | "kasan" | "kfence"
                ) && s.trace.is_empty()
            });
        if !open_fault {
            return Some(splat("oops", String::new(), String::new()));
        }
    }
    None
}

/// Completes a report once all its lines are in: its title.
fn finish(s: &mut Splat) {
    s.title = title(s);
}

/// The report's title (see the module docs).
pub fn title(s: &Splat) -> String {
    let func = |name: &str| -> String {
        if name.is_empty() {
            "?".to_string()
        } else {
            stable(name).to_string()
        }
    };
    let from_trace = |skip: &[&str]| func(first_frame(&s.frames, skip).unwrap_or_default());
    let at_rip = || func(&s.function);
    match s.kind.as_str() {
        "warning" if s.function.is_empty() => format!("WARNING in {}", at_rip()),
        "warning" | "module-refcount" => format!("WARNING in {}", func(&s.function)),
        "refcount" => format!(
            "WARNING: refcount bug in {}",
            from_trace(&["refcount", "kobject_"])
        ),
        "odebug" => format!(
            "WARNING: ODEBUG bug in {}",
            from_trace(&[
                "debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_", "kmem_", "slab_",
                "kfree", "vunmap", "vfree", "__free_", "kobject_",
            ])
        ),
        "lockdep" => {
            let what = s.headline.trim_start_matches("WARNING: ");
            if what.contains("locking dependency")
                || what.contains("recursive locking")
                || what.contains("lock inversion")
            {
                format!("possible deadlock in {}", func(&s.function))
            } else if what.starts_with("suspicious RCU usage") {
                format!("WARNING: suspicious RCU usage in {}", func(&s.location))
            } else if what.starts_with("inconsistent lock state") {
                format!("inconsistent lock state in {}", func(&s.function))
            } else {
                format!(
                    "WARNING: {} in {}",
                    what.trim_end_matches('!'),
                    from_trace(&[])
                )
            }
        }
        "might-sleep" => {
            let what = MIGHT_SLEEP
                .captures(&s.headline)
                .map(|c| c[1].to_string())
                .unwrap_or_default();
            format!(
                "BUG: {what} in {}",
                from_trace(&["mutex_lock", "down_", "msleep"])
            )
        }
        "kasan" => {
            let m = s.memory.clone().unwrap_or_default();
            if m.bug_type.contains("invalid-free") || m.bug_type == "double-free" {
                format!("KASAN: invalid-free in {}", func(&s.function))
            } else if m.access.is_empty() {
                format!("KASAN: {} in {}", m.bug_type, func(&s.function))
            } else {
                format!(
                    "KASAN: {} {} in {}",
                    m.bug_type,
                    m.access,
                    func(&s.function)
                )
            }
        }
        "kfence" => {
            let m = s.memory.clone().unwrap_or_default();
            if m.access.is_empty() {
                format!("KFENCE: {} in {}", m.bug_type, func(&s.function))
            } else {
                format!(
                    "KFENCE: {} {} in {}",
                    m.bug_type,
                    m.access,
                    func(&s.function)
                )
            }
        }
        "leak" => format!("memory leak in {}", from_trace(ALLOC_FRAMES)),
        "null-deref" => format!(
            "BUG: unable to handle kernel NULL pointer dereference in {}",
            at_rip()
        ),
        "page-fault" => format!(
            "BUG: unable to handle kernel paging request in {}",
            at_rip()
        ),
        "gpf" => format!("general protection fault in {}", at_rip()),
        "bug" if !s.location.is_empty() && s.headline.starts_with("kernel BUG at") => {
            let file = s
                .location
                .rsplit_once(':')
                .map_or(s.location.as_str(), |p| p.0);
            format!("kernel BUG at {file}:LINE!")
        }
        "slab" => match SLAB.captures(&s.headline) {
            Some(c) => format!("BUG: {} in {}", &c[2], &c[1]),
            None => "BUG: slab corruption".to_string(),
        },
        "bug" => {
            let what = OTHER_BUG
                .captures(&s.headline)
                .map(|c| c[1].trim().to_string())
                .unwrap_or_else(|| "corrupted".into());
            if s.function.is_empty() {
                format!("BUG: {what} in {}", from_trace(&[]))
            } else {
                format!("BUG: {what} in {}", at_rip())
            }
        }
        _ => {
            if s.function.is_empty() {
                format!("kernel oops in {}", from_trace(&[]))
            } else {
                format!("kernel oops in {}", at_rip())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN_61: &str = "\
[    9.101010] ------------[ cut here ]------------
[    9.101100] WARNING: CPU: 0 PID: 71 at drivers/gpio/gpiolib.c:2164 gpiod_free+0x4c/0x60
[    9.101200] Modules linked in: at24(-) gpio_virtio eeprom_wire
[    9.101300] CPU: 0 PID: 71 Comm: rmmod Not tainted 6.1.0-vgn #1
[    9.101400] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[    9.101500] RIP: 0010:gpiod_free+0x4c/0x60
[    9.101600] Code: 00 00 00 00 00 e9 00 00 00 00 <0f> 0b c3 cc cc cc cc
[    9.101700] RSP: 0018:ffffc90000273e10 EFLAGS: 00010246
[    9.101800] Call Trace:
[    9.101810]  <TASK>
[    9.101820]  release_nodes+0x3d/0xb0
[    9.101830]  devres_release_all+0x89/0xc0
[    9.101840]  ? kernfs_remove_by_name_ns+0x5a/0x90
[    9.101850]  device_unbind_cleanup+0xe/0x70
[    9.101860]  device_release_driver_internal+0x1c0/0x200
[    9.101870]  driver_detach+0x44/0x90
[    9.101880]  bus_remove_driver+0x55/0xe0
[    9.101890]  i2c_del_driver+0x2c/0x60
[    9.101900]  __do_sys_delete_module+0x19d/0x2e0
[    9.101910]  do_syscall_64+0x3b/0x90
[    9.101920]  entry_SYSCALL_64_after_hwframe+0x63/0xcd
[    9.101930] RIP: 0033:0x4b2a1b
[    9.101940] RSP: 002b:00007ffe6f1e6c38 EFLAGS: 00000206 ORIG_RAX: 00000000000000b0
[    9.101950]  </TASK>
[    9.101960] ---[ end trace 0000000000000000 ]---
";

    #[test]
    fn the_2020_warning_on_61() {
        let f = classify(WARN_61);
        assert_eq!(f.splats.len(), 1);
        let s = &f.splats[0];
        assert_eq!(s.kind, "warning");
        assert_eq!(s.title, "WARNING in gpiod_free");
        assert_eq!(s.location, "drivers/gpio/gpiolib.c:2164");
        assert_eq!(s.function, "gpiod_free");
        assert_eq!(
            s.trace,
            vec![
                "release_nodes",
                "devres_release_all",
                "device_unbind_cleanup",
                "device_release_driver_internal",
                "driver_detach",
                "bus_remove_driver",
                "i2c_del_driver",
                "__do_sys_delete_module",
                "do_syscall_64",
                "entry_SYSCALL_64_after_hwframe",
            ]
        );
        assert!(s.involves("release_nodes"));
        assert!(
            !s.involves("kernfs_remove_by_name_ns"),
            "unreliable entries are dropped"
        );
        // Raw frames keep offsets and the unreliable entry, flagged.
        assert_eq!(s.frames.len(), 11);
        assert_eq!(s.frames[0].raw(), "release_nodes+0x3d/0xb0");
        assert!(!s.frames[2].reliable);
        let rip = s.rip.as_ref().expect("RIP");
        assert_eq!(
            (rip.function.as_str(), rip.offset, rip.size),
            ("gpiod_free", 0x4c, 0x60)
        );
        assert!(!f.still_requested);
        assert_eq!(f.backing_chip_gone, 0);
    }

    #[test]
    fn informational_lines_are_counted_not_judged() {
        let log = "\
[    5.0] gpio gpiochip0: REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED
[    6.0] gpio gpiochip0: gpiod_set_value_cansleep: backing chip is gone
[    6.1] gpio gpiochip0: gpiod_put: backing chip is gone
[    6.2] gpio gpiochip0: gpiod_put: backing chip is gone
";
        let f = classify(log);
        assert!(f.still_requested);
        assert_eq!(f.backing_chip_gone, 3);
        assert_eq!(f.backing_chip_gone_by["gpiod_put"], 2);
        assert_eq!(f.backing_chip_gone_by["gpiod_set_value_cansleep"], 1);
        assert!(!f.fatal());
        assert!(f.splats.is_empty());
    }

    #[test]
    fn refcount_underflow_is_its_own_kind() {
        let log = "\
[   10.0] ------------[ cut here ]------------
[   10.0] refcount_t: underflow; use-after-free.
[   10.0] WARNING: CPU: 1 PID: 90 at lib/refcount.c:28 refcount_warn_saturate+0xba/0x110
[   10.0] Call Trace:
[   10.0]  <TASK>
[   10.0]  gpiod_free_kref+0x7c/0x90
[   10.0]  gpiod_put+0x10/0x20
[   10.0]  </TASK>
[   10.0] ---[ end trace 0000000000000000 ]---
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1);
        assert_eq!(f.splats[0].kind, "refcount");
        assert_eq!(f.splats[0].function, "refcount_warn_saturate");
        assert_eq!(f.splats[0].trace, vec!["gpiod_free_kref", "gpiod_put"]);
        assert_eq!(
            f.splats[0].title,
            "WARNING: refcount bug in gpiod_free_kref"
        );
    }

    #[test]
    fn the_7x_warning_line_is_read_like_the_6x_one() {
        // Linux 7.x prints "WARNING: <file>:<line> at <function>+off/len, CPU#n: comm/pid".
        let log = "\
[    4.3] ------------[ cut here ]------------
[    4.3] refcount_t: underflow; use-after-free.
[    4.3] WARNING: lib/refcount.c:28 at refcount_warn_saturate+0x4a/0x59, CPU#0: rmmod/160
[    4.3] RIP: 0010:refcount_warn_saturate+0x53/0x59
[    4.3] Call Trace:
[    4.3]  <TASK>
[    4.3]  nvmem_release+0x1d/0x30
[    4.3]  device_release+0x31/0x80
[    4.3]  </TASK>
[    4.3] ---[ end trace 0000000000000000 ]---
[    4.4] WARNING: drivers/gpio/gpiolib.c:2164 at gpiod_free+0x4c/0x60, CPU#1: rmmod/7
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 2);
        assert_eq!(f.splats[0].kind, "refcount");
        assert_eq!(f.splats[0].location, "lib/refcount.c:28");
        assert_eq!(f.splats[0].function, "refcount_warn_saturate");
        assert_eq!(f.splats[0].title, "WARNING: refcount bug in nvmem_release");
        assert_eq!(f.splats[1].kind, "warning");
        assert_eq!(f.splats[1].location, "drivers/gpio/gpiolib.c:2164");
        assert_eq!(f.splats[1].function, "gpiod_free");
    }

    #[test]
    fn module_refcount_underflow_and_the_bug_at_rmmod() {
        let log = "\
[   11.0] ------------[ cut here ]------------
[   11.0] WARNING: CPU: 0 PID: 95 at kernel/module/main.c:857 module_put+0x6e/0x80
[   11.0] RIP: 0010:module_put+0x6e/0x80
[   11.0] Call Trace:
[   11.0]  <TASK>
[   11.0]  gpiod_free_commit+0x10/0x20
[   11.0]  </TASK>
[   11.0] ---[ end trace 0000000000000000 ]---
[   12.0] ------------[ cut here ]------------
[   12.0] kernel BUG at kernel/module/main.c:656!
[   12.0] Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
[   12.0] RIP: 0010:__do_sys_delete_module+0x1f0/0x2e0
[   12.0] Call Trace:
[   12.0]  <TASK>
[   12.0]  do_syscall_64+0x3b/0x90
[   12.0]  </TASK>
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 2, "{f:#?}");
        assert_eq!(f.splats[0].kind, "module-refcount");
        assert_eq!(f.splats[0].title, "WARNING in module_put");
        assert_eq!(f.splats[1].kind, "bug");
        assert_eq!(f.splats[1].location, "kernel/module/main.c:656");
        assert_eq!(f.splats[1].function, "__do_sys_delete_module");
        assert_eq!(
            f.splats[1].title,
            "kernel BUG at kernel/module/main.c:LINE!"
        );
        assert!(f.fatal());
    }

    #[test]
    fn null_deref_oops_is_one_report_with_rip_and_trace() {
        let log = "\
[   20.1] BUG: kernel NULL pointer dereference, address: 0000000000000010
[   20.1] #PF: supervisor read access in kernel mode
[   20.1] #PF: error_code(0x0000) - not-present page
[   20.1] PGD 0 P4D 0
[   20.1] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   20.1] CPU: 0 PID: 80 Comm: kworker/0:2 Not tainted 6.1.0 #1
[   20.1] RIP: 0010:gpio_name_to_desc+0x2f/0xb0
[   20.1] Call Trace:
[   20.1]  <TASK>
[   20.1]  gpiochip_add_data_with_key+0x3a4/0xe60
[   20.1]  virtio_gpio_probe+0x1d5/0x2a0 [gpio_virtio]
[   20.1]  virtio_dev_probe+0x19b/0x250
[   20.1]  </TASK>
[   20.1] Modules linked in: gpio_virtio
[   20.1] CR2: 0000000000000010
[   20.1] ---[ end trace 0000000000000000 ]---
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        assert!(f.fatal());
        let s = &f.splats[0];
        assert_eq!(s.kind, "null-deref");
        assert_eq!(
            s.title,
            "BUG: unable to handle kernel NULL pointer dereference in gpio_name_to_desc"
        );
        assert_eq!(s.function, "gpio_name_to_desc");
        assert_eq!(s.location, "gpio_name_to_desc+0x2f/0xb0");
        assert_eq!(
            s.trace,
            vec![
                "gpiochip_add_data_with_key",
                "virtio_gpio_probe",
                "virtio_dev_probe"
            ]
        );
        assert_eq!(s.frames[1].module.as_deref(), Some("gpio_virtio"));
    }

    #[test]
    fn poisoned_pointer_fault_on_612() {
        let log = "\
[   30.2] Oops: general protection fault, probably for non-canonical address 0x6b6b6b6b6b6b6b73: 0000 [#1] PREEMPT SMP NOPTI
[   30.2] CPU: 0 UID: 0 PID: 99 Comm: rmmod Not tainted 6.12.11 #1
[   30.2] RIP: 0010:__srcu_read_lock+0x12/0x80
[   30.2] Call Trace:
[   30.2]  <TASK>
[   30.2]  ? die_addr+0x32/0x80
[   30.2]  gpiod_free+0x20/0x80
[   30.2]  release_nodes+0x40/0xb0
[   30.2]  devres_release_all+0x89/0xc0
[   30.2]  </TASK>
[   30.2] ---[ end trace 0000000000000000 ]---
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        assert_eq!(f.splats[0].kind, "gpf");
        assert_eq!(f.splats[0].function, "__srcu_read_lock");
        assert_eq!(
            f.splats[0].title,
            "general protection fault in __srcu_read_lock"
        );
        assert!(f.splats[0].involves("release_nodes"));
    }

    #[test]
    fn kasan_null_ptr_deref_in_range() {
        let log = "\
[   31.0] Oops: general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] PREEMPT SMP KASAN NOPTI
[   31.0] KASAN: null-ptr-deref in range [0x0000000000000010-0x0000000000000017]
[   31.0] RIP: 0010:gpio_name_to_desc+0x9b/0x200
[   31.0] Call Trace:
[   31.0]  <TASK>
[   31.0]  gpiochip_add_data_with_key+0x5e1/0x1b30
[   31.0]  </TASK>
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        let s = &f.splats[0];
        assert_eq!(s.kind, "gpf");
        assert_eq!(s.title, "general protection fault in gpio_name_to_desc");
        let m = s.memory.as_ref().expect("KASAN range");
        assert_eq!(m.bug_type, "null-ptr-deref");
        assert_eq!(m.address, "[0x0000000000000010-0x0000000000000017]");
    }

    const KASAN_UAF: &str = "\
[   40.0] ==================================================================
[   40.0] BUG: KASAN: slab-use-after-free in gpiod_free+0x2b/0xa0
[   40.0] Read of size 8 at addr ffff888004b2c010 by task rmmod/99
[   40.0] 
[   40.0] CPU: 0 UID: 0 PID: 99 Comm: rmmod Not tainted 6.12.57 #1
[   40.0] Call Trace:
[   40.0]  <TASK>
[   40.0]  dump_stack_lvl+0x53/0x70
[   40.0]  print_report+0xd0/0x620
[   40.0]  kasan_report+0xb6/0xf0
[   40.0]  gpiod_free+0x2b/0xa0
[   40.0]  release_nodes+0x6e/0xf0
[   40.0]  devres_release_all+0xe9/0x130
[   40.0]  </TASK>
[   40.0] 
[   40.0] Allocated by task 1:
[   40.0]  kasan_save_stack+0x22/0x50
[   40.0]  __kasan_kmalloc+0x8f/0xa0
[   40.0]  gpiochip_add_data_with_key+0xc0/0x1b30
[   40.0]  virtio_gpio_probe+0x21a/0x3a0 [gpio_virtio]
[   40.0] 
[   40.0] Freed by task 80:
[   40.0]  kasan_save_stack+0x22/0x50
[   40.0]  kfree+0x10f/0x380
[   40.0]  gpiodev_release+0x3e/0x60
[   40.0]  device_release+0x5c/0xf0
[   40.0] 
[   40.0] The buggy address belongs to the object at ffff888004b2c000
[   40.0]  which belongs to the cache kmalloc-512 of size 512
[   40.0] The buggy address is located 16 bytes inside of
[   40.0]  freed 512-byte region [ffff888004b2c000, ffff888004b2c200)
[   40.0] ==================================================================
";

    #[test]
    fn kasan_use_after_free_with_both_stacks() {
        let f = classify(KASAN_UAF);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        let s = &f.splats[0];
        assert_eq!(s.kind, "kasan");
        assert_eq!(s.title, "KASAN: slab-use-after-free Read in gpiod_free");
        assert_eq!(s.function, "gpiod_free");
        assert!(s.involves("release_nodes"));
        let m = s.memory.as_ref().expect("memory report");
        assert_eq!(m.bug_type, "slab-use-after-free");
        assert_eq!((m.access.as_str(), m.size), ("Read", Some(8)));
        assert_eq!(m.address, "ffff888004b2c010");
        assert_eq!(m.task, "rmmod/99");
        let alloc: Vec<_> = m.allocated_by.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            alloc,
            [
                "kasan_save_stack",
                "__kasan_kmalloc",
                "gpiochip_add_data_with_key",
                "virtio_gpio_probe"
            ]
        );
        assert_eq!(m.allocated_by[3].module.as_deref(), Some("gpio_virtio"));
        let freed: Vec<_> = m.freed_by.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            freed,
            [
                "kasan_save_stack",
                "kfree",
                "gpiodev_release",
                "device_release"
            ]
        );
        assert!(m.object.contains("kmalloc-512 of size 512"), "{}", m.object);
        assert!(!f.fatal(), "KASAN reports and goes on");
        // Every frame is reachable for symbolizing: 6 trace + 4 + 4.
        let mut s = s.clone();
        assert_eq!(s.frames_mut().count(), 14);
    }

    #[test]
    fn kfence_use_after_free() {
        let log = "\
[   50.0] ==================================================================
[   50.0] BUG: KFENCE: use-after-free read in gpiod_free+0x2b/0xa0
[   50.0] 
[   50.0] Use-after-free read at 0x00000000abcd1234 (in kfence-#12):
[   50.0]  gpiod_free+0x2b/0xa0
[   50.0]  release_nodes+0x6e/0xf0
[   50.0] 
[   50.0] kfence-#12: 0x00000000abcd1200-0x00000000abcd13ff, size=512, cache=kmalloc-512
[   50.0] 
[   50.0] allocated by task 1 on cpu 0 at 1.234s:
[   50.0]  gpiochip_add_data_with_key+0xc0/0x1b30
[   50.0] 
[   50.0] freed by task 80 on cpu 0 at 20.5s:
[   50.0]  gpiodev_release+0x3e/0x60
[   50.0] ==================================================================
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        let s = &f.splats[0];
        assert_eq!(s.kind, "kfence");
        assert_eq!(s.title, "KFENCE: use-after-free Read in gpiod_free");
        assert_eq!(s.trace, ["gpiod_free", "release_nodes"]);
        let m = s.memory.as_ref().unwrap();
        assert_eq!(m.allocated_by[0].function, "gpiochip_add_data_with_key");
        assert_eq!(m.freed_by[0].function, "gpiodev_release");
    }

    #[test]
    fn kmemleak_reports_from_the_runner() {
        let log = "\
# unreferenced object 0xffff888003f1c2a0 (size 8):
#   comm \"modprobe\", pid 70, jiffies 4294893456
#   hex dump (first 8 bytes):
#     77 70 00 00 00 00 00 00                          wp......
#   backtrace (crc 4d8b7c4a):
#     [<ffffffff811d3b7e>] kmemleak_alloc+0x4e/0x90
#     [<ffffffff8128b2c3>] __kmalloc_node_track_caller+0x263/0x3b0
#     [<ffffffff81263a4c>] kstrdup_const+0x3c/0x70
#     [<ffffffff815a0b11>] gpiod_request_commit+0x61/0x1c0
#     [<ffffffff815a0d22>] gpiod_request+0x42/0x90
ok 5 kmemleak-scan
unreferenced object 0xffff888003f1c300 (size 64):
  comm \"swapper/0\", pid 1, jiffies 4294892000
  backtrace:
    [<00000000deadbeef>] kmalloc_trace+0x26/0x90
    [<00000000deadbef0>] gpiochip_add_data_with_key+0x6a/0xe60
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 2, "{f:#?}");
        let s = &f.splats[0];
        assert_eq!(s.kind, "leak");
        assert_eq!(s.title, "memory leak in gpiod_request_commit");
        let leak = s.leak.as_ref().unwrap();
        assert_eq!((leak.object.as_str(), leak.size), ("0xffff888003f1c2a0", 8));
        assert_eq!(leak.comm, "comm \"modprobe\", pid 70");
        assert_eq!(s.frames.len(), 5);
        assert_eq!(
            f.splats[1].title,
            "memory leak in gpiochip_add_data_with_key"
        );
        assert!(!f.fatal());
    }

    #[test]
    fn odebug_lockdep_and_might_sleep() {
        let log = "\
[   60.0] ODEBUG: free active (active state 0) object: ffff888004b2c000 object type: timer_list hint: foo+0x0/0x10
[   60.0] WARNING: CPU: 0 PID: 9 at lib/debugobjects.c:514 debug_print_object+0x80/0xb0
[   60.0] RIP: 0010:debug_print_object+0x80/0xb0
[   60.0] Call Trace:
[   60.0]  <TASK>
[   60.0]  debug_check_no_obj_freed+0x1a8/0x210
[   60.0]  kfree+0xc5/0x380
[   60.0]  gpiodev_release+0x3e/0x60
[   60.0]  </TASK>
[   60.0] ---[ end trace 0000000000000000 ]---
[   61.0] ======================================================
[   61.0] WARNING: possible circular locking dependency detected
[   61.0] 6.12.57 #1 Not tainted
[   61.0] ------------------------------------------------------
[   61.0] rmmod/99 is trying to acquire lock:
[   61.0] ffff888004b2c0a8 (&gdev->srcu){.+.+}-{0:0}, at: gpiod_free+0x20/0x80
[   61.0] 
[   61.0] but task is already holding lock:
[   61.0] ======================================================
[   62.0] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580
[   62.0] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 99, name: rmmod
[   62.0] Call Trace:
[   62.0]  <TASK>
[   62.0]  dump_stack_lvl+0x53/0x70
[   62.0]  __might_resched+0x15a/0x1a0
[   62.0]  mutex_lock+0x1a/0x40
[   62.0]  nvmem_release+0x20/0x60
[   62.0]  </TASK>
[   63.0] =============================
[   63.0] WARNING: suspicious RCU usage
[   63.0] 6.12.57 #1 Not tainted
[   63.0] -----------------------------
[   63.0] drivers/gpio/gpiolib.c:150 suspicious rcu_dereference_check() usage!
";
        let f = classify(log);
        let titles: Vec<_> = f.splats.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "WARNING: ODEBUG bug in gpiodev_release",
                "possible deadlock in gpiod_free",
                "BUG: sleeping function called from invalid context in nvmem_release",
                "WARNING: suspicious RCU usage in drivers/gpio/gpiolib.c",
            ],
            "{f:#?}"
        );
        let kinds: Vec<_> = f.splats.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["odebug", "lockdep", "might-sleep", "lockdep"]);
        assert!(!f.fatal());
    }

    #[test]
    fn two_reports_and_noise_between() {
        let mut log = String::from(WARN_61);
        log.push_str("# ok 3 write\nsome user output\n");
        log.push_str(WARN_61);
        let f = classify(&log);
        assert_eq!(f.splats.len(), 2);
        assert_eq!(f.splats[1].trace.len(), 10);
        assert_eq!(f.splats[0].title, f.splats[1].title);
    }

    #[test]
    fn kasan_and_slab_reports() {
        let log = "\
[    1.0] BUG: KASAN: slab-use-after-free in gpiod_free+0x20/0x80
[    1.0] Read of size 8 at addr ffff888003b6e010 by task rmmod/99
[    1.0] Call Trace:
[    1.0]  <TASK>
[    1.0]  release_nodes+0x40/0xb0
[    1.0]  </TASK>
[    2.0] BUG kmalloc-512 (Not tainted): Poison overwritten
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 2, "{f:#?}");
        assert_eq!(f.splats[0].kind, "kasan");
        assert_eq!(f.splats[0].function, "gpiod_free");
        assert_eq!(f.splats[0].trace, vec!["release_nodes"]);
        assert_eq!(f.splats[1].kind, "slab");
        assert_eq!(f.splats[1].title, "BUG: Poison overwritten in kmalloc-512");
    }

    #[test]
    fn titles_drop_compiler_suffixes() {
        let log =
            "WARNING: CPU: 0 PID: 1 at drivers/gpio/gpiolib.c:10 gpiod_free.part.0+0x4c/0x60\n";
        let f = classify(log);
        assert_eq!(f.splats[0].title, "WARNING in gpiod_free");
        assert_eq!(f.splats[0].function, "gpiod_free.part.0");
    }

    #[test]
    fn frames_parse_with_and_without_addresses() {
        let f = parse_frame("  [<ffffffff815a0b11>] gpiod_request_commit+0x61/0x1c0").unwrap();
        assert_eq!(
            (f.function.as_str(), f.offset, f.size),
            ("gpiod_request_commit", 0x61, 0x1c0)
        );
        let f = parse_frame(" ? virtio_gpio_probe+0x1d5/0x2a0 [gpio_virtio]").unwrap();
        assert!(!f.reliable);
        assert_eq!(f.module.as_deref(), Some("gpio_virtio"));
        assert_eq!(f.raw(), "virtio_gpio_probe+0x1d5/0x2a0 [gpio_virtio]");
        assert!(parse_frame("RIP: 0033:0x4b2a1b").is_none());
        assert!(parse_frame("gpiod_free+0xzz/0x60").is_none());
    }

    #[test]
    fn a_clean_console_has_nothing() {
        let log = "[    0.0] Linux version 6.1.0\n[    1.0] at24 0-0050: 4096 byte 24c32 EEPROM, writable, 32 bytes/write\nKTAP version 1\nok 1 boot\n";
        assert_eq!(classify(log), ConsoleFindings::default());
    }
}
