//! The virtio-vsock packet header (virtio 1.2, section 5.10.6) and moving packets between
//! descriptor chains and owned buffers.

use std::io::{Read, Write};

use virtio_queue::DescriptorChain;

use crate::GuestMemory;

/// Size of `struct virtio_vsock_hdr` on the wire (packed, little endian).
pub const HDR_SIZE: usize = 44;
/// Largest payload accepted from the guest in one packet; the Linux driver never sends more
/// than 64 KiB (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE), so a bigger `len` is a malformed packet.
pub const MAX_PKT_DATA: usize = 64 * 1024;

/// `type` field values (virtio 1.2, 5.10.6; DGRAM from libkrunfw's datagram patches).
pub const TYPE_STREAM: u16 = 1;
pub const TYPE_DGRAM: u16 = 3;

/// `op` field values (virtio 1.2, 5.10.6).
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// OP_SHUTDOWN flags, from the sender's point of view.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// The host's vsock CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;

/// A decoded packet header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn u16_at(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet owned by the device: header plus payload (`hdr.len == data.len()` once built).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    pub hdr: Header,
    pub data: Vec<u8>,
}

/// Why a transmit chain could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("descriptor chain unusable")]
    Chain(#[source] virtio_queue::Error),
    #[error("header shorter than {HDR_SIZE} bytes")]
    ShortHeader,
    #[error("payload length {0} exceeds {MAX_PKT_DATA}")]
    TooLong(u32),
    #[error("payload shorter than the header's len {0}")]
    ShortPayload(u32),
    #[error("receive buffer smaller than a header")]
    SmallBuffer,
}

/// Reads one guest packet (header, then `len` payload bytes) from a transmit chain.
pub fn read_tx(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<Packet, PacketError> {
    let mut reader = chain.reader(mem).map_err(PacketError::Chain)?;
    let mut raw = [0u8; HDR_SIZE];
    reader
        .read_exact(&mut raw)
        .map_err(|_| PacketError::ShortHeader)?;
    let hdr = Header::from_bytes(&raw);
    if hdr.len as usize > MAX_PKT_DATA {
        return Err(PacketError::TooLong(hdr.len));
    }
    let mut data = vec![0u8; hdr.len as usize];
    reader
        .read_exact(&mut data)
        .map_err(|_| PacketError::ShortPayload(hdr.len))?;
    Ok(Packet { hdr, data })
}

/// How many payload bytes a receive chain can take after the header; None when it cannot
/// even hold a header.
pub fn rx_capacity(chain: &DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> Option<usize> {
    let writer = chain.clone().writer(mem).ok()?;
    writer.available_bytes().checked_sub(HDR_SIZE)
}

/// Writes `pkt` into a receive chain; returns the bytes written (the used length).
pub fn write_rx(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    pkt: &Packet,
) -> Result<u32, PacketError> {
    let mut writer = chain.writer(mem).map_err(PacketError::Chain)?;
    if writer.available_bytes() < HDR_SIZE + pkt.data.len() {
        return Err(PacketError::SmallBuffer);
    }
    let mut hdr = pkt.hdr;
    hdr.len = pkt.data.len() as u32;
    writer
        .write_all(&hdr.to_bytes())
        .and_then(|()| writer.write_all(&pkt.data))
        .map_err(|_| PacketError::SmallBuffer)?;
    Ok((HDR_SIZE + pkt.data.len()) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_keeps_every_field() {
        let hdr = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1025,
            dst_port: 620,
            len: 7,
            type_: TYPE_DGRAM,
            op: OP_RW,
            flags: 3,
            buf_alloc: 1 << 20,
            fwd_cnt: 99,
        };
        assert_eq!(Header::from_bytes(&hdr.to_bytes()), hdr);
        // Field offsets per virtio 1.2 5.10.6: op at 30, buf_alloc at 36.
        let b = hdr.to_bytes();
        assert_eq!(u16::from_le_bytes([b[30], b[31]]), OP_RW);
        assert_eq!(u32::from_le_bytes([b[36], b[37], b[38], b[39]]), 1 << 20);
    }
}
