//! A harness for `BPF_PROG_TEST_RUN`: load an embedded object with fresh,
//! unpinned maps and run its programs on crafted packets. For tests and
//! benches; touches no interface and no pin.

use std::time::Duration;

use aya::{
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
    Ebpf,
};

use crate::{
    error::{DatapathError, Result},
    loader::{self, LoadOptions, MapPins},
    objects::EmbeddedObject,
};

/// A loaded object whose programs can be run on test input.
pub struct Harness {
    ebpf: Ebpf,
    object: &'static str,
}

/// The outcome of one test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return value (tc verdict), as the signed value C returned.
    pub verdict: i32,
    /// Mean run time per repetition, as measured by the kernel.
    pub duration: Duration,
}

/// A test run with everything the kernel hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Verdict and duration.
    pub result: RunResult,
    /// The packet after the program (it may rewrite it).
    pub data_out: Vec<u8>,
    /// The `struct __sk_buff` after the program (its first [`SKB_CTX_LEN`] bytes).
    pub ctx_out: Vec<u8>,
}

/// Bytes of `struct __sk_buff` passed as the test context: up to the end of
/// `cb[5]`, which covers every field the kernel lets a test set before it
/// (`mark`, `priority`, `ingress_ifindex`, `ifindex`, `cb`).
pub const SKB_CTX_LEN: usize = 68;
/// Offset of `ifindex` in `struct __sk_buff`.
pub const SKB_IFINDEX_OFFSET: usize = 40;
/// Offset of `mark` in `struct __sk_buff`.
pub const SKB_MARK_OFFSET: usize = 8;

/// A `struct __sk_buff` test context whose packet arrives on interface
/// `ifindex` (which must exist in the caller's network namespace; 1 or 0
/// means the loopback device, the kernel's default).
pub fn skb_ctx(ifindex: u32) -> [u8; SKB_CTX_LEN] {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

impl Harness {
    /// Loads `object` with unpinned maps; every program is verified.
    pub fn load(object: &'static EmbeddedObject) -> Result<Self> {
        Self::load_with(object, &LoadOptions::default())
    }

    /// [`Self::load`] with options (map sizes).
    pub fn load_with(object: &'static EmbeddedObject, options: &LoadOptions) -> Result<Self> {
        Ok(Self {
            ebpf: loader::load_with(object, MapPins::None, options)?,
            object: object.name,
        })
    }

    /// The loaded object, e.g. to wrap its maps.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded object, mutably (to write maps, read a ring buffer).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Runs the tc program `program` `repeat` times on `packet` (an Ethernet
    /// frame). The kernel runs it on a skb of the loopback device.
    pub fn run_tc(&mut self, program: &str, packet: &[u8], repeat: u32) -> Result<RunResult> {
        Ok(self.run_tc_full(program, packet, None, repeat)?.result)
    }

    /// Runs `program` on `packet` as received on interface `ifindex`
    /// (`skb->ifindex`).
    pub fn run_tc_on(
        &mut self,
        program: &str,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<RunResult> {
        Ok(self
            .run_tc_full(program, packet, Some(&skb_ctx(ifindex)), repeat)?
            .result)
    }

    /// Runs `program` with an optional `struct __sk_buff` context (see
    /// [`skb_ctx`]) and returns the packet and context after the run.
    pub fn run_tc_full(
        &mut self,
        program: &str,
        packet: &[u8],
        ctx: Option<&[u8]>,
        repeat: u32,
    ) -> Result<RunOutput> {
        let what = format!("program {program} of object {}", self.object);
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| DatapathError::invalid("program", format!("{what} does not exist")))?
            .try_into()
            .map_err(|e| DatapathError::op("type", what.clone(), &e))?;
        let mut data_out = vec![0u8; packet.len() + 256];
        // The kernel writes back its whole `struct __sk_buff` (ENOSPC if it
        // does not fit), whose size grows with kernel versions.
        let mut ctx_out = vec![0u8; 1024];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut data_out),
                ctx_in: ctx,
                ctx_out: ctx.map(|_| ctx_out.as_mut_slice()),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| DatapathError::op("BPF_PROG_TEST_RUN", what, &e))?;
        data_out.truncate(packet.len());
        if ctx.is_none() {
            ctx_out.clear();
        } else {
            ctx_out.truncate(SKB_CTX_LEN);
        }
        Ok(RunOutput {
            result: RunResult {
                verdict: result.return_value as i32,
                duration: result.duration,
            },
            data_out,
            ctx_out,
        })
    }
}

/// TCP flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag PSH.
pub const TCP_PSH: u8 = 0x08;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An Ethernet frame (fixed test MACs) carrying `payload` of type `ethertype`.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet to serialise, with every header field settable so that
/// tests can build malformed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// IP protocol.
    pub proto: u8,
    /// Identification.
    pub id: u16,
    /// Flags and fragment offset (host order: `0x2000` = MF, low 13 bits = offset / 8).
    pub frag_off: u16,
    /// Time to live.
    pub ttl: u8,
    /// Version nibble (4 unless testing garbage).
    pub version: u8,
    /// IHL override (in 32-bit words); `None` = computed from `options`.
    pub ihl: Option<u8>,
    /// Total-length override; `None` = computed.
    pub tot_len: Option<u16>,
    /// IP options (padded to 4 bytes by the caller).
    pub options: Vec<u8>,
    /// Everything after the IP header.
    pub payload: Vec<u8>,
}

impl Ipv4Packet {
    /// A well-formed packet from `src` to `dst` carrying `payload` (an L4 message).
    pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8, payload: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            proto,
            id: 0x1234,
            frag_off: 0,
            ttl: 64,
            version: 4,
            ihl: None,
            tot_len: None,
            options: Vec::new(),
            payload,
        }
    }

    /// The IP header plus payload, header checksum filled in.
    pub fn bytes(&self) -> Vec<u8> {
        let header_len = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        let tot_len = self
            .tot_len
            .unwrap_or(u16::try_from(header_len + self.payload.len()).unwrap_or(u16::MAX));
        let mut ip = vec![0u8; 20];
        ip[0] = (self.version << 4) | (ihl & 0x0f);
        ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
        ip[4..6].copy_from_slice(&self.id.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag_off.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let csum = checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        ip.extend_from_slice(&self.payload);
        ip
    }

    /// The packet in an Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        ethernet(ETH_P_IP, &self.bytes())
    }
}

/// A TCP header (20 bytes, no options) with `flags`, followed by
/// `payload_len` bytes. The checksum is left zero: the datapath does not
/// verify it.
pub fn tcp_segment(sport: u16, dport: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence
    tcp[12] = 5 << 4; // data offset
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
    tcp.extend((0..payload_len).map(|i| i as u8));
    tcp
}

/// A UDP header followed by `payload_len` bytes (checksum 0 = none).
pub fn udp_datagram(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(
        &u16::try_from(8 + payload_len)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    udp.extend((0..payload_len).map(|i| i as u8));
    udp
}

/// An ICMP message: type, code, the 4 "rest of header" bytes, then `body`;
/// checksum filled in.
pub fn icmp_message(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let csum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    icmp
}

/// An Ethernet + IPv4 + TCP frame.
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Ipv4Packet::new(src, dst, 6, tcp_segment(sport, dport, flags, 0)).frame()
}

/// An Ethernet + IPv4 + UDP frame with `payload_len` bytes of payload.
pub fn udp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    Ipv4Packet::new(src, dst, 17, udp_datagram(sport, dport, payload_len)).frame()
}

/// An ICMP echo request (or reply) frame with echo `id` and `seq`.
pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[0..2].copy_from_slice(&id.to_be_bytes());
    rest[2..4].copy_from_slice(&seq.to_be_bytes());
    let icmp = icmp_message(if reply { 0 } else { 8 }, 0, rest, &[0xab; 32]);
    Ipv4Packet::new(src, dst, 1, icmp).frame()
}

/// An ICMP error frame from `src` to `dst` (type 3 dest-unreachable, 11
/// time-exceeded, 12 param-problem, 4 source-quench) quoting `quoted`'s IP
/// header and the first 8 bytes after it, as RFC 792 prescribes.
pub fn icmp_error_frame(
    src: [u8; 4],
    dst: [u8; 4],
    icmp_type: u8,
    code: u8,
    quoted: &Ipv4Packet,
) -> Vec<u8> {
    let bytes = quoted.bytes();
    let header_len = 20 + quoted.options.len();
    let keep = bytes.len().min(header_len + 8);
    let icmp = icmp_message(icmp_type, code, [0; 4], &bytes[..keep]);
    Ipv4Packet::new(src, dst, 1, icmp).frame()
}

/// Builds an Ethernet + IPv4 + ICMP echo request frame of `payload_len`
/// payload bytes from `src` to `dst` (checksums filled in).
pub fn icmp_echo_frame(src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 20 + 8 + payload_len);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // EtherType IPv4

    let total_len = u16::try_from(20 + 8 + payload_len).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45; // version 4, IHL 5
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 1; // ICMP
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    frame.extend_from_slice(&ip);

    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1]; // echo request, id 0x1234, seq 1
    icmp.extend((0..payload_len).map(|i| i as u8));
    let csum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    frame.extend_from_slice(&icmp);
    frame
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
