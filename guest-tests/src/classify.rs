// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Classification of a guest's serial console: kernel reports (WARNING, BUG, Oops, general
//! protection faults, KASAN, refcount and slab reports) with their location, function and call
//! trace, and the informational gpiolib lines the reproduction counts.
//!
//! The parser reads the console as the kernel prints it on x86_64 (`printk` time stamps
//! optional, `\r` tolerated) and never guesses: a report it cannot place is still recorded,
//! with what it could read.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One kernel report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    /// `warning`, `refcount`, `null-deref`, `page-fault`, `gpf`, `bug`, `kasan`, `slab` or `oops`.
    pub kind: String,
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
}

impl Splat {
    /// True if `name` is the reported function or appears in the trace.
    pub fn involves(&self, name: &str) -> bool {
        self.function == name || self.trace.iter().any(|f| f == name)
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
        self.splats
            .iter()
            .any(|s| !matches!(s.kind.as_str(), "warning" | "refcount" | "slab"))
    }
}

static TIMESTAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[\s*\d+\.\d+\]\s?").expect("valid regex"));
static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^WARNING: (?:CPU: \d+ PID: \d+ )?at (\S+):(\d+) (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*$")
        .expect("valid regex")
});
static CHIP_GONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\w+): backing chip is gone").expect("valid regex"));
static WARNING_ANY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^WARNING: ").expect("valid regex"));
static KERNEL_BUG_AT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^kernel BUG at (\S+):(\d+)!").expect("valid regex"));
static KASAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^BUG: KASAN: (\S+) in (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*$")
        .expect("valid regex")
});
static NULL_DEREF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^BUG: kernel NULL pointer dereference").expect("valid regex"));
static PAGE_FAULT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^BUG: unable to handle page fault").expect("valid regex"));
static GPF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:Oops: )?general protection fault").expect("valid regex"));
static SLAB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^BUG \S+ \(.*\): ").expect("valid regex"));
static OTHER_BUG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^BUG: ").expect("valid regex"));
static OOPS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Oops: ").expect("valid regex"));
static RIP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^RIP: [0-9a-f]{4}:((\S+?)\+0x[0-9a-f]+/0x[0-9a-f]+)").expect("valid regex")
});
static TRACE_ENTRY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(\? )?([A-Za-z_.][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?\s*$")
        .expect("valid regex")
});

/// The text of a console line without its time stamp and line-end.
fn body(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    match TIMESTAMP.find(line) {
        Some(m) => &line[m.end()..],
        None => line,
    }
}

#[derive(PartialEq, Eq)]
enum State {
    Idle,
    /// Inside a report, before or within its call trace.
    InReport {
        in_trace: bool,
    },
}

/// Classifies a whole console log.
pub fn classify(console: &str) -> ConsoleFindings {
    let mut out = ConsoleFindings::default();
    let mut state = State::Idle;
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

        if let Some(splat) = start_of_report(line, previous, &state, &mut out) {
            out.splats.push(splat);
            state = State::InReport { in_trace: false };
            previous = line;
            continue;
        }

        if let State::InReport { in_trace } = &mut state {
            let current = out.splats.last_mut().expect("a report is open");
            if line.starts_with("---[ end trace") {
                state = State::Idle;
            } else if let Some(c) = RIP.captures(line) {
                if current.function.is_empty() {
                    current.function = c[2].to_string();
                }
                if current.location.is_empty() {
                    current.location = c[1].to_string();
                }
            } else if line.trim() == "Call Trace:" {
                *in_trace = true;
            } else if *in_trace {
                if let Some(c) = TRACE_ENTRY.captures(line) {
                    if c.get(1).is_none() {
                        current.trace.push(c[2].to_string());
                    }
                } else if line.trim() == "</TASK>" {
                    *in_trace = false;
                }
            }
        }
        previous = line;
    }
    out
}

/// If `line` starts a new report, the report so far.
fn start_of_report(
    line: &str,
    previous: &str,
    state: &State,
    out: &mut ConsoleFindings,
) -> Option<Splat> {
    let splat = |kind: &str, location: String, function: String| Splat {
        kind: kind.to_string(),
        location,
        function,
        trace: Vec::new(),
        headline: line.to_string(),
    };
    if let Some(c) = WARNING.captures(line) {
        let kind = if previous.starts_with("refcount_t: ") || c[1].ends_with("lib/refcount.c") {
            "refcount"
        } else {
            "warning"
        };
        return Some(splat(
            kind,
            format!("{}:{}", &c[1], &c[2]),
            c[3].to_string(),
        ));
    }
    if WARNING_ANY.is_match(line) {
        return Some(splat("warning", String::new(), String::new()));
    }
    if let Some(c) = KASAN.captures(line) {
        return Some(splat("kasan", String::new(), c[2].to_string()));
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
        let open_fault = matches!(state, State::InReport { .. })
            && out
                .splats
                .last()
                .is_some_and(|s| s.kind != "warning" && s.kind != "refcount" && s.trace.is_empty());
        if !open_fault {
            return Some(splat("oops", String::new(), String::new()));
        }
    }
    None
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
[   10.0]  module_put+0x7c/0x90
[   10.0]  gpiod_free_commit+0x10/0x20
[   10.0]  </TASK>
[   10.0] ---[ end trace 0000000000000000 ]---
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1);
        assert_eq!(f.splats[0].kind, "refcount");
        assert_eq!(f.splats[0].function, "refcount_warn_saturate");
        assert_eq!(f.splats[0].trace, vec!["module_put", "gpiod_free_commit"]);
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
    }

    #[test]
    fn poisoned_pointer_fault_on_612() {
        let log = "\
[   30.2] Oops: general protection fault, probably for non-canonical address 0x6b6b6b6b6b6b6b73: 0000 [#1] PREEMPT SMP NOPTI
[   30.2] CPU: 0 UID: 0 PID: 99 Comm: rmmod Not tainted 6.12.11 #1
[   30.2] RIP: 0010:gpiod_free+0x12/0x80
[   30.2] Call Trace:
[   30.2]  <TASK>
[   30.2]  ? die_addr+0x32/0x80
[   30.2]  release_nodes+0x40/0xb0
[   30.2]  devres_release_all+0x89/0xc0
[   30.2]  </TASK>
[   30.2] ---[ end trace 0000000000000000 ]---
";
        let f = classify(log);
        assert_eq!(f.splats.len(), 1, "{f:#?}");
        assert_eq!(f.splats[0].kind, "gpf");
        assert_eq!(f.splats[0].function, "gpiod_free");
        assert!(f.splats[0].involves("release_nodes"));
    }

    #[test]
    fn two_reports_and_noise_between() {
        let mut log = String::from(WARN_61);
        log.push_str("# ok 3 write\nsome user output\n");
        log.push_str(WARN_61);
        let f = classify(&log);
        assert_eq!(f.splats.len(), 2);
        assert_eq!(f.splats[1].trace.len(), 10);
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
    }

    #[test]
    fn a_clean_console_has_nothing() {
        let log = "[    0.0] Linux version 6.1.0\n[    1.0] at24 0-0050: 4096 byte 24c32 EEPROM, writable, 32 bytes/write\nKTAP version 1\nok 1 boot\n";
        assert_eq!(classify(log), ConsoleFindings::default());
    }
}
