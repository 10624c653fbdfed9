// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parser, checker, renderer and interpreter of scenario files.

use super::*;

const SMALL: &str = r#"
name = "small"
purpose = "a write, an unplug and a refcount"

[devices.gpio]
wp_line = "wp"

[[devices.gpio.line]]
name = "wp"
pull = "up"

[[devices.gpio.line]]
name = "irq"
host = 1

[[devices.eeprom]]
id = "e"
model = "24c32"
addr = 0x50
twr_us = 0

[[step]]
do = "load"
module = "at24"
params = ["wp_over_config=1"]

[[step]]
do = "write"
eeprom = "e"
pattern = "A"
offset = 128
observe = "first"

[[step]]
name = "go"
do = "mark"
mark = "unplug-now"

[[step]]
do = "refcount"
module = "gpio_virtio"
observe = "refs"
always = true

[[on]]
mark = "unplug-now"
do = "device-del"
device = "gpio"

[[on]]
mark = "unplug-now"
do = "set-line"
line = "irq"
value = 0
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, "t.toml")
}

/// The error of a file, as the user sees it.
fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_file_parses_into_devices_steps_and_actions() {
    let s = parse(SMALL).unwrap();
    assert_eq!(s.name, "small");
    assert_eq!(s.kind, FileKind::Reproduce);
    assert_eq!(
        s.devices.gpio_lines_arg().as_deref(),
        Some("wp:up,irq:down")
    );
    assert_eq!(s.devices.eeproms[0].twr_us, Some(0));
    assert_eq!(s.steps.len(), 4);
    assert_eq!(s.steps[0].name, "load");
    assert!(s.steps[0].fatal, "load is fatal by default");
    assert_eq!(s.steps[2].name, "go");
    assert!(!s.steps[2].fatal);
    assert!(s.steps[3].always);
    assert_eq!(s.steps[1].line, 27);
    assert_eq!(s.on.len(), 2);
    assert_eq!(
        s.on[0].action,
        HostAction::DeviceDel {
            device: DeviceName::Gpio
        }
    );
    assert_eq!(
        s.results(),
        [
            ("first".to_string(), ResultKind::Write),
            ("refs".to_string(), ResultKind::Int)
        ]
    );
}

#[test]
fn the_guest_script_calls_one_helper_per_step() {
    let s = parse(SMALL).unwrap();
    assert_eq!(
        s.guest_script(),
        "# generated from t.toml by guest-tests\n\
         scenario 'small'\n\
         plan 4\n\
         step fatal 'load' 'load' 'at24' 'wp_over_config=1'\n\
         step fatal 'write' 'write' '0050' 'A' '128' 'first' 'must-succeed'\n\
         step - 'go' 'mark_step' 'unplug-now'\n\
         step always 'refcount' 'refcount' 'gpio_virtio' 'refs'\n"
    );
}

#[test]
fn the_guest_script_is_valid_shell_for_the_runner() {
    // Every helper the rendered steps call exists in the runner.
    let init =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/init")).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files = load_dir(&dir).unwrap();
    for ex in ["stock-unbind-then-unplug", "kill-gpio-backend"] {
        files.push(Scenario::load(&dir.join(format!("examples/{ex}.toml"))).unwrap());
    }
    for s in files {
        for line in s.guest_script().lines().filter(|l| l.starts_with("step ")) {
            let helper = line.split(' ').nth(3).unwrap().trim_matches('\'');
            assert!(
                init.contains(&format!("\nst_{helper}() ")),
                "{}: no st_{helper} in guest/init",
                s.name
            );
        }
    }
}

#[test]
fn the_repository_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let all = load_dir(&dir).unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "stock-unbind",
        "unbind",
        "unplug-then-unbind",
        "unbind-then-unplug",
        "stock-unplug",
        "replug",
        "irq",
        "eeprom",
        "level-irq",
        "shared-wp",
        "bench",
        "boot",
    ] {
        assert!(names.contains(&want), "no scenario {want}: {names:?}");
    }
    assert_eq!(all.iter().filter(|s| s.kind == FileKind::Bench).count(), 1);
    assert_eq!(all.iter().filter(|s| s.kind == FileKind::Boot).count(), 1);
    for (file, name) in [
        (
            "examples/stock-unbind-then-unplug.toml",
            "stock-unbind-then-unplug",
        ),
        ("examples/kill-gpio-backend.toml", "kill-gpio-backend"),
    ] {
        let ex = Scenario::load(&dir.join(file)).unwrap();
        assert_eq!(ex.name, name);
        assert!(
            !names.contains(&name),
            "{name} is an example, not in the matrix"
        );
    }
}

#[test]
fn syntax_and_type_errors_name_the_file_and_line() {
    let e = err("name = \"x\"\npurpose = \"y\"\n[[step]\n");
    assert!(e.starts_with("t.toml: TOML parse error at line 3"), "{e}");
    let e = err(&SMALL.replace("purpose =", "porpose ="));
    assert!(e.contains("unknown field `porpose`"), "{e}");
    let e = err(&SMALL.replace("addr = 0x50", "addr = \"0x50\""));
    assert!(e.contains("line 19") && e.contains("invalid type"), "{e}");
    let e = err(&SMALL.replace("name = \"small\"\n", ""));
    assert!(e.contains("missing field `name`"), "{e}");
}

#[test]
fn step_errors_name_the_file_and_line() {
    // Unknown kind.
    let e = err(&SMALL.replace("do = \"write\"", "do = \"scribble\""));
    assert!(
        e.starts_with("t.toml:27: step 2: unknown variant `scribble`"),
        "{e}"
    );
    // Unknown field.
    let e = err(&SMALL.replace("offset = 128", "ofset = 128"));
    assert!(
        e.starts_with("t.toml:27: step 2: unknown field `ofset`"),
        "{e}"
    );
    // Missing field.
    let e = err(&SMALL.replace("observe = \"first\"\n", ""));
    assert!(
        e.starts_with("t.toml:27: step 2: missing field `observe`"),
        "{e}"
    );
    // Wrong type.
    let e = err(&SMALL.replace("offset = 128", "offset = \"128\""));
    assert!(e.starts_with("t.toml:27: step 2: invalid type"), "{e}");
    let e = err(&SMALL.replace("always = true", "always = \"yes\""));
    assert!(
        e.starts_with("t.toml:39: step 4: 'always' must be true or false"),
        "{e}"
    );
    // No kind at all.
    let e = err(&SMALL.replace("do = \"load\"\n", ""));
    assert!(
        e.starts_with("t.toml:22: step 1: missing field `do`"),
        "{e}"
    );
}

#[test]
fn marks_and_host_actions_must_pair() {
    let e = err(&SMALL.replace(
        "mark = \"unplug-now\"\ndo = \"device-del\"",
        "mark = \"unplug-later\"\ndo = \"device-del\"",
    ));
    assert!(
        e.starts_with("t.toml:45: host action for mark 'unplug-later', which no step prints"),
        "{e}"
    );
    let no_on = &SMALL[..SMALL.find("[[on]]").unwrap()];
    let e = err(no_on);
    assert!(
        e.starts_with("t.toml:34: mark 'unplug-now' has no host action"),
        "{e}"
    );
    let e = err(&SMALL.replace("unplug-now", "done"));
    assert!(
        e.contains("mark 'done' is one the runner prints itself"),
        "{e}"
    );
    let e = err(&SMALL.replace("do = \"device-del\"", "do = \"teleport\""));
    assert!(
        e.starts_with("t.toml:45: [[on]] 1: unknown variant `teleport`"),
        "{e}"
    );
    let e = err(&SMALL.replace("device = \"gpio\"", "device = \"pci\""));
    assert!(e.contains("[[on]] 1: unknown variant `pci`"), "{e}");
}

#[test]
fn references_are_checked() {
    let e = err(&SMALL.replace("eeprom = \"e\"", "eeprom = \"f\""));
    assert!(e.starts_with("t.toml:27: no EEPROM 'f'"), "{e}");
    let e = err(&SMALL.replace("line = \"irq\"", "line = \"irc\""));
    assert!(e.contains("no gpio line 'irc' (lines: wp, irq)"), "{e}");
    let e = err(&SMALL.replace("offset = 128", "offset = 4096"));
    assert!(
        e.contains("does not fit the EEPROM 'e' (4096 bytes)"),
        "{e}"
    );
    let e = err(&SMALL.replace("offset = 128", "offset = 100"));
    assert!(e.contains("offset 100: a multiple of 64"), "{e}");
    let e = err(&SMALL.replace("observe = \"refs\"", "observe = \"first\""));
    assert!(
        e.contains("result 'first' is already observed at line 27"),
        "{e}"
    );
    let e = err(&SMALL.replace("wp_over_config=1", "wp_over_config=1;reboot"));
    assert!(
        e.contains("module parameter 'wp_over_config=1;reboot'"),
        "{e}"
    );
    let e = err(&SMALL.replace("model = \"24c32\"", "model = \"24c33\""));
    assert!(e.contains("EEPROM model '24c33'"), "{e}");
    let e = err(&SMALL.replace("wp_line = \"wp\"", "wp_line = \"wq\""));
    assert!(e.contains("wp_line 'wq' is not one of the lines"), "{e}");
    let irq = SMALL.replace(
        "[[step]]\ndo = \"refcount\"",
        "[[step]]\ndo = \"irq-changed\"\nsince = \"before\"\nobserve = \"x\"\n\n[[step]]\ndo = \"refcount\"",
    );
    let e = err(&irq);
    assert!(
        e.contains("irq-changed since 'before': no earlier irq-count"),
        "{e}"
    );
    let e = err(&SMALL.replace("name = \"small\"", "name = \"all\""));
    assert!(e.contains("scenario name 'all'"), "{e}");
}

#[test]
fn a_scenario_name_is_defined_once() {
    let mut list = vec![parse(SMALL).unwrap()];
    let e = add(&mut list, Scenario::parse(SMALL, "u.toml").unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "u.toml: scenario 'small' is already defined by t.toml"
    );
}

/// A host that records what it was asked and keeps images in a directory.
struct Recorder {
    dir: tempfile::TempDir,
    acts: Vec<HostAction>,
    fail: bool,
}

impl Host for Recorder {
    fn act(&mut self, action: &HostAction) -> Result<(), String> {
        self.acts.push(action.clone());
        if self.fail {
            Err("QEMU said no".into())
        } else {
            Ok(())
        }
    }

    fn image(&self, e: &Eeprom) -> PathBuf {
        self.dir.path().join(e.image_name())
    }
}

fn recorder() -> Recorder {
    Recorder {
        dir: tempfile::tempdir().unwrap(),
        acts: Vec::new(),
        fail: false,
    }
}

fn image_with(tag: &str, offset: usize) -> Vec<u8> {
    let mut img = vec![0xffu8; 4096];
    img[offset..offset + PATTERN_LEN].copy_from_slice(&pattern(tag));
    img
}

#[test]
fn marks_run_their_host_actions_in_order() {
    let s = parse(SMALL).unwrap();
    let mut host = recorder();
    let mut it = Interpreter::new(&s);
    it.line("[ 1.0] VGN-MARK: unplug-now label=virtio1", &mut host);
    assert_eq!(
        host.acts,
        [
            HostAction::DeviceDel {
                device: DeviceName::Gpio
            },
            HostAction::SetLine {
                line: "irq".into(),
                value: 0
            }
        ]
    );
    // Markers without a host action change nothing; a failed action is a note.
    it.line("VGN-MARK: step 3 go", &mut host);
    assert_eq!(host.acts.len(), 2);
    host.fail = true;
    it.line("VGN-MARK: unplug-now", &mut host);
    assert_eq!(it.notes, ["on mark unplug-now: QEMU said no"; 2]);
    assert!(!it.done);
    it.line("VGN-MARK: done scenario=small", &mut host);
    assert!(it.done);
}

#[test]
fn writes_are_judged_on_the_image_once() {
    let s = parse(SMALL).unwrap();
    let e = &s.devices.eeproms[0];
    let mut host = recorder();
    let mut it = Interpreter::new(&s);
    assert_eq!(it.observations.write("first"), WriteOutcome::NotApplicable);
    std::fs::write(host.image(e), image_with("A", 128)).unwrap();
    it.line(
        "VGN-MARK: write-begin observe=first pattern=A offset=128",
        &mut host,
    );
    it.line("VGN-MARK: write-end observe=first status=ok", &mut host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Landed);
    // Judged once: a later change of the image does not rewrite history.
    std::fs::write(host.image(e), vec![0xffu8; 4096]).unwrap();
    it.line("VGN-MARK: write-end observe=first status=ok", &mut host);
    it.finish(&host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Landed);

    // At another offset the pattern is not the one written: blocked.
    let mut it = Interpreter::new(&s);
    std::fs::write(host.image(e), image_with("A", 0)).unwrap();
    it.line("VGN-MARK: write-begin observe=first", &mut host);
    it.line("VGN-MARK: write-end observe=first status=ok", &mut host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Blocked);

    // A failed write syscall is refused, whatever the image holds.
    let mut it = Interpreter::new(&s);
    std::fs::write(host.image(e), image_with("A", 128)).unwrap();
    it.line("VGN-MARK: write-begin observe=first", &mut host);
    it.line(
        "VGN-MARK: write-end observe=first status=refused rc=1",
        &mut host,
    );
    assert_eq!(it.observations.write("first"), WriteOutcome::Refused);

    // A write call that did not return in time is no answer: judged at the end.
    let mut it = Interpreter::new(&s);
    it.line("VGN-MARK: write-begin observe=first", &mut host);
    it.line(
        "VGN-MARK: write-end observe=first status=timeout",
        &mut host,
    );
    assert_eq!(it.observations.write("first"), WriteOutcome::NotApplicable);
    assert_eq!(it.notes.len(), 1, "{:?}", it.notes);
    it.finish(&host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Landed);

    // A write the guest never finished (it died in it) is judged at the end.
    let mut it = Interpreter::new(&s);
    it.line("VGN-MARK: write-begin observe=first", &mut host);
    assert_eq!(it.observations.write("first"), WriteOutcome::NotApplicable);
    it.finish(&host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Landed);

    // No image at all: the bytes are not there.
    std::fs::remove_file(host.image(e)).unwrap();
    let mut it = Interpreter::new(&s);
    it.line("VGN-MARK: write-begin observe=first", &mut host);
    it.line("VGN-MARK: write-end observe=first status=ok", &mut host);
    assert_eq!(it.observations.write("first"), WriteOutcome::Blocked);
}

#[test]
fn results_are_typed_by_their_step() {
    let s = parse(SMALL).unwrap();
    let mut host = recorder();
    let mut it = Interpreter::new(&s);
    assert_eq!(it.observations.get("refs"), None);
    it.line("VGN-MARK: observe name=refs value=-1", &mut host);
    assert_eq!(it.observations.get("refs"), Some(&Value::Int(-1)));
    it.line("VGN-MARK: observe name=refs value=none", &mut host);
    assert_eq!(it.observations.get("refs"), None);
    it.line("VGN-MARK: observe name=stray value=1", &mut host);
    it.line("VGN-MARK: observe name=first value=landed", &mut host);
    it.line("VGN-MARK: observe value=1", &mut host);
    assert_eq!(it.notes.len(), 3, "{:?}", it.notes);
    assert!(it.notes[0].contains("'stray'"));
    assert_eq!(it.observations.write("first"), WriteOutcome::NotApplicable);
    assert_eq!(it.markers.len(), 5);
}

#[test]
fn sizes_of_the_models() {
    assert_eq!(model_size("24c01"), Some(128));
    assert_eq!(model_size("24c32"), Some(4096));
    assert_eq!(model_size("24c2048"), Some(262_144));
    assert_eq!(model_size("24c03"), None);
    assert_eq!(model_size("at24"), None);
}

#[test]
fn pattern_matches_the_runner() {
    // What `make_pattern A` in guest-tests/guest/init writes, computed with sha256sum.
    let p = pattern("A");
    assert_eq!(p.len(), PATTERN_LEN);
    assert!(p.starts_with(b"VGN-A-06f961b802bc46ee168555f066d28f4f.."));
    assert_eq!(&p[38..], &[b'.'; 26][..]);
    assert_ne!(pattern("A"), pattern("B"));
}

#[test]
fn needs_are_module_parameters_or_build_features() {
    let s = parse(&SMALL.replace(
        "[devices.gpio]",
        "needs = [\"at24.wp_over_config\", \"nvmem_core.wp_nonexclusive\", \"nvmem_config.wp_gpio\"]\n\n[devices.gpio]",
    ))
    .unwrap();
    assert_eq!(
        s.needs,
        [
            Need::Param {
                module: "at24".into(),
                param: "wp_over_config".into()
            },
            Need::Param {
                module: "nvmem_core".into(),
                param: "wp_nonexclusive".into()
            },
            Need::Build("nvmem_config.wp_gpio"),
        ]
    );
    assert_eq!(
        s.needs.iter().map(Need::to_string).collect::<Vec<_>>(),
        [
            "at24.wp_over_config",
            "nvmem_core.wp_nonexclusive",
            "nvmem_config.wp_gpio"
        ]
    );
    assert_eq!(
        Need::parse("gpio-virtio.x"),
        Ok(Need::Param {
            module: "gpio-virtio".into(),
            param: "x".into()
        })
    );
}

#[test]
fn an_unknown_need_names_the_file_and_line() {
    let with = |needs: &str| {
        err(&SMALL.replace(
            "[devices.gpio]",
            &format!("needs = [\n  \"at24.wp_over_config\",\n  {needs},\n]\n\n[devices.gpio]"),
        ))
    };
    // The needs start at line 5; the second entry is on line 7.
    let e = with("\"wp_gpio\"");
    assert!(
        e.starts_with("t.toml:7: unknown feature 'wp_gpio': a feature is <module>.<parameter>"),
        "{e}"
    );
    let e = with("\"nvmem_config.ignore_wp\"");
    assert_eq!(
        e,
        "t.toml:7: unknown feature 'nvmem_config.ignore_wp': of nvmem_config, the guest module's build detects only nvmem_config.wp_gpio"
    );
    for bad in [
        "\"at24.\"",
        "\"AT24.wp\"",
        "\"at24.wp.x\"",
        "\"at24.wp-over\"",
        "\"\"",
    ] {
        assert!(with(bad).starts_with("t.toml:7: unknown feature"), "{bad}");
    }
    let e = with("\"at24.wp_over_config\"");
    assert_eq!(e, "t.toml:7: feature 'at24.wp_over_config' is needed twice");
    let e = err(&SMALL.replace("[devices.gpio]", "needs = \"at24.x\"\n[devices.gpio]"));
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn needs_are_checked_in_the_guest_before_any_step() {
    let s = parse(&SMALL.replace(
        "[devices.gpio]",
        "needs = [\"at24.wp_over_config\", \"nvmem_config.wp_gpio\"]\n[devices.gpio]",
    ))
    .unwrap();
    let script = s.guest_script();
    assert_eq!(
        script.lines().take(6).collect::<Vec<_>>(),
        [
            "# generated from t.toml by guest-tests",
            "scenario 'small'",
            "plan 4",
            "need 'param' 'at24' 'wp_over_config'",
            "need 'build' 'nvmem_config.wp_gpio' '-'",
            "step fatal 'load' 'load' 'at24' 'wp_over_config=1'",
        ]
    );
    // The runner has the check and each kind of it, and skips every step once one is missing.
    let init =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/init")).unwrap();
    for want in [
        "\nneed() {",
        "\n\tparam) _feat=$2.$3; have_param",
        "\n\tbuild) _feat=$2; have_build_feature",
        "mark \"lacks feature=$_feat\"",
        "echo \"ok $I $_name # SKIP $SKIP_ALL\"",
        "grep -z '^vgn_features='",
    ] {
        assert!(init.contains(want), "guest/init has no {want:?}");
    }
    // The tag the runner reads is the one the guest module's build writes.
    let module = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/module/eeprom_wire.c"),
    )
    .unwrap();
    assert!(module.contains("MODULE_INFO(vgn_features, EW_FEATURES)"));
    for f in BUILD_FEATURES {
        assert!(
            module.contains(&format!("\"{f}\"")),
            "eeprom_wire.c does not record {f}"
        );
    }
    // No needs: no check.
    assert!(!parse(SMALL).unwrap().guest_script().contains("\nneed "));
}

#[test]
fn the_interpreter_collects_missing_needs_and_the_config_check() {
    let s = parse(SMALL).unwrap();
    let mut i = Interpreter::new(&s);
    let mut host = recorder();
    for l in [
        "VGN-MARK: kconfig-wrong wanted CONFIG_I2C_VIRTIO=y, got nothing (symbol unknown or dependencies unmet)",
        "VGN-MARK: kconfig status=unmet fragments=6.12",
        "VGN-MARK: lacks feature=at24.wp_over_config",
        "[    3.1] VGN-MARK: lacks feature=nvmem_config.wp_gpio",
    ] {
        i.line(l, &mut host);
    }
    assert_eq!(i.lacks, ["at24.wp_over_config", "nvmem_config.wp_gpio"]);
    let k = i.kconfig.clone().unwrap();
    assert_eq!(
        k,
        KconfigCheck::Unmet {
            fragments: "6.12".into(),
            wrong: vec![
                "wanted CONFIG_I2C_VIRTIO=y, got nothing (symbol unknown or dependencies unmet)"
                    .into()
            ]
        }
    );
    assert!(k.note().contains("CONFIG_I2C_VIRTIO=y"), "{}", k.note());
    i.line("VGN-MARK: kconfig status=unchecked", &mut host);
    assert!(i.kconfig.unwrap().note().starts_with("config unchecked"));
    assert!(host.acts.is_empty());
}

/// Two EEPROMs wired to one WP line, each written and read back.
const SHARED: &str = r#"
name = "shared"
purpose = "two EEPROMs on one WP line"

[devices.gpio]
wp_line = "wp"

[[devices.gpio.line]]
name = "wp"
pull = "up"

[[devices.eeprom]]
id = "one"
model = "24c32"
addr = 0x50

[[devices.eeprom]]
id = "two"
model = "24c02"
addr = 0x51
page = 8

[[step]]
do = "wire-eeprom"
eeprom = "one"
line = "wp"

[[step]]
do = "wait-nvmem"
eeprom = "one"

[[step]]
do = "write"
eeprom = "one"
pattern = "A"
observe = "w1"

[[step]]
name = "wire-two"
do = "wire-eeprom"
eeprom = "two"
line = "wp"

[[step]]
name = "wait-two"
do = "wait-nvmem"
eeprom = "two"

[[step]]
name = "write-two"
do = "write"
eeprom = "two"
pattern = "A"
offset = 64
observe = "w2"

[[step]]
do = "read-back"
eeprom = "two"
pattern = "A"
offset = 64

[[step]]
do = "rewire"
"#;

#[test]
fn several_eeproms_are_wired_and_addressed_by_their_address() {
    let s = parse(SHARED).unwrap();
    assert_eq!(
        s.guest_script(),
        "# generated from t.toml by guest-tests\n\
         scenario 'shared'\n\
         plan 8\n\
         step fatal 'wire-eeprom' 'wire_eeprom' 'wp' '24c32' '0x50' '32' '0050'\n\
         step fatal 'wait-nvmem' 'wait_nvmem' '0050'\n\
         step fatal 'write' 'write' '0050' 'A' '0' 'w1' 'must-succeed'\n\
         step fatal 'wire-two' 'wire_eeprom' 'wp' '24c02' '0x51' '8' '0051'\n\
         step fatal 'wait-two' 'wait_nvmem' '0051'\n\
         step fatal 'write-two' 'write' '0051' 'A' '64' 'w2' 'must-succeed'\n\
         step - 'read-back' 'read_back' '0051' 'A' '64' 'same'\n\
         step fatal 'rewire' 'rewire'\n"
    );
}

#[test]
fn an_eeprom_is_created_once() {
    // The same EEPROM wired twice: the second client at its address would fail.
    let twice = SHARED.replace("eeprom = \"two\"\nline", "eeprom = \"one\"\nline");
    let e = err(&twice);
    assert!(
        e.starts_with(
            "t.toml:38: EEPROM 'one' is already created by the wire-eeprom at line 23 \
             (rewire wires it again)"
        ),
        "{e}"
    );
    // Or created through sysfs after it was wired.
    let sysfs = SHARED.replace(
        "name = \"wire-two\"\ndo = \"wire-eeprom\"\neeprom = \"two\"\nline = \"wp\"",
        "name = \"wire-two\"\ndo = \"new-device\"\neeprom = \"one\"",
    );
    let e = err(&sysfs);
    assert!(
        e.starts_with("t.toml:38: EEPROM 'one' is already created by the wire-eeprom at line 23"),
        "{e}"
    );
    // Created through sysfs first, then wired.
    let e = err(&twice.replacen(
        "do = \"wire-eeprom\"\neeprom = \"one\"\nline = \"wp\"",
        "do = \"new-device\"\neeprom = \"one\"",
        1,
    ));
    assert!(
        e.ends_with("t.toml:37: EEPROM 'one' is already created by the new-device at line 23"),
        "{e}"
    );
    // Unloading eeprom_wire removes its clients: wiring again is fine.
    let reload = twice.replace(
        "[[step]]\nname = \"wire-two\"",
        "[[step]]\ndo = \"rmmod\"\nmodule = \"eeprom_wire\"\n\n[[step]]\nname = \"wire-two\"",
    );
    parse(&reload).unwrap();
    // A second EEPROM on a line that does not exist is named as before.
    let e = err(&SHARED.replace(
        "eeprom = \"two\"\nline = \"wp\"",
        "eeprom = \"two\"\nline = \"wq\"",
    ));
    assert!(
        e.starts_with("t.toml:38: no gpio line 'wq' (lines: wp)"),
        "{e}"
    );
}

#[test]
fn a_write_is_judged_on_its_own_eeprom_image() {
    let s = parse(SHARED).unwrap();
    let (one, two) = (&s.devices.eeproms[0], &s.devices.eeproms[1]);
    let mut host = recorder();
    let mut it = Interpreter::new(&s);
    // The same pattern: in the first image at 0, not in the second at 64.
    std::fs::write(host.image(one), image_with("A", 0)).unwrap();
    std::fs::write(host.image(two), vec![0xffu8; 256]).unwrap();
    it.line(
        "VGN-MARK: write-begin observe=w1 pattern=A offset=0",
        &mut host,
    );
    it.line("VGN-MARK: write-end observe=w1 status=ok", &mut host);
    it.line(
        "VGN-MARK: write-begin observe=w2 pattern=A offset=64",
        &mut host,
    );
    it.line("VGN-MARK: write-end observe=w2 status=ok", &mut host);
    assert_eq!(it.observations.write("w1"), WriteOutcome::Landed);
    assert_eq!(it.observations.write("w2"), WriteOutcome::Blocked);

    // In the second image at 64: landed there, whatever the first holds.
    let mut it = Interpreter::new(&s);
    std::fs::write(host.image(one), vec![0xffu8; 4096]).unwrap();
    let mut img = vec![0xffu8; 256];
    img[64..64 + PATTERN_LEN].copy_from_slice(&pattern("A"));
    std::fs::write(host.image(two), img).unwrap();
    it.line(
        "VGN-MARK: write-begin observe=w2 pattern=A offset=64",
        &mut host,
    );
    it.line("VGN-MARK: write-end observe=w2 status=ok", &mut host);
    assert_eq!(it.observations.write("w2"), WriteOutcome::Landed);
}
