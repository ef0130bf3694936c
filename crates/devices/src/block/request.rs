//! A virtio-blk request (virtio 1.2, 5.2.6): parsed from a descriptor chain into a
//! [`Request`], then executed against a [`DiskBackend`] by [`execute`].
//!
//! The layout is a 16-byte device-readable header (type, reserved, sector), the data, and a
//! one-byte device-writable status at the very end. The device must not assume how the
//! driver split that into descriptors, so the chain is handled as one list of segments.

use std::io;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress};

use super::backend::DiskBackend;
use crate::GuestMemory;

/// Bytes per virtio-blk sector: the unit of `sector`, whatever the block size.
pub const SECTOR_SIZE: u64 = 512;
const HEADER_LEN: u64 = 16;
/// `VIRTIO_BLK_ID_BYTES`: the id GET_ID returns, NUL-padded, not terminated when full.
pub const ID_BYTES: usize = 20;
/// One `virtio_blk_discard_write_zeroes` range.
const RANGE_LEN: u64 = 16;
/// Ranges accepted per discard or write-zeroes request (the config space says so).
pub const MAX_RANGES: u32 = 1;
/// Sectors per discard or write-zeroes range (config space): 1 GiB.
pub const MAX_RANGE_SECTORS: u32 = 1 << 21;
const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// A guest buffer: one descriptor, or the part of one left after header and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

/// A request the chain described, ready for a worker thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    pub sector: u64,
    /// The data segments between header and status.
    pub data: Vec<Segment>,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a request. The chain is returned with nothing written when there is
/// no status byte to report through.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the chain has no device-writable status byte at its end")]
    NoStatus,
    #[error("the header is shorter than 16 device-readable bytes")]
    ShortHeader,
    #[error("cannot read the header from guest memory")]
    HeaderMemory,
    #[error("a {0} request has a data buffer the device may not {1}")]
    Direction(&'static str, &'static str),
}

impl Request {
    /// Parses `chain`. `Err` with a status address means: complete it with IOERR there.
    pub fn parse<M>(
        chain: DescriptorChain<M>,
        mem: &GuestMemory,
    ) -> Result<Request, (ParseError, Option<GuestAddress>)>
    where
        M: std::ops::Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let mut descs: Vec<(Segment, bool)> = chain
            .map(|d| {
                (
                    Segment {
                        addr: d.addr(),
                        len: d.len(),
                    },
                    d.is_write_only(),
                )
            })
            .collect();
        // The status byte: the last byte of the last descriptor, which must be writable.
        let status = match descs.last_mut() {
            Some((seg, true)) if seg.len > 0 => {
                seg.len -= 1;
                seg.addr
                    .checked_add(u64::from(seg.len))
                    .ok_or((ParseError::NoStatus, None))?
            }
            _ => return Err((ParseError::NoStatus, None)),
        };
        let fail = |e| Err((e, Some(status)));
        // The header: the first 16 bytes, device-readable.
        let mut header = [0u8; HEADER_LEN as usize];
        let mut got = 0usize;
        let mut first_data = descs.len();
        for (i, (seg, write_only)) in descs.iter_mut().enumerate() {
            if got == header.len() {
                first_data = i;
                break;
            }
            if *write_only {
                return fail(ParseError::ShortHeader);
            }
            let take = (header.len() - got).min(seg.len as usize);
            if mem
                .read_slice(&mut header[got..got + take], seg.addr)
                .is_err()
            {
                return fail(ParseError::HeaderMemory);
            }
            got += take;
            seg.addr = seg.addr.unchecked_add(take as u64);
            seg.len -= take as u32;
            if got == header.len() && seg.len > 0 {
                first_data = i;
                break;
            }
        }
        if got < header.len() {
            return fail(ParseError::ShortHeader);
        }
        let kind = match u32::from_le_bytes([header[0], header[1], header[2], header[3]]) {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            VIRTIO_BLK_T_DISCARD => RequestType::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => RequestType::WriteZeroes,
            other => RequestType::Unsupported(other),
        };
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let data: Vec<(Segment, bool)> = descs
            .into_iter()
            .skip(first_data)
            .filter(|(seg, _)| seg.len > 0)
            .collect();
        // The driver writes what the device reads, and the other way round.
        let (name, device_writes) = match kind {
            RequestType::In => ("read", true),
            RequestType::GetId => ("get-id", true),
            RequestType::Out => ("write", false),
            RequestType::Discard => ("discard", false),
            RequestType::WriteZeroes => ("write-zeroes", false),
            RequestType::Flush | RequestType::Unsupported(_) => ("other", false),
        };
        let checks_direction = !matches!(kind, RequestType::Flush | RequestType::Unsupported(_));
        if checks_direction && data.iter().any(|(_, w)| *w != device_writes) {
            let verb = if device_writes { "write" } else { "read" };
            return fail(ParseError::Direction(name, verb));
        }
        Ok(Request {
            kind,
            sector,
            data: data.into_iter().map(|(seg, _)| seg).collect(),
            status,
        })
    }

    /// Bytes of data the request carries.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// What the disk honours, as the device negotiated it.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub read_only: bool,
    /// Flush requests reach the backend (false: KRUN_SYNC_NONE, flushes are no-ops).
    pub flush: bool,
    /// Every write is flushed before it completes (KRUN_SYNC_FULL).
    pub write_through: bool,
}

/// Runs `req` on `disk`, writes its status byte and returns the used length (bytes the
/// device wrote into the chain, status included). `buf` is the thread's bounce buffer.
pub fn execute(
    req: &Request,
    disk: &dyn DiskBackend,
    mem: &GuestMemory,
    id: &[u8; ID_BYTES],
    policy: Policy,
    buf: &mut [u8],
) -> u32 {
    let (status, written) = match run(req, disk, mem, id, policy, buf) {
        Ok(written) => (VIRTIO_BLK_S_OK, written),
        Err(Failure::Unsupported) => (VIRTIO_BLK_S_UNSUPP, 0),
        Err(Failure::Io(e)) => {
            log::debug!(
                "block: {:?} at sector {} ({} bytes) failed: {e}",
                req.kind,
                req.sector,
                req.data_len()
            );
            (VIRTIO_BLK_S_IOERR, 0)
        }
    };
    if mem.write_obj(status as u8, req.status).is_err() {
        log::debug!(
            "block: the status byte at {:#x} is not guest memory",
            req.status.0
        );
    }
    written.saturating_add(1)
}

enum Failure {
    Unsupported,
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn invalid(what: &str) -> Failure {
    Failure::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        what.to_string(),
    ))
}

/// The byte range `sector` and `len` cover, if it lies within the disk.
fn range(sector: u64, len: u64, size: u64) -> Result<u64, Failure> {
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .ok_or_else(|| invalid("sector out of range"))?;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset),
        _ => Err(invalid("past the end of the disk")),
    }
}

fn run(
    req: &Request,
    disk: &dyn DiskBackend,
    mem: &GuestMemory,
    id: &[u8; ID_BYTES],
    policy: Policy,
    buf: &mut [u8],
) -> Result<u32, Failure> {
    match req.kind {
        RequestType::In => {
            let mut offset = range(req.sector, req.data_len(), disk.size())?;
            for seg in &req.data {
                copy_chunks(seg, buf, |chunk, at| {
                    disk.read_at(chunk, offset)?;
                    offset += chunk.len() as u64;
                    mem.write_slice(chunk, at).map_err(io::Error::other)
                })?;
            }
            Ok(u32::try_from(req.data_len()).unwrap_or(u32::MAX))
        }
        RequestType::Out => {
            if policy.read_only {
                return Err(invalid("write to a read-only disk"));
            }
            let mut offset = range(req.sector, req.data_len(), disk.size())?;
            for seg in &req.data {
                copy_chunks(seg, buf, |chunk, at| {
                    mem.read_slice(chunk, at).map_err(io::Error::other)?;
                    disk.write_at(chunk, offset)?;
                    offset += chunk.len() as u64;
                    Ok(())
                })?;
            }
            if policy.write_through {
                disk.flush()?;
            }
            Ok(0)
        }
        RequestType::Flush => {
            if policy.flush && !policy.read_only {
                disk.flush()?;
            }
            Ok(0)
        }
        RequestType::GetId => {
            let mut left: &[u8] = id;
            let mut written = 0u32;
            for seg in &req.data {
                let n = left.len().min(seg.len as usize);
                mem.write_slice(&left[..n], seg.addr)
                    .map_err(io::Error::other)?;
                left = &left[n..];
                written += n as u32;
            }
            Ok(written)
        }
        RequestType::Discard | RequestType::WriteZeroes => {
            if policy.read_only {
                return Err(invalid("discard or write-zeroes on a read-only disk"));
            }
            let discard = req.kind == RequestType::Discard;
            if discard && !disk.can_discard() {
                return Err(Failure::Unsupported);
            }
            let len = req.data_len();
            let count = len / RANGE_LEN;
            if count * RANGE_LEN != len || count > u64::from(MAX_RANGES) {
                return Err(invalid("malformed range list"));
            }
            let mut ranges = [0u8; (RANGE_LEN * MAX_RANGES as u64) as usize];
            read_all(&req.data, mem, &mut ranges[..len as usize])?;
            for r in ranges[..len as usize].chunks_exact(RANGE_LEN as usize) {
                let sector = u64::from_le_bytes(r[0..8].try_into().expect("8 bytes"));
                let sectors = u32::from_le_bytes(r[8..12].try_into().expect("4 bytes"));
                let flags = u32::from_le_bytes(r[12..16].try_into().expect("4 bytes"));
                if sectors > MAX_RANGE_SECTORS {
                    return Err(invalid("range longer than max sectors"));
                }
                let bytes = u64::from(sectors) * SECTOR_SIZE;
                let offset = range(sector, bytes, disk.size())?;
                if discard {
                    disk.discard(offset, bytes)?;
                } else {
                    disk.write_zeroes(offset, bytes, flags & WRITE_ZEROES_FLAG_UNMAP != 0)?;
                }
            }
            if policy.write_through {
                disk.flush()?;
            }
            Ok(0)
        }
        RequestType::Unsupported(_) => Err(Failure::Unsupported),
    }
}

/// Walks `seg` in pieces of at most `buf.len()` bytes: `f(piece, guest address)`.
fn copy_chunks(
    seg: &Segment,
    buf: &mut [u8],
    mut f: impl FnMut(&mut [u8], GuestAddress) -> io::Result<()>,
) -> io::Result<()> {
    let mut done = 0u64;
    let len = u64::from(seg.len);
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let at = seg
            .addr
            .checked_add(done)
            .ok_or_else(|| io::Error::other("guest address overflow"))?;
        f(&mut buf[..n], at)?;
        done += n as u64;
    }
    Ok(())
}

/// Reads the segments' bytes into `out` (exactly as long as they are).
fn read_all(segs: &[Segment], mem: &GuestMemory, out: &mut [u8]) -> io::Result<()> {
    let mut at = 0usize;
    for seg in segs {
        let n = seg.len as usize;
        mem.read_slice(&mut out[at..at + n], seg.addr)
            .map_err(io::Error::other)?;
        at += n;
    }
    Ok(())
}
