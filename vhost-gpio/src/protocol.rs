// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-gpio wire format (virtio spec 1.2+, "GPIO Device"; Linux
//! `include/uapi/linux/virtio_gpio.h`): the structs exchanged over the queues and
//! the config space, the spec constants under their spec names, and a parser that
//! turns a request into a plain [`Request`].
//!
//! Nothing in here touches guest memory or queues: the vhost-user glue reads the
//! bytes out of a descriptor chain and hands them to [`Request::parse`].

use vm_memory::{ByteValued, Le16, Le32};

/// Virtio device id of a GPIO device.
pub const VIRTIO_ID_GPIO: u32 = 41;

/// Feature bit: the device supports interrupts (and the eventq).
pub const VIRTIO_GPIO_F_IRQ: u32 = 0;

/// Index of the request queue.
pub const REQUEST_QUEUE: u16 = 0;
/// Index of the event (interrupt) queue.
pub const EVENT_QUEUE: u16 = 1;
/// Number of queues of the device.
pub const NUM_QUEUES: usize = 2;

/// Request types (`virtio_gpio_request.type`).
pub const VIRTIO_GPIO_MSG_GET_NAMES: u16 = 0x0001;
/// Read the direction of a line.
pub const VIRTIO_GPIO_MSG_GET_DIRECTION: u16 = 0x0002;
/// Set the direction of a line.
pub const VIRTIO_GPIO_MSG_SET_DIRECTION: u16 = 0x0003;
/// Read the value of a line.
pub const VIRTIO_GPIO_MSG_GET_VALUE: u16 = 0x0004;
/// Set the output value of a line.
pub const VIRTIO_GPIO_MSG_SET_VALUE: u16 = 0x0005;
/// Set the interrupt trigger type of a line.
pub const VIRTIO_GPIO_MSG_IRQ_TYPE: u16 = 0x0006;

/// Response status: success.
pub const VIRTIO_GPIO_STATUS_OK: u8 = 0x0;
/// Response status: failure.
pub const VIRTIO_GPIO_STATUS_ERR: u8 = 0x1;

/// Direction: the line is not in use.
pub const VIRTIO_GPIO_DIRECTION_NONE: u8 = 0x00;
/// Direction: output.
pub const VIRTIO_GPIO_DIRECTION_OUT: u8 = 0x01;
/// Direction: input.
pub const VIRTIO_GPIO_DIRECTION_IN: u8 = 0x02;

/// Interrupt trigger: disabled.
pub const VIRTIO_GPIO_IRQ_TYPE_NONE: u8 = 0x00;
/// Interrupt trigger: rising edge.
pub const VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING: u8 = 0x01;
/// Interrupt trigger: falling edge.
pub const VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING: u8 = 0x02;
/// Interrupt trigger: both edges.
pub const VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH: u8 = 0x03;
/// Interrupt trigger: high level.
pub const VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH: u8 = 0x04;
/// Interrupt trigger: low level.
pub const VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW: u8 = 0x08;

/// eventq status: the buffer comes back unused (interrupt disabled).
pub const VIRTIO_GPIO_IRQ_STATUS_INVALID: u8 = 0x0;
/// eventq status: an interrupt happened on the line.
pub const VIRTIO_GPIO_IRQ_STATUS_VALID: u8 = 0x1;

/// `struct virtio_gpio_config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpioConfig {
    /// Number of lines.
    pub ngpio: Le16,
    /// Padding.
    pub padding: [u8; 2],
    /// Size in bytes of the names block returned by GET_NAMES.
    pub gpio_names_size: Le32,
}

/// `struct virtio_gpio_request` (requestq, device-readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpioRequest {
    /// One of `VIRTIO_GPIO_MSG_*`.
    pub type_: Le16,
    /// Line number.
    pub gpio: Le16,
    /// Message argument.
    pub value: Le32,
}

/// `struct virtio_gpio_response` (requestq, device-writable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpioResponse {
    /// `VIRTIO_GPIO_STATUS_*`.
    pub status: u8,
    /// Result value, 0 when the message has none.
    pub value: u8,
}

/// `struct virtio_gpio_irq_request` (eventq, device-readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpioIrqRequest {
    /// Line number.
    pub gpio: Le16,
}

/// `struct virtio_gpio_irq_response` (eventq, device-writable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpioIrqResponse {
    /// `VIRTIO_GPIO_IRQ_STATUS_*`.
    pub status: u8,
}

// SAFETY: repr(C) structs made only of Le16/Le32/u8 fields with no implicit padding
// (the sizes are asserted below), so every byte pattern is a valid value.
unsafe impl ByteValued for VirtioGpioConfig {}
// SAFETY: as above: repr(C), integer fields only, no implicit padding.
unsafe impl ByteValued for VirtioGpioRequest {}
// SAFETY: as above: repr(C), two u8 fields, no padding.
unsafe impl ByteValued for VirtioGpioResponse {}
// SAFETY: as above: repr(C), one Le16 field, no padding.
unsafe impl ByteValued for VirtioGpioIrqRequest {}
// SAFETY: as above: repr(C), one u8 field.
unsafe impl ByteValued for VirtioGpioIrqResponse {}

const _: () = assert!(std::mem::size_of::<VirtioGpioConfig>() == 8);
const _: () = assert!(std::mem::size_of::<VirtioGpioRequest>() == 8);
const _: () = assert!(std::mem::size_of::<VirtioGpioResponse>() == 2);
const _: () = assert!(std::mem::size_of::<VirtioGpioIrqRequest>() == 2);
const _: () = assert!(std::mem::size_of::<VirtioGpioIrqResponse>() == 1);

/// Size of a request on the requestq.
pub const REQUEST_SIZE: usize = std::mem::size_of::<VirtioGpioRequest>();
/// Size of a plain response on the requestq.
pub const RESPONSE_SIZE: usize = std::mem::size_of::<VirtioGpioResponse>();
/// Size of an interrupt request on the eventq.
pub const IRQ_REQUEST_SIZE: usize = std::mem::size_of::<VirtioGpioIrqRequest>();
/// Size of an interrupt response on the eventq.
pub const IRQ_RESPONSE_SIZE: usize = std::mem::size_of::<VirtioGpioIrqResponse>();

/// Line direction as carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Not in use.
    None,
    /// Output, driven by the guest.
    Out,
    /// Input.
    In,
}

impl Direction {
    /// Wire value of the direction.
    pub fn to_wire(self) -> u8 {
        match self {
            Direction::None => VIRTIO_GPIO_DIRECTION_NONE,
            Direction::Out => VIRTIO_GPIO_DIRECTION_OUT,
            Direction::In => VIRTIO_GPIO_DIRECTION_IN,
        }
    }

    /// Parse a wire value; `None` for a value the spec does not define.
    pub fn from_wire(value: u32) -> Option<Self> {
        match value {
            0 => Some(Direction::None),
            1 => Some(Direction::Out),
            2 => Some(Direction::In),
            _ => None,
        }
    }

    /// Name used by the control socket.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::None => "none",
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// Interrupt trigger type as carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqType {
    /// Disabled.
    None,
    /// Rising edge.
    EdgeRising,
    /// Falling edge.
    EdgeFalling,
    /// Both edges.
    EdgeBoth,
    /// High level.
    LevelHigh,
    /// Low level.
    LevelLow,
}

impl IrqType {
    /// Parse a wire value; `None` for a value the spec does not define.
    pub fn from_wire(value: u32) -> Option<Self> {
        match u8::try_from(value).ok()? {
            VIRTIO_GPIO_IRQ_TYPE_NONE => Some(IrqType::None),
            VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING => Some(IrqType::EdgeRising),
            VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING => Some(IrqType::EdgeFalling),
            VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH => Some(IrqType::EdgeBoth),
            VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH => Some(IrqType::LevelHigh),
            VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW => Some(IrqType::LevelLow),
            _ => None,
        }
    }

    /// Wire value of the trigger type.
    pub fn to_wire(self) -> u8 {
        match self {
            IrqType::None => VIRTIO_GPIO_IRQ_TYPE_NONE,
            IrqType::EdgeRising => VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING,
            IrqType::EdgeFalling => VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING,
            IrqType::EdgeBoth => VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
            IrqType::LevelHigh => VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH,
            IrqType::LevelLow => VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW,
        }
    }

    /// Name used by the control socket.
    pub fn as_str(self) -> &'static str {
        match self {
            IrqType::None => "none",
            IrqType::EdgeRising => "rising",
            IrqType::EdgeFalling => "falling",
            IrqType::EdgeBoth => "both",
            IrqType::LevelHigh => "high",
            IrqType::LevelLow => "low",
        }
    }

    /// True for the level-triggered types.
    pub fn is_level(self) -> bool {
        matches!(self, IrqType::LevelHigh | IrqType::LevelLow)
    }

    /// True for the edge-triggered types.
    pub fn is_edge(self) -> bool {
        matches!(
            self,
            IrqType::EdgeRising | IrqType::EdgeFalling | IrqType::EdgeBoth
        )
    }
}

/// A requestq message, parsed. Values that need the device's knowledge (line
/// numbers in range, direction and trigger codes) are kept raw here and checked
/// by the executor, which answers them with an error status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `VIRTIO_GPIO_MSG_GET_NAMES`.
    GetNames,
    /// `VIRTIO_GPIO_MSG_GET_DIRECTION`.
    GetDirection {
        /// Line number.
        gpio: u16,
    },
    /// `VIRTIO_GPIO_MSG_SET_DIRECTION`.
    SetDirection {
        /// Line number.
        gpio: u16,
        /// Raw direction code.
        direction: u32,
    },
    /// `VIRTIO_GPIO_MSG_GET_VALUE`.
    GetValue {
        /// Line number.
        gpio: u16,
    },
    /// `VIRTIO_GPIO_MSG_SET_VALUE`.
    SetValue {
        /// Line number.
        gpio: u16,
        /// Raw value.
        value: u32,
    },
    /// `VIRTIO_GPIO_MSG_IRQ_TYPE`.
    SetIrqType {
        /// Line number.
        gpio: u16,
        /// Raw trigger type.
        irq_type: u32,
    },
    /// A request type the spec does not define.
    Unsupported(u16),
}

/// Why bytes could not be parsed as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The device-readable part of the chain is shorter than a request.
    #[error("request is {got} bytes, expected at least {expected}")]
    Short {
        /// Bytes available.
        got: usize,
        /// Bytes needed.
        expected: usize,
    },
}

impl Request {
    /// Parse the device-readable bytes of a requestq chain. Trailing bytes after
    /// the 8-byte request are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let head = bytes.get(..REQUEST_SIZE).ok_or(ParseError::Short {
            got: bytes.len(),
            expected: REQUEST_SIZE,
        })?;
        // Copy rather than `from_slice`, which refuses a slice that is not aligned for the
        // struct (Le32: 4 bytes) and would turn a good request into a "short" one.
        let mut raw = VirtioGpioRequest::default();
        raw.as_mut_slice().copy_from_slice(head);
        Ok(Self::from_raw(&raw))
    }

    /// Interpret a request struct.
    pub fn from_raw(raw: &VirtioGpioRequest) -> Self {
        let gpio = raw.gpio.to_native();
        let value = raw.value.to_native();
        match raw.type_.to_native() {
            VIRTIO_GPIO_MSG_GET_NAMES => Request::GetNames,
            VIRTIO_GPIO_MSG_GET_DIRECTION => Request::GetDirection { gpio },
            VIRTIO_GPIO_MSG_SET_DIRECTION => Request::SetDirection {
                gpio,
                direction: value,
            },
            VIRTIO_GPIO_MSG_GET_VALUE => Request::GetValue { gpio },
            VIRTIO_GPIO_MSG_SET_VALUE => Request::SetValue { gpio, value },
            VIRTIO_GPIO_MSG_IRQ_TYPE => Request::SetIrqType {
                gpio,
                irq_type: value,
            },
            other => Request::Unsupported(other),
        }
    }

    /// Size of the device-writable response the driver must provide for this
    /// request (`names_size` is the config's `gpio_names_size`).
    pub fn response_size(&self, names_size: usize) -> usize {
        match self {
            Request::GetNames => 1 + names_size,
            _ => RESPONSE_SIZE,
        }
    }

    /// Encode a request (used by tests and the test frontend users).
    pub fn encode(type_: u16, gpio: u16, value: u32) -> [u8; REQUEST_SIZE] {
        let raw = VirtioGpioRequest {
            type_: type_.into(),
            gpio: gpio.into(),
            value: value.into(),
        };
        let mut out = [0u8; REQUEST_SIZE];
        out.copy_from_slice(raw.as_slice());
        out
    }
}

/// A requestq answer, on the stack for every message but GET_NAMES (whose names block has
/// the device's size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A `virtio_gpio_response`.
    Fixed(VirtioGpioResponse),
    /// GET_NAMES: the status, then the names block (or an error padded to that length).
    Long(Vec<u8>),
}

impl Response {
    /// Success with this value byte.
    pub fn ok(value: u8) -> Response {
        Response::Fixed(VirtioGpioResponse {
            status: VIRTIO_GPIO_STATUS_OK,
            value,
        })
    }

    /// GET_NAMES's success: the status, then the names block.
    pub fn names(block: &[u8]) -> Response {
        let mut out = Vec::with_capacity(1 + block.len());
        out.push(VIRTIO_GPIO_STATUS_OK);
        out.extend_from_slice(block);
        Response::Long(out)
    }

    /// An error status, padded with zeros to the `len` bytes the request needs.
    pub fn error(len: usize) -> Response {
        if len == RESPONSE_SIZE {
            Response::Fixed(VirtioGpioResponse {
                status: VIRTIO_GPIO_STATUS_ERR,
                value: 0,
            })
        } else {
            let mut out = vec![0; len];
            if let Some(status) = out.first_mut() {
                *status = VIRTIO_GPIO_STATUS_ERR;
            }
            Response::Long(out)
        }
    }

    /// Turn the answer into a failure (the value bytes stay).
    pub fn set_error(&mut self) {
        match self {
            Response::Fixed(r) => r.status = VIRTIO_GPIO_STATUS_ERR,
            Response::Long(out) => {
                if let Some(status) = out.first_mut() {
                    *status = VIRTIO_GPIO_STATUS_ERR;
                }
            }
        }
    }

    /// The bytes on the wire.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Response::Fixed(r) => r.as_slice(),
            Response::Long(out) => out,
        }
    }
}

/// Parse the device-readable bytes of an eventq chain: the line number.
pub fn parse_irq_request(bytes: &[u8]) -> Result<u16, ParseError> {
    let head = bytes.get(..IRQ_REQUEST_SIZE).ok_or(ParseError::Short {
        got: bytes.len(),
        expected: IRQ_REQUEST_SIZE,
    })?;
    // Copied for the same reason as in `Request::parse`.
    let mut raw = VirtioGpioIrqRequest::default();
    raw.as_mut_slice().copy_from_slice(head);
    Ok(raw.gpio.to_native())
}

/// Encode the config space for `ngpio` lines and a names block of `names_size` bytes.
pub fn encode_config(ngpio: u16, names_size: u32) -> [u8; 8] {
    let cfg = VirtioGpioConfig {
        ngpio: ngpio.into(),
        padding: [0; 2],
        gpio_names_size: names_size.into(),
    };
    let mut out = [0u8; 8];
    out.copy_from_slice(cfg.as_slice());
    out
}

/// The bytes of config space at `offset..offset + size`, or `None` when the range
/// is not inside it (bounds-checked; never reads outside).
pub fn config_slice(config: &[u8], offset: u32, size: u32) -> Option<Vec<u8>> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(size).ok()?;
    let end = start.checked_add(len)?;
    config.get(start..end).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_message_type() {
        let cases = [
            (VIRTIO_GPIO_MSG_GET_NAMES, 0, 0, Request::GetNames),
            (
                VIRTIO_GPIO_MSG_GET_DIRECTION,
                3,
                0,
                Request::GetDirection { gpio: 3 },
            ),
            (
                VIRTIO_GPIO_MSG_SET_DIRECTION,
                2,
                1,
                Request::SetDirection {
                    gpio: 2,
                    direction: 1,
                },
            ),
            (
                VIRTIO_GPIO_MSG_GET_VALUE,
                7,
                0,
                Request::GetValue { gpio: 7 },
            ),
            (
                VIRTIO_GPIO_MSG_SET_VALUE,
                0x1234,
                1,
                Request::SetValue {
                    gpio: 0x1234,
                    value: 1,
                },
            ),
            (
                VIRTIO_GPIO_MSG_IRQ_TYPE,
                1,
                8,
                Request::SetIrqType {
                    gpio: 1,
                    irq_type: 8,
                },
            ),
            (0, 0, 0, Request::Unsupported(0)),
            (0x77, 1, 1, Request::Unsupported(0x77)),
        ];
        for (t, g, v, want) in cases {
            let bytes = Request::encode(t, g, v);
            assert_eq!(Request::parse(&bytes), Ok(want), "type {t}");
        }
    }

    #[test]
    fn wire_layout_is_little_endian() {
        let bytes = Request::encode(VIRTIO_GPIO_MSG_SET_VALUE, 0x0102, 0x0a0b0c0d);
        assert_eq!(bytes, [5, 0, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(encode_config(0x0203, 0x04050607), [3, 2, 0, 0, 7, 6, 5, 4]);
    }

    /// Regression (found by the gpio_request fuzz target): `from_slice` needs a slice aligned
    /// for the struct, so a request in a buffer at an odd address parsed as "short".
    #[test]
    fn requests_parse_at_any_alignment() {
        #[repr(C, align(8))]
        struct Aligned([u8; 16]);
        let mut buf = Aligned([0; 16]);
        let req = Request::encode(VIRTIO_GPIO_MSG_SET_VALUE, 0x0102, 1);
        for off in 0..8 {
            buf.0[off..off + REQUEST_SIZE].copy_from_slice(&req);
            assert_eq!(
                Request::parse(&buf.0[off..off + REQUEST_SIZE]),
                Ok(Request::SetValue {
                    gpio: 0x0102,
                    value: 1
                }),
                "offset {off}"
            );
            buf.0[off..off + 2].copy_from_slice(&0x0304u16.to_le_bytes());
            assert_eq!(
                parse_irq_request(&buf.0[off..off + 2]),
                Ok(0x0304),
                "offset {off}"
            );
        }
    }

    #[test]
    fn short_request_is_an_error() {
        for len in 0..REQUEST_SIZE {
            let bytes = vec![1u8; len];
            assert_eq!(
                Request::parse(&bytes),
                Err(ParseError::Short {
                    got: len,
                    expected: REQUEST_SIZE
                })
            );
        }
        assert_eq!(
            parse_irq_request(&[1]),
            Err(ParseError::Short {
                got: 1,
                expected: IRQ_REQUEST_SIZE
            })
        );
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut bytes = Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 4, 0).to_vec();
        bytes.extend_from_slice(&[0xff; 5]);
        assert_eq!(Request::parse(&bytes), Ok(Request::GetValue { gpio: 4 }));
        assert_eq!(parse_irq_request(&[9, 1, 0xff]), Ok(0x109));
    }

    #[test]
    fn response_sizes() {
        assert_eq!(Request::GetNames.response_size(10), 11);
        assert_eq!(Request::GetValue { gpio: 0 }.response_size(10), 2);
        assert_eq!(Request::Unsupported(9).response_size(10), 2);
    }

    #[test]
    fn config_slice_is_bounds_checked() {
        let cfg = encode_config(3, 12);
        assert_eq!(config_slice(&cfg, 0, 8), Some(cfg.to_vec()));
        assert_eq!(config_slice(&cfg, 4, 4), Some(vec![12, 0, 0, 0]));
        assert_eq!(config_slice(&cfg, 0, 2), Some(vec![3, 0]));
        assert_eq!(config_slice(&cfg, 8, 0), Some(vec![]));
        assert_eq!(config_slice(&cfg, 4, 5), None);
        assert_eq!(config_slice(&cfg, 9, 0), None);
        assert_eq!(config_slice(&cfg, u32::MAX, u32::MAX), None);
    }

    #[test]
    fn codes_round_trip() {
        for v in 0..=255u32 {
            if let Some(d) = Direction::from_wire(v) {
                assert_eq!(u32::from(d.to_wire()), v);
            }
            if let Some(t) = IrqType::from_wire(v) {
                assert_eq!(u32::from(t.to_wire()), v);
            }
        }
        assert_eq!(Direction::from_wire(3), None);
        assert_eq!(IrqType::from_wire(5), None);
        assert_eq!(IrqType::from_wire(0x104), None);
        assert!(IrqType::LevelLow.is_level() && !IrqType::LevelLow.is_edge());
        assert!(IrqType::EdgeBoth.is_edge() && !IrqType::None.is_edge());
    }
}
