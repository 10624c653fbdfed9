// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The descriptor-chain layer, one pass over a chain:
//! - [`ChainScan`] checks its shape (count, direction order), checks every buffer against
//!   guest memory, copies the first `N` device-readable bytes (a request header) to the
//!   stack and notes where the device-writable part is (vhost-gpio);
//! - [`walk`] hands each descriptor over, bounded in count and refusing a chain cut short
//!   (a loop, a next index outside the ring) (vhost-i2c-eeprom, whose requests carry data).
//!
//! Nothing is allocated per chain; the profile of vhost-gpio showed the walk dominating a
//! request, and a second walk doubling it.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap, Permissions};

use crate::vq::Chain;

/// Device-writable buffers kept per chain (a well-formed request of either device has
/// far fewer; past this count only an error status is written, which the first hold).
pub const WRITABLE_SLOTS: usize = 16;

/// Why a chain could not be served normally (logged; never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// More descriptors than any message of the device needs.
    #[error("chain has more than {0} descriptors")]
    TooManyDescriptors(usize),
    /// A device-readable descriptor after a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    WrongDirection,
    /// A descriptor points outside guest memory (or the chain is otherwise unusable).
    #[error("descriptor outside guest memory")]
    Memory(#[source] virtio_queue::Error),
    /// The request part is too short.
    #[error("request has {got} readable bytes, needs {need}")]
    ShortRequest {
        /// Bytes there.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// No device-writable buffer at all: the chain is dropped.
    #[error("no device-writable buffer")]
    NoResponseBuffer,
}

/// The device-writable buffers of a chain, in chain order, empty ones left out.
#[derive(Debug)]
pub struct WritableBufs {
    /// (guest address, length) of each buffer; the first `count` are set. A
    /// well-formed chain has at most [`WRITABLE_SLOTS`] buffers; a
    /// longer one only gets an error status (two bytes at most), which the
    /// first (non-empty) ones hold.
    bufs: [(GuestAddress, usize); WRITABLE_SLOTS],
    count: usize,
    /// Device-writable bytes in the whole chain.
    pub room: usize,
}

impl WritableBufs {
    fn new() -> Self {
        WritableBufs {
            bufs: [(GuestAddress(0), 0); WRITABLE_SLOTS],
            count: 0,
            room: 0,
        }
    }

    fn push(&mut self, addr: GuestAddress, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(slot) = self.bufs.get_mut(self.count) {
            *slot = (addr, len);
            self.count += 1;
        }
    }

    /// Guest address of the first device-writable byte.
    pub fn first_addr(&self) -> Option<GuestAddress> {
        self.bufs.get(..self.count)?.first().map(|b| b.0)
    }

    /// Write all of `bytes` at the start of the device-writable part.
    pub fn write(&self, mem: &GuestMemoryMmap, bytes: &[u8]) -> Result<(), GuestMemoryError> {
        let mut rest = bytes;
        for &(addr, len) in self.bufs.iter().take(self.count) {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(len.min(rest.len()));
            mem.write_slice(now, addr)?;
            rest = later;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(GuestMemoryError::PartialBuffer {
                expected: bytes.len(),
                completed: bytes.len() - rest.len(),
            })
        }
    }

    /// Write as much of an error status as there is room for; returns the used
    /// length (0 if nothing could be written).
    pub fn write_status(&self, mem: &GuestMemoryMmap, bytes: &[u8]) -> u32 {
        let n = self.room.min(bytes.len());
        match bytes.get(..n).map(|b| self.write(mem, b)) {
            Some(Ok(())) => u32::try_from(n).unwrap_or(0),
            _ => 0,
        }
    }
}

/// Check that a buffer lies in guest memory (what `Reader::new` and
/// `Writer::new` check of each one) and copy its first bytes into `into`;
/// returns how many were copied.
fn check_buffer(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    access: Permissions,
    into: &mut [u8],
) -> Result<usize, virtio_queue::Error> {
    let slices = mem
        .get_slices(addr, len, access)
        .map_err(virtio_queue::Error::GuestMemoryError)?;
    let mut copied = 0;
    for slice in slices {
        let slice = slice.map_err(virtio_queue::Error::GuestMemoryError)?;
        if let Some(rest) = into.get_mut(copied..) {
            copied += slice.copy_to(rest);
        }
    }
    Ok(copied)
}

/// A chain after the one walk of its descriptors: the request it carries (or
/// why it gets an error status instead) and where the answer goes.
#[derive(Debug)]
pub struct ChainScan<const N: usize> {
    /// The first `N` device-readable bytes, or the first problem in the order
    /// the answer depends on: shape (count, order), a device-readable buffer
    /// outside guest memory, too few readable bytes.
    pub request: Result<[u8; N], ChainError>,
    /// Where the answer goes.
    pub writable: WritableBufs,
}

impl<const N: usize> ChainScan<N> {
    /// Walk `chain` once. An error means there is nowhere to put an answer (a
    /// device-writable buffer outside guest memory, or none at all): the chain
    /// is returned unanswered.
    pub fn new(chain: &Chain<'_>, max: usize) -> Result<Self, ChainError> {
        let mem = chain.memory();
        let mut head = [0u8; N];
        let mut readable: usize = 0;
        let mut writable = WritableBufs::new();
        let mut shape = None;
        let mut read_error = None;
        let mut seen_write = false;
        // The whole chain is walked even past `max` descriptors: a
        // device-writable buffer outside guest memory anywhere in it means
        // there is no answer to give.
        for (n, desc) in chain.clone().enumerate() {
            let desc: Descriptor = desc;
            let write = desc.is_write_only();
            if shape.is_none() {
                if n >= max {
                    shape = Some(ChainError::TooManyDescriptors(max));
                } else if !write && seen_write {
                    shape = Some(ChainError::WrongDirection);
                }
            }
            let len = desc.len() as usize;
            if write {
                seen_write = true;
                writable.room = writable.room.checked_add(len).ok_or(ChainError::Memory(
                    virtio_queue::Error::DescriptorChainOverflow,
                ))?;
                check_buffer(mem, desc.addr(), len, Permissions::Write, &mut [])
                    .map_err(ChainError::Memory)?;
                writable.push(desc.addr(), len);
            } else if read_error.is_none() {
                let into = head.get_mut(readable.min(N)..).unwrap_or_default();
                match (
                    readable.checked_add(len),
                    check_buffer(mem, desc.addr(), len, Permissions::Read, into),
                ) {
                    (Some(total), Ok(_)) => readable = total,
                    (None, _) => read_error = Some(virtio_queue::Error::DescriptorChainOverflow),
                    (_, Err(e)) => read_error = Some(e),
                }
            }
        }
        if writable.room == 0 {
            return Err(ChainError::NoResponseBuffer);
        }
        let request = match (shape, read_error) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(ChainError::Memory(e)),
            (None, None) if readable < N => Err(ChainError::ShortRequest {
                got: readable,
                need: N,
            }),
            (None, None) => Ok(head),
        };
        Ok(ChainScan { request, writable })
    }
}

/// A chain whose descriptors cannot be walked as a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainShapeError {
    /// More descriptors than any request of the device has (a loop ends here too).
    #[error("chain has more than {0} descriptors")]
    TooLong(usize),
    /// The chain ended on a descriptor that names a next one: a loop cut short by the ring
    /// size, a next index outside the ring, or a table that could not be read.
    #[error("chain is cut short (a loop, or a next index outside the ring)")]
    Truncated,
    /// No descriptor at all.
    #[error("empty descriptor chain")]
    Empty,
}

/// Walks `chain` once, handing each descriptor to `each`, and checks its shape: at most `max`
/// descriptors, and a proper end (the last descriptor without NEXT). On an error some
/// descriptors may already have been handed over.
pub fn walk(
    chain: &Chain<'_>,
    max: usize,
    mut each: impl FnMut(&Descriptor),
) -> Result<usize, ChainShapeError> {
    let mut count = 0usize;
    let mut last_has_next = false;
    // Cloning a chain clones a memory guard (an Arc), not the memory.
    for desc in chain.clone() {
        count += 1;
        if count > max {
            return Err(ChainShapeError::TooLong(max));
        }
        last_has_next = desc.has_next();
        each(&desc);
    }
    if count == 0 {
        Err(ChainShapeError::Empty)
    } else if last_has_next {
        Err(ChainShapeError::Truncated)
    } else {
        Ok(count)
    }
}

/// A request chain framed as "header, data out | data in, status byte" (virtio-i2c's
/// framing, virtio 1.2 5.19.6.1), gathered from its descriptors: every descriptor checked
/// against guest memory, the header copied to the stack and the data out into a `Vec`
/// that the request then carries, the data-in segments and the status byte located. No
/// arrangement of descriptors is assumed (virtio 1.2, 2.7.4 "Message Framing").
#[derive(Debug)]
pub struct Framed<const H: usize> {
    /// The first `H` device-readable bytes.
    pub header: [u8; H],
    /// The device-readable bytes after the header.
    pub data_out: Vec<u8>,
    /// Device-writable bytes before the status byte.
    pub in_len: u64,
    /// Where those go, in order, empty descriptors left out: (guest address, length).
    pub data_in: Vec<(GuestAddress, u32)>,
    /// The status byte: the last device-writable byte.
    pub status: GuestAddress,
}

/// Why a chain cannot be framed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// No descriptor.
    #[error("empty descriptor chain")]
    Empty,
    /// A device-readable descriptor after a device-writable one.
    #[error("device-readable descriptor {index} after a device-writable one")]
    ReadableAfterWritable {
        /// Position in the chain.
        index: usize,
    },
    /// A descriptor outside guest memory.
    #[error("descriptor {index} ({len} bytes at {addr:#x}) is outside guest memory")]
    OutsideMemory {
        /// Position in the chain.
        index: usize,
        /// Guest physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Fewer device-readable bytes than the header.
    #[error("the header needs {need} device-readable bytes, chain has {got}")]
    ShortHeader {
        /// Bytes there.
        got: u64,
        /// Header size.
        need: usize,
    },
    /// No device-writable byte for the status.
    #[error("no device-writable byte for the status")]
    NoStatus,
    /// More data than the device accepts in one request.
    #[error("buffer of {got} bytes exceeds the limit of {max}")]
    TooLong {
        /// Bytes.
        got: u64,
        /// The limit.
        max: u64,
    },
    /// The header could not be read.
    #[error("reading the header failed")]
    ReadHeader(#[source] GuestMemoryError),
    /// The data out could not be read.
    #[error("reading the data failed")]
    ReadData(#[source] GuestMemoryError),
}

fn to_usize(v: u32) -> usize {
    // u32 always fits usize on the 32/64-bit targets this crate builds for.
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The last device-writable byte of `descs`, if it lies in guest memory: where a device
/// that frames its requests puts an error status even for a chain it cannot frame.
pub fn status_slot<M: GuestMemory>(mem: &M, descs: &[Descriptor]) -> Option<GuestAddress> {
    let last = descs
        .iter()
        .rev()
        .find(|d| d.is_write_only() && d.len() > 0)?;
    let addr = last.addr().0.checked_add(u64::from(last.len()) - 1)?;
    mem.check_range(GuestAddress(addr), 1, Permissions::Write)
        .then_some(GuestAddress(addr))
}

/// Frames the chain `descs` (see [`Framed`]); data out and data in may each be at most
/// `max_data` bytes.
pub fn frame<const H: usize, M: GuestMemory>(
    mem: &M,
    descs: &[Descriptor],
    max_data: u64,
) -> Result<Framed<H>, FrameError> {
    if descs.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut seen_writable = false;
    let mut readable_total: u64 = 0;
    let mut writable_total: u64 = 0;
    for (index, d) in descs.iter().enumerate() {
        if d.is_write_only() {
            seen_writable = true;
            writable_total += u64::from(d.len());
        } else {
            if seen_writable {
                return Err(FrameError::ReadableAfterWritable { index });
            }
            readable_total += u64::from(d.len());
        }
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if d.len() > 0 && !mem.check_range(d.addr(), to_usize(d.len()), access) {
            return Err(FrameError::OutsideMemory {
                index,
                addr: d.addr().0,
                len: d.len(),
            });
        }
    }
    let header_len = u64::try_from(H).unwrap_or(u64::MAX);
    if readable_total < header_len {
        return Err(FrameError::ShortHeader {
            got: readable_total,
            need: H,
        });
    }
    if writable_total < 1 {
        return Err(FrameError::NoStatus);
    }
    let out_len = readable_total - header_len;
    let in_len = writable_total - 1;
    for got in [out_len, in_len] {
        if got > max_data {
            return Err(FrameError::TooLong { got, max: max_data });
        }
    }
    // The header goes to the stack and the data out, if any, straight into the Vec the
    // request carries: without data out nothing is allocated here.
    let mut header = [0u8; H];
    let mut data_out = Vec::with_capacity(usize::try_from(out_len).unwrap_or(0));
    let mut start = 0usize;
    for d in descs.iter().filter(|d| !d.is_write_only()) {
        let failed = |e| {
            if start < H {
                FrameError::ReadHeader(e)
            } else {
                FrameError::ReadData(e)
            }
        };
        let len = to_usize(d.len());
        let in_hdr = H.saturating_sub(start).min(len);
        if let Some(dst) = header
            .get_mut(start..start + in_hdr)
            .filter(|b| !b.is_empty())
        {
            mem.read_slice(dst, d.addr()).map_err(failed)?;
        }
        if len > in_hdr {
            let at = data_out.len();
            data_out.resize(at + (len - in_hdr), 0);
            let addr = u64::try_from(in_hdr)
                .ok()
                .and_then(|n| d.addr().0.checked_add(n))
                .map(GuestAddress)
                .ok_or_else(|| failed(GuestMemoryError::GuestAddressOverflow))?;
            if let Some(dst) = data_out.get_mut(at..) {
                mem.read_slice(dst, addr).map_err(failed)?;
            }
        }
        start += len;
    }
    // Data in: every device-writable byte but the final status byte.
    let mut data_in = Vec::new();
    if in_len > 0 {
        let mut remaining = in_len;
        for d in descs.iter().filter(|d| d.is_write_only()) {
            if remaining == 0 {
                break;
            }
            let take = u64::from(d.len()).min(remaining);
            if take > 0 {
                data_in.push((
                    d.addr(),
                    u32::try_from(take).map_err(|_| FrameError::TooLong {
                        got: take,
                        max: max_data,
                    })?,
                ));
            }
            remaining -= take;
        }
    }
    // The status byte is the last writable byte (checked in range above).
    let status = descs
        .iter()
        .rev()
        .find(|d| d.is_write_only() && d.len() > 0)
        .and_then(|d| d.addr().0.checked_add(u64::from(d.len()) - 1))
        .map(GuestAddress)
        .ok_or(FrameError::NoStatus)?;
    Ok(Framed {
        header,
        data_out,
        in_len,
        data_in,
        status,
    })
}
