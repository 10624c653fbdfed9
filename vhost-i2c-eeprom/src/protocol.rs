// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-i2c wire format (virtio spec 1.2+, "I2C Adapter Device"; Linux
//! `include/uapi/linux/virtio_i2c.h`), the request parser and the
//! `VIRTIO_I2C_FLAGS_FAIL_NEXT` grouping.
//!
//! The device-readable part of a chain is the 8-byte `virtio_i2c_out_hdr`
//! followed by the write buffer, the device-writable part is the read buffer
//! followed by the 1-byte `virtio_i2c_in_hdr`. The chain layer
//! ([`common::chain::frame`], no particular arrangement of descriptors assumed:
//! virtio 1.2, 2.7.4 "Message Framing") checks every guest address and gathers
//! the bytes before anything is executed, so a malformed chain never reaches
//! the bus; this module reads bytes only ([`parse_header`], [`classify`]).

use std::mem::size_of;

use common::chain::{frame, FrameError};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{ByteValued, GuestAddress, GuestMemory, Le16, Le32};

/// virtio device id of an I2C adapter.
pub const VIRTIO_ID_I2C_ADAPTER: u32 = 34;
/// Feature bit: the device accepts requests without a buffer (mandatory for Linux).
pub const VIRTIO_I2C_F_ZERO_LENGTH_REQUEST: u32 = 0;
/// Flag: fail the next request of this group if this one fails (repeated START follows).
pub const VIRTIO_I2C_FLAGS_FAIL_NEXT: u32 = 1 << 0;
/// Flag: read request.
pub const VIRTIO_I2C_FLAGS_M_RD: u32 = 1 << 1;
/// Status: the request completed.
pub const VIRTIO_I2C_MSG_OK: u8 = 0;
/// Status: the request failed (NACK, busy, malformed).
pub const VIRTIO_I2C_MSG_ERR: u8 = 1;

/// Longest buffer accepted in one request: `struct i2c_msg.len` is a `__u16`,
/// so no Linux transfer is longer.
pub const MAX_BUFFER_LEN: u32 = u16::MAX as u32;

/// `struct virtio_i2c_out_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioI2cOutHdr {
    /// 7-bit target address shifted left by one.
    pub addr: Le16,
    /// Reserved.
    pub padding: Le16,
    /// `VIRTIO_I2C_FLAGS_*`.
    pub flags: Le32,
}

// SAFETY: repr(C) struct of two Le16 and one Le32 (plain integers), no padding
// (size asserted below), every bit pattern is a valid value.
unsafe impl ByteValued for VirtioI2cOutHdr {}

/// `struct virtio_i2c_in_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioI2cInHdr {
    /// `VIRTIO_I2C_MSG_OK` or `VIRTIO_I2C_MSG_ERR`.
    pub status: u8,
}

// SAFETY: repr(C) struct of one u8, no padding, every bit pattern is valid.
unsafe impl ByteValued for VirtioI2cInHdr {}

const _: () = assert!(size_of::<VirtioI2cOutHdr>() == 8);
const _: () = assert!(size_of::<VirtioI2cInHdr>() == 1);

/// Size of the out header in bytes.
pub const OUT_HDR_LEN: u32 = 8;
/// Size of the in header in bytes.
pub const IN_HDR_LEN: u32 = 1;

/// Why a chain was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The chain does not frame a request (see [`common::chain::frame`]).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The chain's descriptors do not make a request (too many, or a loop).
    #[error(transparent)]
    Shape(common::chain::ChainShapeError),
    /// A read request with a device-readable buffer.
    #[error("read request carries {0} device-readable buffer bytes")]
    ReadWithOutBuffer(u64),
    /// A write request with a device-writable buffer.
    #[error("write request carries {0} device-writable buffer bytes")]
    WriteWithInBuffer(u64),
    /// Buffer larger than `MAX_BUFFER_LEN`.
    #[error("buffer of {0} bytes exceeds the limit of {MAX_BUFFER_LEN}")]
    TooLong(u64),
    /// Flag bits no negotiated feature defines (reserved: a driver must leave them 0).
    #[error("reserved flag bits set: {0:#x}")]
    ReservedFlags(u32),
}

/// A guest memory segment the device writes read data into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// What a request asks of the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Zero-length request: address only (SMBus quick command).
    Probe {
        /// The R/W bit of the address byte.
        read: bool,
    },
    /// Write these bytes.
    Write(Vec<u8>),
    /// Read into these device-writable segments (in order).
    Read {
        /// Segments to fill.
        segments: Vec<Segment>,
        /// Total length.
        len: u32,
    },
}

/// A parsed, fully validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// 7-bit target address.
    pub addr: u16,
    /// `VIRTIO_I2C_FLAGS_FAIL_NEXT`: a repeated START follows.
    pub fail_next: bool,
    /// The transfer.
    pub transfer: Transfer,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

impl Request {
    /// Used length when the request succeeded: bytes the device wrote.
    pub fn used_len_ok(&self) -> u32 {
        match &self.transfer {
            Transfer::Read { len, .. } => len + IN_HDR_LEN,
            _ => IN_HDR_LEN,
        }
    }
}

/// A rejected chain: the error and, when the chain has a usable status byte,
/// where to write `VIRTIO_I2C_MSG_ERR`.
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: ParseError,
    /// The last device-writable byte, if inside guest memory.
    pub status: Option<GuestAddress>,
}

/// The last device-writable byte of a chain, if it lies in guest memory: where a
/// malformed request's ERR goes.
pub use common::chain::status_slot;

/// Parse one descriptor chain into a request. The chain layer
/// ([`common::chain::frame`]) checks every descriptor and gathers the bytes;
/// [`parse_header`] and [`classify`] read only bytes.
pub fn parse<M: GuestMemory>(mem: &M, descs: &[Descriptor]) -> Result<Request, Rejected> {
    parse_inner(mem, descs).map_err(|error| Rejected {
        error,
        status: status_slot(mem, descs),
    })
}

fn parse_inner<M: GuestMemory>(mem: &M, descs: &[Descriptor]) -> Result<Request, ParseError> {
    const HDR: usize = size_of::<VirtioI2cOutHdr>();
    let framed = frame::<HDR, M>(mem, descs, u64::from(MAX_BUFFER_LEN))?;
    let (addr, flags) = parse_header(&framed.header)?;
    let transfer = classify(
        flags & VIRTIO_I2C_FLAGS_M_RD != 0,
        framed.data_out,
        framed.in_len,
        framed.data_in,
    )?;
    Ok(Request {
        addr,
        fail_next: flags & VIRTIO_I2C_FLAGS_FAIL_NEXT != 0,
        transfer,
        status: framed.status,
    })
}

/// The 7-bit target address and the flags of a `virtio_i2c_out_hdr`; reserved flags
/// are refused.
pub fn parse_header(bytes: &[u8; OUT_HDR_LEN as usize]) -> Result<(u16, u32), ParseError> {
    let mut hdr = VirtioI2cOutHdr::default();
    hdr.as_mut_slice().copy_from_slice(bytes);
    let flags = hdr.flags.to_native();
    let reserved = flags & !(VIRTIO_I2C_FLAGS_FAIL_NEXT | VIRTIO_I2C_FLAGS_M_RD);
    if reserved != 0 {
        return Err(ParseError::ReservedFlags(reserved));
    }
    Ok((hdr.addr.to_native() >> 1, flags))
}

/// What a request asks of the bus, from its direction, its data out and the length (and
/// place) of its data in.
pub fn classify(
    read: bool,
    data_out: Vec<u8>,
    in_len: u64,
    data_in: Vec<(GuestAddress, u32)>,
) -> Result<Transfer, ParseError> {
    let out_len = u64::try_from(data_out.len()).unwrap_or(u64::MAX);
    Ok(match (read, out_len, in_len) {
        (true, 0, 0) | (false, 0, 0) => Transfer::Probe { read },
        (true, 0, n) => Transfer::Read {
            segments: data_in
                .into_iter()
                .map(|(addr, len)| Segment { addr, len })
                .collect(),
            len: u32::try_from(n).map_err(|_| ParseError::TooLong(n))?,
        },
        (true, n, _) => return Err(ParseError::ReadWithOutBuffer(n)),
        (false, _, n) if n > 0 => return Err(ParseError::WriteWithInBuffer(n)),
        (false, _, _) => Transfer::Write(data_out),
    })
}

/// What to do with one request of a FAIL_NEXT group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Put the request on the bus (false: an earlier request of the group failed).
    pub execute: bool,
    /// The request ends its group: the bus master sends STOP after it.
    pub ends_group: bool,
}

/// Tracks `VIRTIO_I2C_FLAGS_FAIL_NEXT` groups across requests.
///
/// A group is the run of requests up to and including the first one without
/// FAIL_NEXT: one START .. repeated START .. STOP transaction. The first request
/// that fails gets ERR (the master sends STOP on the NACK), and every later
/// request of the same group gets ERR without touching the bus.
///
/// Partial groups: the device never waits for a group's tail. Each request is
/// completed as soon as it has run, and the bus transaction simply stays open
/// (no STOP) after a request with FAIL_NEXT, so a tail queued after the kick
/// (Linux `virtio_i2c_xfer` updates the avail index per message, and kicks a
/// partial group when the ring is full) continues it with a repeated START.
/// If the tail never comes, the next request continues the open transaction,
/// as on a real bus whose master never sent STOP: write data still in a
/// device's page buffer is abandoned, exactly as a repeated START abandons it.
/// A failure does not outlive the chains that were available when it
/// happened: when the ring runs dry the failed state is dropped (the bus is
/// already idle after the STOP that followed the NACK), so a tail arriving
/// later, or the next transfer after a truncated one, starts afresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    failed: bool,
}

impl Groups {
    /// Plan the next request.
    pub fn plan(&self, fail_next: bool) -> Plan {
        Plan {
            execute: !self.failed,
            ends_group: !fail_next,
        }
    }

    /// Record the outcome of a planned request.
    pub fn record(&mut self, plan: Plan, ok: bool) {
        if !ok {
            self.failed = true;
        }
        if plan.ends_group {
            self.failed = false;
        }
    }

    /// No further chain is available: drop a failed state.
    pub fn drained(&mut self) {
        self.failed = false;
    }

    /// True while the current group has failed.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use vm_memory::Bytes;
    use vm_memory::GuestMemoryMmap;

    const W: u16 = 0;
    #[allow(clippy::cast_possible_truncation)]
    const WR: u16 = VRING_DESC_F_WRITE as u16;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn hdr(mem: &GuestMemoryMmap, at: u64, addr7: u16, flags: u32) -> Descriptor {
        let h = VirtioI2cOutHdr {
            addr: Le16::from(addr7 << 1),
            padding: Le16::from(0),
            flags: Le32::from(flags),
        };
        mem.write_obj(h, GuestAddress(at)).unwrap();
        Descriptor::new(at, 8, W, 0)
    }

    #[test]
    fn write_request() {
        let m = mem();
        mem_write(&m, 0x100, &[0x00, 0x10, 0xab]);
        let d = [
            hdr(&m, 0, 0x50, 0),
            Descriptor::new(0x100, 3, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        let r = parse(&m, &d).unwrap();
        assert_eq!(r.addr, 0x50);
        assert!(!r.fail_next);
        assert_eq!(r.transfer, Transfer::Write(vec![0, 0x10, 0xab]));
        assert_eq!(r.status, GuestAddress(0x200));
        assert_eq!(r.used_len_ok(), 1);
    }

    fn mem_write(m: &GuestMemoryMmap, at: u64, data: &[u8]) {
        m.write_slice(data, GuestAddress(at)).unwrap();
    }

    #[test]
    fn read_request_with_fail_next_and_split_buffers() {
        let m = mem();
        let d = [
            hdr(
                &m,
                0,
                0x51,
                VIRTIO_I2C_FLAGS_M_RD | VIRTIO_I2C_FLAGS_FAIL_NEXT,
            ),
            Descriptor::new(0x100, 4, WR, 0),
            Descriptor::new(0x300, 3, WR, 0),
        ];
        let r = parse(&m, &d).unwrap();
        assert!(r.fail_next);
        assert_eq!(
            r.transfer,
            Transfer::Read {
                segments: vec![
                    Segment {
                        addr: GuestAddress(0x100),
                        len: 4
                    },
                    Segment {
                        addr: GuestAddress(0x300),
                        len: 2
                    }
                ],
                len: 6
            }
        );
        assert_eq!(r.status, GuestAddress(0x302));
        assert_eq!(r.used_len_ok(), 7);
    }

    #[test]
    fn header_split_over_descriptors() {
        let m = mem();
        let h = hdr(&m, 0x40, 0x50, 0);
        let _ = h;
        mem_write(&m, 0x48, &[0x12]);
        let d = [
            Descriptor::new(0x40, 3, W, 0),
            Descriptor::new(0x43, 6, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        let r = parse(&m, &d).unwrap();
        assert_eq!(r.transfer, Transfer::Write(vec![0x12]));
    }

    #[test]
    fn write_buffer_spread_over_descriptors() {
        let m = mem();
        let _ = hdr(&m, 0x40, 0x50, 0);
        mem_write(&m, 0x48, &[0x12]);
        mem_write(&m, 0x100, &[0x34, 0x56]);
        let d = [
            Descriptor::new(0x40, 2, W, 0),
            Descriptor::new(0x9000_0000, 0, W, 0),
            Descriptor::new(0x42, 7, W, 0),
            Descriptor::new(0x100, 2, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        let r = parse(&m, &d).unwrap();
        assert_eq!(r.addr, 0x50);
        assert_eq!(r.transfer, Transfer::Write(vec![0x12, 0x34, 0x56]));
    }

    #[test]
    fn zero_length_probes() {
        let m = mem();
        let d = [hdr(&m, 0, 0x50, 0), Descriptor::new(0x200, 1, WR, 0)];
        assert_eq!(
            parse(&m, &d).unwrap().transfer,
            Transfer::Probe { read: false }
        );
        let d = [
            hdr(&m, 0, 0x50, VIRTIO_I2C_FLAGS_M_RD),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        assert_eq!(
            parse(&m, &d).unwrap().transfer,
            Transfer::Probe { read: true }
        );
    }

    #[test]
    fn malformed_chains() {
        let m = mem();
        // Empty.
        assert!(matches!(
            parse(&m, &[]).unwrap_err().error,
            ParseError::Frame(FrameError::Empty)
        ));
        // Short header, status available.
        let d = [
            Descriptor::new(0, 4, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        let e = parse(&m, &d).unwrap_err();
        assert!(matches!(
            e.error,
            ParseError::Frame(FrameError::ShortHeader { got: 4, .. })
        ));
        assert_eq!(e.status, Some(GuestAddress(0x200)));
        // No status byte.
        let d = [hdr(&m, 0, 0x50, 0)];
        let e = parse(&m, &d).unwrap_err();
        assert!(matches!(e.error, ParseError::Frame(FrameError::NoStatus)));
        assert_eq!(e.status, None);
        // Readable after writable.
        let d = [Descriptor::new(0x200, 1, WR, 0), hdr(&m, 0, 0x50, 0)];
        assert!(matches!(
            parse(&m, &d).unwrap_err().error,
            ParseError::Frame(FrameError::ReadableAfterWritable { index: 1 })
        ));
        // Read with a readable buffer.
        let d = [
            hdr(&m, 0, 0x50, VIRTIO_I2C_FLAGS_M_RD),
            Descriptor::new(0x100, 2, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        assert!(matches!(
            parse(&m, &d).unwrap_err().error,
            ParseError::ReadWithOutBuffer(2)
        ));
        // Write with a writable buffer.
        let d = [
            hdr(&m, 0, 0x50, 0),
            Descriptor::new(0x100, 2, WR, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        assert!(matches!(
            parse(&m, &d).unwrap_err().error,
            ParseError::WriteWithInBuffer(2)
        ));
        // Outside guest memory (buffer), status still usable.
        let d = [
            hdr(&m, 0, 0x50, VIRTIO_I2C_FLAGS_M_RD),
            Descriptor::new(0x20_0000, 16, WR, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        let e = parse(&m, &d).unwrap_err();
        assert!(matches!(
            e.error,
            ParseError::Frame(FrameError::OutsideMemory { index: 1, .. })
        ));
        assert_eq!(e.status, Some(GuestAddress(0x200)));
        // Status outside guest memory: nowhere to report.
        let d = [hdr(&m, 0, 0x50, 0), Descriptor::new(0x20_0000, 1, WR, 0)];
        let e = parse(&m, &d).unwrap_err();
        assert!(matches!(
            e.error,
            ParseError::Frame(FrameError::OutsideMemory { index: 1, .. })
        ));
        assert_eq!(e.status, None);
        // Straddling the end of memory.
        let d = [
            hdr(&m, 0, 0x50, 0),
            Descriptor::new(0xfff0, 0x20, W, 0),
            Descriptor::new(0x200, 1, WR, 0),
        ];
        assert!(matches!(
            parse(&m, &d).unwrap_err().error,
            ParseError::Frame(FrameError::OutsideMemory { index: 1, .. })
        ));
        // Too long.
        let big = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x30000)]).unwrap();
        let d = [
            hdr(&big, 0, 0x50, VIRTIO_I2C_FLAGS_M_RD),
            Descriptor::new(0x100, 0x10000, WR, 0),
            Descriptor::new(0x20000, 1, WR, 0),
        ];
        assert!(matches!(
            parse(&big, &d).unwrap_err().error,
            ParseError::Frame(FrameError::TooLong { got: 0x10000, .. })
        ));
        // Reserved flags.
        let d = [hdr(&m, 0, 0x50, 1 << 5), Descriptor::new(0x200, 1, WR, 0)];
        assert!(matches!(
            parse(&m, &d).unwrap_err().error,
            ParseError::ReservedFlags(0x20)
        ));
    }

    #[test]
    fn header_and_transfer_from_bytes_only() {
        let mut h = [0u8; 8];
        h[..2].copy_from_slice(&(0x50u16 << 1).to_le_bytes());
        h[4..].copy_from_slice(&(VIRTIO_I2C_FLAGS_M_RD | VIRTIO_I2C_FLAGS_FAIL_NEXT).to_le_bytes());
        assert_eq!(
            parse_header(&h).unwrap(),
            (0x50, VIRTIO_I2C_FLAGS_M_RD | VIRTIO_I2C_FLAGS_FAIL_NEXT)
        );
        h[4] = 0x80;
        assert!(matches!(
            parse_header(&h),
            Err(ParseError::ReservedFlags(0x80))
        ));
        let seg = vec![(GuestAddress(0x100), 4)];
        assert!(matches!(
            classify(true, Vec::new(), 4, seg.clone()),
            Ok(Transfer::Read { len: 4, .. })
        ));
        assert!(matches!(
            classify(true, vec![1], 4, seg.clone()),
            Err(ParseError::ReadWithOutBuffer(1))
        ));
        assert!(matches!(
            classify(false, vec![1], 4, seg),
            Err(ParseError::WriteWithInBuffer(4))
        ));
        assert_eq!(
            classify(false, vec![1, 2], 0, Vec::new()).unwrap(),
            Transfer::Write(vec![1, 2])
        );
        assert_eq!(
            classify(false, Vec::new(), 0, Vec::new()).unwrap(),
            Transfer::Probe { read: false }
        );
    }

    #[test]
    fn groups_fail_rest_of_group_only() {
        let mut g = Groups::default();
        // Group A: three requests, the second fails.
        let p = g.plan(true);
        assert!(p.execute && !p.ends_group);
        g.record(p, true);
        let p = g.plan(true);
        assert!(p.execute);
        g.record(p, false);
        let p = g.plan(false);
        assert!(!p.execute && p.ends_group);
        g.record(p, false);
        // Group B is unaffected.
        let p = g.plan(false);
        assert!(p.execute && p.ends_group);
        g.record(p, true);
        assert!(!g.failed());
    }

    #[test]
    fn groups_failure_dropped_when_ring_drains() {
        let mut g = Groups::default();
        let p = g.plan(true);
        g.record(p, false);
        assert!(g.failed());
        // A tail in the same batch fails.
        assert!(!g.plan(true).execute);
        g.drained();
        // The (late) tail or the next transfer runs.
        assert!(g.plan(false).execute);
    }
}
