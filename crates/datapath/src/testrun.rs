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
    loader::{self, MapPins},
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

impl Harness {
    /// Loads `object` with unpinned maps; every program is verified.
    pub fn load(object: &'static EmbeddedObject) -> Result<Self> {
        Ok(Self {
            ebpf: loader::load(object, MapPins::None)?,
            object: object.name,
        })
    }

    /// The loaded object, e.g. to wrap its maps.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Runs the tc program `program` `repeat` times on `packet` (an Ethernet
    /// frame). The kernel runs it on a skb of the loopback device.
    pub fn run_tc(&mut self, program: &str, packet: &[u8], repeat: u32) -> Result<RunResult> {
        let what = format!("program {program} of object {}", self.object);
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| DatapathError::invalid("program", format!("{what} does not exist")))?
            .try_into()
            .map_err(|e| DatapathError::op("type", what.clone(), &e))?;
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| DatapathError::op("BPF_PROG_TEST_RUN", what, &e))?;
        Ok(RunResult {
            verdict: result.return_value as i32,
            duration: result.duration,
        })
    }
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
fn checksum(bytes: &[u8]) -> u16 {
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
