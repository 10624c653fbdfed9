// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated GPIO lines: a pure state machine with no knowledge of virtio
//! queues, guest memory or sockets.
//!
//! Every line has a pull (the level it reads when nothing drives it), a
//! direction set by the guest, a stored output value, an optional level forced
//! by the host (control socket), and interrupt state: the trigger type, an edge
//! latch, and the eventq buffer that unmasks it. The buffer is an opaque token
//! `T` chosen by the caller; the model hands tokens back in [`Completion`]s when
//! they are to be returned to the driver.
//!
//! A line's effective level is its output value when the guest drives it as an
//! output, else the host-set level if there is one, else its pull.
//!
//! Interrupt rules (virtio spec, GPIO device, "requestq"/"eventq" device
//! requirements):
//! - an interrupt is delivered only when it is both enabled (SET_IRQ_TYPE other
//!   than NONE) and unmasked (a buffer is queued); delivering it returns the
//!   buffer with status VALID, which masks the line again;
//! - an edge seen while enabled but masked is latched and delivered at the next
//!   unmask; a level is never latched: at unmask (or enable, or a level change)
//!   it is delivered if it holds then;
//! - disabling (type NONE) discards the latch and returns a queued buffer with
//!   status INVALID; so does SET_DIRECTION NONE, which discards all of the
//!   line's state; a buffer queued while the interrupt is disabled comes back
//!   INVALID at once.

use std::fmt;

use crate::protocol::{Direction, IrqType};

pub use common::line::Pull;

/// Name and pull of one line, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineSpec {
    /// Line name (may be empty).
    pub name: String,
    /// Level the line reads when nothing drives it.
    pub pull: Pull,
}

/// Why the model refused a request. The executor turns each into an error status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Line number not below ngpio.
    #[error("line {gpio} out of range (the device has {ngpio} lines)")]
    OutOfRange {
        /// Line asked for.
        gpio: u32,
        /// Number of lines.
        ngpio: usize,
    },
    /// Direction code the spec does not define.
    #[error("invalid direction code {0}")]
    BadDirection(u32),
    /// Value other than 0 or 1.
    #[error("invalid line value {0}")]
    BadValue(u32),
    /// Trigger type the spec does not define.
    #[error("invalid interrupt type {0}")]
    BadIrqType(u32),
    /// VIRTIO_GPIO_F_IRQ was not negotiated.
    #[error("interrupts were not negotiated (VIRTIO_GPIO_F_IRQ)")]
    IrqNotNegotiated,
    /// Interrupt asked on a line the guest drives as an output.
    #[error("line {0} is an output; interrupts need an input")]
    IrqOnOutput(u16),
    /// Output asked on a line with an enabled interrupt.
    #[error("line {0} has an interrupt enabled; disable it before driving the line")]
    OutputWithIrq(u16),
    /// A second eventq buffer for the same line.
    #[error("line {0} already has an eventq buffer queued")]
    BufferAlreadyQueued(u16),
    /// A request type the spec does not define.
    #[error("unknown request type {0:#x}")]
    Unsupported(u16),
}

/// Status of a returned eventq buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqStatus {
    /// An interrupt happened (`VIRTIO_GPIO_IRQ_STATUS_VALID`).
    Valid,
    /// The buffer comes back unused (`VIRTIO_GPIO_IRQ_STATUS_INVALID`).
    Invalid,
}

/// An eventq buffer to return to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<T> {
    /// The caller's token for the buffer.
    pub token: T,
    /// Line the buffer belongs to.
    pub gpio: u16,
    /// Status to write.
    pub status: IrqStatus,
}

/// What an operation caused, besides its own answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects<T> {
    /// eventq buffers to return, in order.
    pub completions: SmallList<Completion<T>>,
    /// Lines whose visible state (see [`LineState`]) changed.
    pub changed: SmallList<u16>,
}

impl<T> Default for Effects<T> {
    fn default() -> Self {
        Effects {
            completions: SmallList::new(),
            changed: SmallList::new(),
        }
    }
}

/// A list that keeps its first item inline. An operation on one line returns
/// at most one eventq buffer and changes at most that line, so its [`Effects`]
/// never allocate (serving a request allocates nothing); only
/// [`GpioModel::release_guest`] may report more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallList<T> {
    // Invariant: `rest` is empty while `first` is `None`.
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> SmallList<T> {
    /// An empty list.
    pub const fn new() -> Self {
        SmallList {
            first: None,
            rest: Vec::new(),
        }
    }

    /// Append an item.
    pub fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push(item);
        }
    }

    /// True when the list has no items.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// The items, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.into_iter()
    }

    /// True when `item` is in the list.
    pub fn contains(&self, item: &T) -> bool
    where
        T: PartialEq,
    {
        self.iter().any(|x| x == item)
    }

    /// The items, in order, as a `Vec`.
    pub fn to_vec(&self) -> Vec<T>
    where
        T: Clone,
    {
        self.iter().cloned().collect()
    }
}

impl<T> Default for SmallList<T> {
    fn default() -> Self {
        SmallList::new()
    }
}

impl<T> IntoIterator for SmallList<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl<'a, T> IntoIterator for &'a SmallList<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Chain<std::option::Iter<'a, T>, std::slice::Iter<'a, T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.iter().chain(self.rest.iter())
    }
}

/// Who sets a line's effective level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrivenBy {
    /// The guest drives it as an output.
    Guest,
    /// The host set a level through the control socket.
    Host,
    /// Nothing: it reads its pull.
    Pull,
}

impl fmt::Display for DrivenBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrivenBy::Guest => "guest",
            DrivenBy::Host => "host",
            DrivenBy::Pull => "pull",
        })
    }
}

/// A snapshot of one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineState {
    /// Line number.
    pub index: u16,
    /// Line name.
    pub name: String,
    /// Direction set by the guest.
    pub direction: Direction,
    /// Effective level.
    pub level: bool,
    /// Output value stored by SET_VALUE, if any.
    pub output: Option<bool>,
    /// Level forced by the host, if any.
    pub host_level: Option<bool>,
    /// Pull.
    pub pull: Pull,
    /// Interrupt trigger type.
    pub irq: IrqType,
    /// An edge interrupt is latched.
    pub latched: bool,
    /// An eventq buffer is queued (the interrupt is unmasked).
    pub unmasked: bool,
    /// Who sets the level.
    pub driven_by: DrivenBy,
}

/// The fields of [`LineState`] that operations change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Visible {
    direction: Direction,
    level: bool,
    output: Option<bool>,
    host_level: Option<bool>,
    pull: Pull,
    irq: IrqType,
    latched: bool,
    unmasked: bool,
    driven_by: DrivenBy,
}

#[derive(Debug)]
struct Line<T> {
    name: String,
    pull: Pull,
    direction: Direction,
    output: Option<bool>,
    host_level: Option<bool>,
    irq: IrqType,
    latched: bool,
    buffer: Option<T>,
}

impl<T> Line<T> {
    fn new(spec: &LineSpec) -> Self {
        Line {
            name: spec.name.clone(),
            pull: spec.pull,
            direction: Direction::None,
            output: None,
            host_level: None,
            irq: IrqType::None,
            latched: false,
            buffer: None,
        }
    }

    fn driven_by(&self) -> DrivenBy {
        if self.direction == Direction::Out {
            DrivenBy::Guest
        } else if self.host_level.is_some() {
            DrivenBy::Host
        } else {
            DrivenBy::Pull
        }
    }

    fn level(&self) -> bool {
        match self.driven_by() {
            DrivenBy::Guest => self.output.unwrap_or(false),
            DrivenBy::Host => self.host_level.unwrap_or(false),
            DrivenBy::Pull => self.pull.level(),
        }
    }

    fn clear_guest_state(&mut self) {
        self.direction = Direction::None;
        self.output = None;
        self.irq = IrqType::None;
        self.latched = false;
    }
}

/// The lines of one device.
#[derive(Debug)]
pub struct GpioModel<T> {
    lines: Vec<Line<T>>,
    names_block: Vec<u8>,
}

/// Error building a model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No lines.
    #[error("a GPIO device needs at least one line")]
    Empty,
    /// More lines than a le16 can count.
    #[error("{0} lines: virtio-gpio allows at most 65535")]
    TooMany(usize),
    /// A name with a NUL byte cannot go into the names block.
    #[error("line name {0:?} contains a NUL byte")]
    NulInName(String),
    /// Two lines with the same (non-empty) name.
    #[error("duplicate line name {0:?}")]
    Duplicate(String),
    /// The names block does not fit in a le32.
    #[error("the line names take {0} bytes, more than the config space can describe")]
    NamesTooLong(usize),
}

impl<T> GpioModel<T> {
    /// Build the lines; every line starts unused (direction NONE) and reads its pull.
    pub fn new(specs: &[LineSpec]) -> Result<Self, BuildError> {
        if specs.is_empty() {
            return Err(BuildError::Empty);
        }
        if u16::try_from(specs.len()).is_err() {
            return Err(BuildError::TooMany(specs.len()));
        }
        let mut seen = std::collections::HashSet::new();
        let mut names_block = Vec::new();
        for spec in specs {
            if spec.name.contains('\0') {
                return Err(BuildError::NulInName(spec.name.clone()));
            }
            if !spec.name.is_empty() && !seen.insert(spec.name.as_str()) {
                return Err(BuildError::Duplicate(spec.name.clone()));
            }
            names_block.extend_from_slice(spec.name.as_bytes());
            names_block.push(0);
        }
        if u32::try_from(names_block.len()).is_err() {
            return Err(BuildError::NamesTooLong(names_block.len()));
        }
        Ok(GpioModel {
            lines: specs.iter().map(Line::new).collect(),
            names_block,
        })
    }

    /// Number of lines.
    pub fn ngpio(&self) -> u16 {
        // Checked at construction.
        u16::try_from(self.lines.len()).unwrap_or(u16::MAX)
    }

    /// The GET_NAMES block: every name NUL-terminated, in line order.
    pub fn names_block(&self) -> &[u8] {
        &self.names_block
    }

    /// `gpio_names_size` for the config space.
    pub fn names_size(&self) -> u32 {
        u32::try_from(self.names_block.len()).unwrap_or(u32::MAX)
    }

    /// Find a line by name, else by decimal index.
    pub fn find(&self, name_or_index: &str) -> Option<u16> {
        if let Some(i) = self.lines.iter().position(|l| l.name == name_or_index) {
            return u16::try_from(i).ok();
        }
        let i: u16 = name_or_index.parse().ok()?;
        (usize::from(i) < self.lines.len()).then_some(i)
    }

    fn line(&self, gpio: u16) -> Result<&Line<T>, ModelError> {
        self.lines
            .get(usize::from(gpio))
            .ok_or(ModelError::OutOfRange {
                gpio: u32::from(gpio),
                ngpio: self.lines.len(),
            })
    }

    fn line_mut(&mut self, gpio: u16) -> Result<&mut Line<T>, ModelError> {
        let ngpio = self.lines.len();
        self.lines
            .get_mut(usize::from(gpio))
            .ok_or(ModelError::OutOfRange {
                gpio: u32::from(gpio),
                ngpio,
            })
    }

    /// Snapshot of one line.
    pub fn state(&self, gpio: u16) -> Option<LineState> {
        let name = self.lines.get(usize::from(gpio))?.name.clone();
        let v = self.visible(gpio)?;
        Some(LineState {
            index: gpio,
            name,
            direction: v.direction,
            level: v.level,
            output: v.output,
            host_level: v.host_level,
            pull: v.pull,
            irq: v.irq,
            latched: v.latched,
            unmasked: v.unmasked,
            driven_by: v.driven_by,
        })
    }

    /// The part of a line's [`LineState`] that operations change (all but its
    /// number and name), to tell whether one did without copying the name.
    fn visible(&self, gpio: u16) -> Option<Visible> {
        let l = self.lines.get(usize::from(gpio))?;
        Some(Visible {
            direction: l.direction,
            level: l.level(),
            output: l.output,
            host_level: l.host_level,
            pull: l.pull,
            irq: l.irq,
            latched: l.latched,
            unmasked: l.buffer.is_some(),
            driven_by: l.driven_by(),
        })
    }

    /// Snapshot of every line.
    pub fn states(&self) -> Vec<LineState> {
        (0..self.ngpio()).filter_map(|i| self.state(i)).collect()
    }

    /// Effective level of a line and whether the guest drives it.
    pub fn level(&self, gpio: u16) -> Option<(bool, bool)> {
        let l = self.lines.get(usize::from(gpio))?;
        Some((l.level(), l.driven_by() == DrivenBy::Guest))
    }

    /// GET_DIRECTION.
    pub fn get_direction(&self, gpio: u16) -> Result<Direction, ModelError> {
        Ok(self.line(gpio)?.direction)
    }

    /// GET_VALUE: the effective level.
    pub fn get_value(&self, gpio: u16) -> Result<bool, ModelError> {
        Ok(self.line(gpio)?.level())
    }

    /// Run `f` on a line and work out what changed: a level change feeds the
    /// interrupt logic, and a changed snapshot is reported.
    fn with_line(
        &mut self,
        gpio: u16,
        f: impl FnOnce(&mut Line<T>, &mut SmallList<Completion<T>>) -> Result<(), ModelError>,
    ) -> Result<Effects<T>, ModelError> {
        let before = self.visible(gpio);
        let line = self.line_mut(gpio)?;
        let old_level = line.level();
        let mut completions = SmallList::new();
        f(line, &mut completions)?;
        let new_level = line.level();
        if old_level != new_level {
            Self::level_changed(line, gpio, old_level, new_level, &mut completions);
        }
        let mut effects = Effects {
            completions,
            changed: SmallList::new(),
        };
        if self.visible(gpio) != before {
            effects.changed.push(gpio);
        }
        Ok(effects)
    }

    fn deliver(
        line: &mut Line<T>,
        gpio: u16,
        status: IrqStatus,
        out: &mut SmallList<Completion<T>>,
    ) {
        if let Some(token) = line.buffer.take() {
            out.push(Completion {
                token,
                gpio,
                status,
            });
        }
    }

    fn level_active(line: &Line<T>) -> bool {
        match line.irq {
            IrqType::LevelHigh => line.level(),
            IrqType::LevelLow => !line.level(),
            _ => false,
        }
    }

    fn level_changed(
        line: &mut Line<T>,
        gpio: u16,
        old: bool,
        new: bool,
        out: &mut SmallList<Completion<T>>,
    ) {
        let rising = !old && new;
        let falling = old && !new;
        let edge = match line.irq {
            IrqType::EdgeRising => rising,
            IrqType::EdgeFalling => falling,
            IrqType::EdgeBoth => rising || falling,
            _ => false,
        };
        if edge {
            if line.buffer.is_some() {
                Self::deliver(line, gpio, IrqStatus::Valid, out);
            } else {
                line.latched = true;
            }
        } else if Self::level_active(line) {
            // Level interrupts are never latched: delivered only if unmasked now.
            Self::deliver(line, gpio, IrqStatus::Valid, out);
        }
    }

    /// SET_DIRECTION. NONE discards the line's state (stored value, interrupt
    /// type, latch) and returns a queued eventq buffer INVALID.
    pub fn set_direction(&mut self, gpio: u16, direction: u32) -> Result<Effects<T>, ModelError> {
        let dir = Direction::from_wire(direction).ok_or(ModelError::BadDirection(direction));
        // Range errors take precedence over code errors.
        self.line(gpio)?;
        let dir = dir?;
        self.with_line(gpio, |line, out| {
            match dir {
                Direction::None => {
                    line.clear_guest_state();
                    Self::deliver(line, gpio, IrqStatus::Invalid, out);
                }
                Direction::Out => {
                    if line.irq != IrqType::None {
                        return Err(ModelError::OutputWithIrq(gpio));
                    }
                    line.direction = Direction::Out;
                }
                Direction::In => line.direction = Direction::In,
            }
            Ok(())
        })
    }

    /// SET_VALUE: stored, and driven when (or once) the line is an output.
    pub fn set_value(&mut self, gpio: u16, value: u32) -> Result<Effects<T>, ModelError> {
        self.line(gpio)?;
        let v = match value {
            0 => false,
            1 => true,
            other => return Err(ModelError::BadValue(other)),
        };
        self.with_line(gpio, |line, _| {
            line.output = Some(v);
            Ok(())
        })
    }

    /// SET_IRQ_TYPE. `negotiated` tells whether VIRTIO_GPIO_F_IRQ was acked.
    pub fn set_irq_type(
        &mut self,
        gpio: u16,
        irq_type: u32,
        negotiated: bool,
    ) -> Result<Effects<T>, ModelError> {
        if !negotiated {
            return Err(ModelError::IrqNotNegotiated);
        }
        self.line(gpio)?;
        let t = IrqType::from_wire(irq_type).ok_or(ModelError::BadIrqType(irq_type))?;
        self.with_line(gpio, |line, out| {
            if t == IrqType::None {
                line.irq = IrqType::None;
                line.latched = false;
                Self::deliver(line, gpio, IrqStatus::Invalid, out);
                return Ok(());
            }
            if line.direction == Direction::Out {
                return Err(ModelError::IrqOnOutput(gpio));
            }
            // A (re-)enable starts latching from now on.
            line.irq = t;
            line.latched = false;
            if Self::level_active(line) {
                Self::deliver(line, gpio, IrqStatus::Valid, out);
            }
            Ok(())
        })
    }

    /// An eventq buffer for `gpio` arrived (unmask). On error the token comes back
    /// with the reason; the caller returns it INVALID.
    pub fn queue_irq_buffer(&mut self, gpio: u16, token: T) -> Result<Effects<T>, (T, ModelError)> {
        let line = match self.line(gpio) {
            Ok(l) => l,
            Err(e) => return Err((token, e)),
        };
        if line.buffer.is_some() {
            return Err((token, ModelError::BufferAlreadyQueued(gpio)));
        }
        let before = self.visible(gpio);
        let mut out = SmallList::new();
        let ngpio = self.lines.len();
        let Some(line) = self.lines.get_mut(usize::from(gpio)) else {
            return Err((
                token,
                ModelError::OutOfRange {
                    gpio: u32::from(gpio),
                    ngpio,
                },
            ));
        };
        if line.irq == IrqType::None {
            // Unmasked without being enabled: the buffer goes straight back.
            out.push(Completion {
                token,
                gpio,
                status: IrqStatus::Invalid,
            });
        } else {
            line.buffer = Some(token);
            if line.irq.is_edge() && line.latched {
                line.latched = false;
                Self::deliver(line, gpio, IrqStatus::Valid, &mut out);
            } else if Self::level_active(line) {
                Self::deliver(line, gpio, IrqStatus::Valid, &mut out);
            }
        }
        let mut effects = Effects {
            completions: out,
            changed: SmallList::new(),
        };
        if self.visible(gpio) != before {
            effects.changed.push(gpio);
        }
        Ok(effects)
    }

    /// Host side: force a line's input level (`Some`) or let it float back to
    /// its pull (`None`). Interrupts fire per the armed trigger type.
    pub fn set_host_level(
        &mut self,
        gpio: u16,
        level: Option<bool>,
    ) -> Result<Effects<T>, ModelError> {
        self.with_line(gpio, |line, _| {
            line.host_level = level;
            Ok(())
        })
    }

    /// The guest driver is gone (rings stopped or disabled, device reset, or the
    /// connection ended): every line becomes unused and undriven, interrupts are
    /// disabled and queued eventq buffers are forgotten (the queue they belong
    /// to is stopped, so they cannot be returned). Host-set levels stay: they
    /// model the outside world, not the guest. Returns the dropped tokens.
    pub fn release_guest(&mut self) -> (Effects<T>, Vec<T>) {
        let mut effects = Effects::default();
        let mut dropped = Vec::new();
        for gpio in 0..self.ngpio() {
            let before = self.visible(gpio);
            if let Some(line) = self.lines.get_mut(usize::from(gpio)) {
                line.clear_guest_state();
                if let Some(t) = line.buffer.take() {
                    dropped.push(t);
                }
            }
            if self.visible(gpio) != before {
                effects.changed.push(gpio);
            }
        }
        (effects, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;

    const RISING: u32 = VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING as u32;
    const FALLING: u32 = VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING as u32;
    const BOTH: u32 = VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH as u32;
    const HIGH: u32 = VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH as u32;
    const LOW: u32 = VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW as u32;
    const NONE: u32 = VIRTIO_GPIO_IRQ_TYPE_NONE as u32;
    const OUT: u32 = VIRTIO_GPIO_DIRECTION_OUT as u32;
    const IN: u32 = VIRTIO_GPIO_DIRECTION_IN as u32;
    const DNONE: u32 = VIRTIO_GPIO_DIRECTION_NONE as u32;

    fn spec(name: &str, pull: Pull) -> LineSpec {
        LineSpec {
            name: name.into(),
            pull,
        }
    }

    fn model() -> GpioModel<u32> {
        GpioModel::new(&[
            spec("a", Pull::Down),
            spec("b", Pull::Up),
            spec("c", Pull::None),
        ])
        .unwrap()
    }

    fn statuses(e: &Effects<u32>) -> Vec<(u32, u16, IrqStatus)> {
        e.completions
            .iter()
            .map(|c| (c.token, c.gpio, c.status))
            .collect()
    }

    #[test]
    fn build_errors() {
        assert_eq!(GpioModel::<u32>::new(&[]).unwrap_err(), BuildError::Empty);
        let dup = [spec("x", Pull::Down), spec("x", Pull::Up)];
        assert_eq!(
            GpioModel::<u32>::new(&dup).unwrap_err(),
            BuildError::Duplicate("x".into())
        );
        let many: Vec<_> = (0..65536).map(|_| spec("", Pull::Down)).collect();
        assert_eq!(
            GpioModel::<u32>::new(&many).unwrap_err(),
            BuildError::TooMany(65536)
        );
        assert_eq!(
            GpioModel::<u32>::new(&[spec("a\0b", Pull::Down)]).unwrap_err(),
            BuildError::NulInName("a\0b".into())
        );
        // Empty names may repeat.
        assert!(GpioModel::<u32>::new(&[spec("", Pull::Down), spec("", Pull::Down)]).is_ok());
        let max: Vec<_> = (0..65535).map(|_| spec("", Pull::Down)).collect();
        assert_eq!(GpioModel::<u32>::new(&max).unwrap().ngpio(), 65535);
    }

    #[test]
    fn names_block_and_find() {
        let m = model();
        assert_eq!(m.names_block(), b"a\0b\0c\0");
        assert_eq!(m.names_size(), 6);
        assert_eq!(m.ngpio(), 3);
        assert_eq!(m.find("b"), Some(1));
        assert_eq!(m.find("2"), Some(2));
        assert_eq!(m.find("3"), None);
        assert_eq!(m.find("zz"), None);
    }

    #[test]
    fn undriven_lines_read_their_pull() {
        let m = model();
        assert_eq!(m.get_value(0), Ok(false));
        assert_eq!(m.get_value(1), Ok(true));
        assert_eq!(m.get_value(2), Ok(false));
        assert_eq!(m.get_direction(0), Ok(Direction::None));
        assert_eq!(m.state(1).unwrap().driven_by, DrivenBy::Pull);
    }

    #[test]
    fn out_of_range_and_bad_codes() {
        let mut m = model();
        let oor = ModelError::OutOfRange { gpio: 3, ngpio: 3 };
        assert_eq!(m.get_value(3), Err(oor.clone()));
        assert_eq!(m.get_direction(3), Err(oor.clone()));
        assert_eq!(m.set_value(3, 1), Err(oor.clone()));
        assert_eq!(m.set_direction(3, 9), Err(oor.clone()));
        assert_eq!(m.set_irq_type(3, RISING, true), Err(oor.clone()));
        assert_eq!(m.set_direction(0, 3), Err(ModelError::BadDirection(3)));
        assert_eq!(m.set_value(0, 2), Err(ModelError::BadValue(2)));
        assert_eq!(m.set_irq_type(0, 5, true), Err(ModelError::BadIrqType(5)));
        assert_eq!(
            m.set_irq_type(0, RISING, false),
            Err(ModelError::IrqNotNegotiated)
        );
        assert_eq!(
            m.queue_irq_buffer(9, 7).unwrap_err(),
            (7, ModelError::OutOfRange { gpio: 9, ngpio: 3 })
        );
    }

    #[test]
    fn output_drives_the_level() {
        let mut m = model();
        m.set_direction(1, OUT).unwrap();
        // Never set: an output drives 0.
        assert_eq!(m.get_value(1), Ok(false));
        let e = m.set_value(1, 1).unwrap();
        assert_eq!(e.changed.to_vec(), vec![1]);
        assert_eq!(m.get_value(1), Ok(true));
        assert_eq!(m.state(1).unwrap().driven_by, DrivenBy::Guest);
        assert_eq!(m.level(1), Some((true, true)));
    }

    #[test]
    fn set_value_before_output_is_stored_and_applied_later() {
        let mut m = model();
        m.set_value(0, 1).unwrap();
        // Still an undriven line: reads its pull (down).
        assert_eq!(m.get_value(0), Ok(false));
        m.set_direction(0, IN).unwrap();
        assert_eq!(m.get_value(0), Ok(false));
        m.set_direction(0, OUT).unwrap();
        assert_eq!(m.get_value(0), Ok(true));
    }

    #[test]
    fn direction_none_discards_state() {
        let mut m = model();
        m.set_value(0, 1).unwrap();
        m.set_direction(0, OUT).unwrap();
        m.set_direction(0, DNONE).unwrap();
        assert_eq!(m.get_value(0), Ok(false));
        // The stored value is gone: OUT again drives 0, not the old 1.
        m.set_direction(0, OUT).unwrap();
        assert_eq!(m.get_value(0), Ok(false));
        // Interrupt state goes too, and a queued buffer comes back INVALID.
        let mut m = model();
        m.set_direction(0, IN).unwrap();
        m.set_irq_type(0, RISING, true).unwrap();
        m.set_host_level(0, Some(true)).unwrap(); // latched
        assert!(m.state(0).unwrap().latched);
        m.set_direction(0, DNONE).unwrap();
        let s = m.state(0).unwrap();
        assert_eq!(
            (s.irq, s.latched, s.direction),
            (IrqType::None, false, Direction::None)
        );
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        m.queue_irq_buffer(0, 11).unwrap();
        let e = m.set_direction(0, DNONE).unwrap();
        assert_eq!(statuses(&e), vec![(11, 0, IrqStatus::Invalid)]);
    }

    #[test]
    fn host_level_overrides_pull_but_not_output() {
        let mut m = model();
        m.set_host_level(1, Some(false)).unwrap();
        assert_eq!(m.get_value(1), Ok(false));
        assert_eq!(m.state(1).unwrap().driven_by, DrivenBy::Host);
        m.set_value(1, 1).unwrap();
        m.set_direction(1, OUT).unwrap();
        assert_eq!(m.get_value(1), Ok(true));
        m.set_direction(1, IN).unwrap();
        assert_eq!(m.get_value(1), Ok(false));
        m.set_host_level(1, None).unwrap();
        assert_eq!(m.get_value(1), Ok(true));
    }

    #[test]
    fn messages_of_one_line_apply_in_order() {
        let mut m = model();
        m.set_value(0, 1).unwrap();
        m.set_direction(0, OUT).unwrap();
        assert_eq!(m.get_value(0), Ok(true));
        m.set_value(0, 0).unwrap();
        assert_eq!(m.get_value(0), Ok(false));
        m.set_value(0, 1).unwrap();
        assert_eq!(m.get_value(0), Ok(true));
    }

    #[test]
    fn edge_rising_delivers_when_unmasked() {
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        assert!(m.queue_irq_buffer(0, 1).unwrap().completions.is_empty());
        // Falling edge does not fire a rising trigger.
        m.set_host_level(0, Some(false)).unwrap();
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert_eq!(statuses(&e), vec![(1, 0, IrqStatus::Valid)]);
        // Delivering masks: the next edge is latched, not delivered.
        m.set_host_level(0, Some(false)).unwrap();
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert!(e.completions.is_empty());
        assert!(m.state(0).unwrap().latched);
    }

    #[test]
    fn edge_falling_and_both() {
        let mut m = model();
        m.set_irq_type(1, FALLING, true).unwrap(); // pulled up
        m.queue_irq_buffer(1, 5).unwrap();
        let e = m.set_host_level(1, Some(true)).unwrap();
        assert!(e.completions.is_empty(), "no change, no edge");
        let e = m.set_host_level(1, Some(false)).unwrap();
        assert_eq!(statuses(&e), vec![(5, 1, IrqStatus::Valid)]);

        let mut m = model();
        m.set_irq_type(0, BOTH, true).unwrap();
        m.queue_irq_buffer(0, 1).unwrap();
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert_eq!(statuses(&e), vec![(1, 0, IrqStatus::Valid)]);
        m.queue_irq_buffer(0, 2).unwrap();
        let e = m.set_host_level(0, None).unwrap(); // back to pull down: falling
        assert_eq!(statuses(&e), vec![(2, 0, IrqStatus::Valid)]);
    }

    #[test]
    fn edge_is_latched_while_masked() {
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert!(e.completions.is_empty());
        assert!(m.state(0).unwrap().latched);
        let e = m.queue_irq_buffer(0, 3).unwrap();
        assert_eq!(statuses(&e), vec![(3, 0, IrqStatus::Valid)]);
        assert!(!m.state(0).unwrap().latched);
        // Latch consumed: the next unmask waits.
        assert!(m.queue_irq_buffer(0, 4).unwrap().completions.is_empty());
    }

    #[test]
    fn edge_before_enable_is_not_latched() {
        let mut m = model();
        m.set_host_level(0, Some(true)).unwrap();
        m.set_irq_type(0, RISING, true).unwrap();
        assert!(m.queue_irq_buffer(0, 1).unwrap().completions.is_empty());
    }

    #[test]
    fn level_is_never_latched() {
        let mut m = model();
        m.set_irq_type(0, HIGH, true).unwrap();
        // Pulse high then low while masked: nothing is remembered.
        m.set_host_level(0, Some(true)).unwrap();
        m.set_host_level(0, Some(false)).unwrap();
        assert!(!m.state(0).unwrap().latched);
        assert!(m.queue_irq_buffer(0, 1).unwrap().completions.is_empty());
    }

    #[test]
    fn level_delivers_when_unmasked_and_holding() {
        let mut m = model();
        m.set_irq_type(0, HIGH, true).unwrap();
        m.set_host_level(0, Some(true)).unwrap();
        let e = m.queue_irq_buffer(0, 1).unwrap();
        assert_eq!(statuses(&e), vec![(1, 0, IrqStatus::Valid)]);
        // Still high: every unmask delivers again.
        let e = m.queue_irq_buffer(0, 2).unwrap();
        assert_eq!(statuses(&e), vec![(2, 0, IrqStatus::Valid)]);
        // Low: the buffer waits, then the level rising delivers it.
        m.set_host_level(0, Some(false)).unwrap();
        assert!(m.queue_irq_buffer(0, 3).unwrap().completions.is_empty());
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert_eq!(statuses(&e), vec![(3, 0, IrqStatus::Valid)]);
    }

    #[test]
    fn level_low() {
        let mut m = model();
        m.set_irq_type(1, LOW, true).unwrap(); // pulled up: inactive
        assert!(m.queue_irq_buffer(1, 1).unwrap().completions.is_empty());
        let e = m.set_host_level(1, Some(false)).unwrap();
        assert_eq!(statuses(&e), vec![(1, 1, IrqStatus::Valid)]);
        // Enabling a level type while the level holds and a buffer waits delivers.
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        m.queue_irq_buffer(0, 8).unwrap();
        let e = m.set_irq_type(0, LOW, true).unwrap();
        assert_eq!(statuses(&e), vec![(8, 0, IrqStatus::Valid)]);
    }

    #[test]
    fn disable_discards_the_latched_edge() {
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        m.set_host_level(0, Some(true)).unwrap();
        assert!(m.state(0).unwrap().latched);
        let e = m.set_irq_type(0, NONE, true).unwrap();
        assert!(e.completions.is_empty());
        assert!(!m.state(0).unwrap().latched);
        // Re-enabled: the discarded latch does not come back.
        m.set_irq_type(0, RISING, true).unwrap();
        assert!(m.queue_irq_buffer(0, 1).unwrap().completions.is_empty());
    }

    #[test]
    fn disable_returns_the_queued_buffer_invalid() {
        let mut m = model();
        m.set_irq_type(0, HIGH, true).unwrap();
        assert!(m.queue_irq_buffer(0, 1).unwrap().completions.is_empty());
        assert!(m.state(0).unwrap().unmasked);
        let e = m.set_irq_type(0, NONE, true).unwrap();
        assert_eq!(statuses(&e), vec![(1, 0, IrqStatus::Invalid)]);
        assert!(!m.state(0).unwrap().unmasked);
        // Disabling again with nothing queued returns nothing.
        assert!(m
            .set_irq_type(0, NONE, true)
            .unwrap()
            .completions
            .is_empty());
    }

    #[test]
    fn unmask_without_enable_returns_invalid() {
        let mut m = model();
        let e = m.queue_irq_buffer(2, 9).unwrap();
        assert_eq!(statuses(&e), vec![(9, 2, IrqStatus::Invalid)]);
        assert!(!m.state(2).unwrap().unmasked);
    }

    #[test]
    fn second_buffer_for_a_line_is_refused() {
        let mut m = model();
        m.set_irq_type(0, RISING, true).unwrap();
        m.queue_irq_buffer(0, 1).unwrap();
        assert_eq!(
            m.queue_irq_buffer(0, 2).unwrap_err(),
            (2, ModelError::BufferAlreadyQueued(0))
        );
        // The first one is still the one delivered.
        let e = m.set_host_level(0, Some(true)).unwrap();
        assert_eq!(statuses(&e), vec![(1, 0, IrqStatus::Valid)]);
    }

    #[test]
    fn irq_and_output_exclude_each_other() {
        let mut m = model();
        m.set_direction(0, OUT).unwrap();
        assert_eq!(
            m.set_irq_type(0, RISING, true),
            Err(ModelError::IrqOnOutput(0))
        );
        // Disabling is always allowed.
        assert!(m.set_irq_type(0, NONE, true).is_ok());
        m.set_direction(1, IN).unwrap();
        m.set_irq_type(1, RISING, true).unwrap();
        assert_eq!(m.set_direction(1, OUT), Err(ModelError::OutputWithIrq(1)));
    }

    #[test]
    fn release_guest_makes_lines_float_and_keeps_host_levels() {
        let mut m = model();
        m.set_value(1, 0).unwrap();
        m.set_direction(1, OUT).unwrap();
        m.set_host_level(2, Some(true)).unwrap();
        m.set_irq_type(0, RISING, true).unwrap();
        m.queue_irq_buffer(0, 4).unwrap();
        let (e, dropped) = m.release_guest();
        assert_eq!(dropped, vec![4]);
        assert!(e.changed.contains(&0) && e.changed.contains(&1));
        assert_eq!(m.level(1), Some((true, false)));
        assert_eq!(m.get_value(2), Ok(true));
        for s in m.states() {
            assert_eq!(s.direction, Direction::None);
            assert_eq!(s.irq, IrqType::None);
            assert!(!s.unmasked);
        }
    }

    #[test]
    fn small_list_keeps_order() {
        let mut l = SmallList::new();
        assert!(l.is_empty() && l.to_vec().is_empty());
        assert_eq!(l.len(), 0);
        l.push(3u16);
        assert_eq!((l.len(), l.to_vec()), (1, vec![3]));
        l.push(1);
        l.push(2);
        assert_eq!(l.len(), 3);
        assert!(l.contains(&1) && !l.contains(&4));
        assert_eq!(l.iter().copied().collect::<Vec<_>>(), vec![3, 1, 2]);
        assert_eq!(l.into_iter().collect::<Vec<_>>(), vec![3, 1, 2]);
    }

    #[test]
    fn changed_reports_only_real_changes() {
        let mut m = model();
        assert!(m.set_host_level(0, None).unwrap().changed.is_empty());
        assert_eq!(
            m.set_host_level(0, Some(true)).unwrap().changed.to_vec(),
            vec![0]
        );
        assert!(m.set_host_level(0, Some(true)).unwrap().changed.is_empty());
    }
}
