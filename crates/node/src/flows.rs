//! Flow events for JavaScript: a pull-based reader of the pinned ring
//! buffer that delivers decoded flows in batches.
//!
//! A batch crosses as one `Buffer` of fixed 64-byte records in the compact
//! decoded form of `membrane_datapath::flows::CompactFlow` (host order,
//! Hubble numbering, wall-clock nanoseconds); `ts/datapath/flows.ts` expands
//! records into Hubble-shaped objects. Decoding (validation, byte order,
//! clock conversion, enum mapping) is done here, in Rust.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use membrane_datapath::{
    bpffs::PinDir,
    flows::{self, CompactFlow, Decoder, FlowStats},
    loader::{self, MapPins},
    objects, DatapathError,
};
use napi::{bindgen_prelude::*, Env, Task};
use napi_derive::napi;

use crate::{bpffs_root_or_default, errors::to_js_error, Failure};

/// A batch of decoded flows.
#[napi(object)]
pub struct FlowBatch {
    /// Flows in `records`.
    pub count: u32,
    /// `count` records of `recordSize` bytes (layout: `CompactFlow`).
    pub records: Buffer,
    /// Bytes per record (64).
    pub record_size: u32,
    /// Records skipped as malformed while reading this batch.
    pub malformed: u32,
    /// Time spent reading and decoding on the Rust side, nanoseconds
    /// (includes waiting for the first record when the buffer was empty).
    pub decode_ns: f64,
}

/// Counters of a reader.
#[napi(object)]
pub struct FlowReaderStats {
    /// Records decoded since the reader was opened.
    pub decoded: f64,
    /// Records skipped as malformed.
    pub malformed: f64,
    /// The last malformation, if any.
    pub last_malformed: Option<String>,
}

fn stats_info(s: FlowStats) -> FlowReaderStats {
    FlowReaderStats {
        decoded: s.decoded as f64,
        malformed: s.malformed as f64,
        last_malformed: s.last_malformed.map(|m| m.to_string()),
    }
}

struct Shared {
    reader: Mutex<Option<flows::FlowReader>>,
    closed: AtomicBool,
    stats: Mutex<FlowStats>,
}

/// Reads the flow events of the datapath pinned under a pin directory.
/// `read()` calls are served one at a time; each waits at most its timeout
/// on a thread-pool thread.
#[napi]
pub struct FlowReader {
    shared: Arc<Shared>,
}

#[napi]
impl FlowReader {
    /// Opens the `mbr_events` ring buffer pinned under `pinDir`. Throws with
    /// code `ENOENT` when nothing is pinned there.
    #[napi(factory)]
    pub fn open(env: Env, pin_dir: String, bpffs_root: Option<String>) -> Result<Self> {
        let open = || -> membrane_datapath::Result<flows::FlowReader> {
            let pins = PinDir::new(&pin_dir, bpffs_root_or_default(bpffs_root))?;
            flows::FlowReader::open(&pins)
        };
        let reader = open().map_err(|e| to_js_error(&env, &e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                reader: Mutex::new(Some(reader)),
                closed: AtomicBool::new(false),
                stats: Mutex::new(FlowStats::default()),
            }),
        })
    }

    /// Decoded flows: up to `max`, waiting up to `timeoutMs` for the first
    /// when none is buffered (an empty batch after the timeout).
    #[napi(ts_return_type = "Promise<FlowBatch>")]
    pub fn read(&self, max: u32, timeout_ms: u32) -> AsyncTask<ReadFlowsTask> {
        AsyncTask::new(ReadFlowsTask {
            shared: self.shared.clone(),
            max: max as usize,
            timeout: Duration::from_millis(u64::from(timeout_ms)),
            failure: Failure::default(),
        })
    }

    /// Counters so far.
    #[napi]
    pub fn stats(&self) -> FlowReaderStats {
        stats_info(*self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Releases the ring buffer (after a read in progress finishes). Reads
    /// after close reject with `EBADF`.
    #[napi]
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Ok(mut reader) = self.shared.reader.try_lock() {
            reader.take();
        }
    }
}

/// Background job of `FlowReader.read`.
pub struct ReadFlowsTask {
    shared: Arc<Shared>,
    max: usize,
    timeout: Duration,
    failure: Failure,
}

#[napi]
impl Task for ReadFlowsTask {
    type Output = (Vec<u8>, u32, u32, f64);
    type JsValue = FlowBatch;

    fn compute(&mut self) -> Result<Self::Output> {
        let started = std::time::Instant::now();
        let mut guard = self.shared.reader.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.closed.load(Ordering::SeqCst) {
            guard.take();
        }
        let Some(reader) = guard.as_mut() else {
            return Err(self.failure.record(DatapathError::Op {
                op: "read flows",
                object: "flow reader".to_owned(),
                errno: Some(libc_ebadf()),
                detail: "the reader is closed".to_owned(),
            }));
        };
        let before = reader.stats().malformed;
        let mut out = Vec::with_capacity(self.max.min(65_536) * CompactFlow::SIZE);
        let n = reader
            .read_compact(self.max, self.timeout, &mut out)
            .map_err(|e| self.failure.record(e))?;
        let stats = reader.stats();
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        if self.shared.closed.load(Ordering::SeqCst) {
            guard.take();
        }
        Ok((
            out,
            n as u32,
            (stats.malformed - before) as u32,
            started.elapsed().as_nanos() as f64,
        ))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(flow_batch(output))
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// The JS face of decoded records: (records, count, malformed, decode_ns).
fn flow_batch((records, count, malformed, decode_ns): (Vec<u8>, u32, u32, f64)) -> FlowBatch {
    FlowBatch {
        count,
        records: records.into(),
        record_size: CompactFlow::SIZE as u32,
        malformed,
        decode_ns,
    }
}

const fn libc_ebadf() -> i32 {
    9
}

/// Background job of `decodeFlowEvents`.
pub struct DecodeTask {
    records: Buffer,
}

#[napi]
impl Task for DecodeTask {
    type Output = (Vec<u8>, u32, u32, f64);
    type JsValue = FlowBatch;

    fn compute(&mut self) -> Result<Self::Output> {
        let started = std::time::Instant::now();
        let mut decoder = Decoder::new();
        let mut out = Vec::with_capacity(self.records.len());
        let n = flows::decode_records_compact(&self.records, &mut decoder, &mut out);
        Ok((
            out,
            n as u32,
            decoder.stats().malformed as u32,
            started.elapsed().as_nanos() as f64,
        ))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(flow_batch(output))
    }
}

/// Decodes packed raw `struct flow_event` records (64 bytes each, as the
/// datapath writes them) through the reader's decoder into a `FlowBatch`.
/// Malformed records are skipped and counted.
#[napi(ts_return_type = "Promise<FlowBatch>")]
pub fn decode_flow_events(records: Buffer) -> AsyncTask<DecodeTask> {
    AsyncTask::new(DecodeTask { records })
}

/// TEST ONLY: `count` synthetic raw `flow_event` records (deterministic per
/// `seed`), for benchmarks and tests of `decodeFlowEvents` without traffic.
#[napi]
pub fn test_only_synthetic_flow_events(count: u32, seed: Option<u32>) -> Buffer {
    flows::synthetic_records(count as usize, seed.unwrap_or(1)).into()
}

/// One kind of event for `testOnlyEmitFlowEvents`.
#[napi(object)]
pub struct SyntheticEventSpec {
    /// 1 drop, 4 trace, 5 policy verdict.
    pub event_type: u32,
    /// 1 forwarded, 2 dropped, 4 audit, 5 redirected.
    pub verdict: u32,
    /// Drop reason (0 none).
    pub drop_reason: Option<u32>,
    /// 0 new, 1 established, 2 reply, 3 related.
    pub ct_status: Option<u32>,
    /// 1 ingress, 2 egress.
    pub direction: Option<u32>,
    /// Source identity, 1000..=1255 (default 1064).
    pub src_identity: Option<u32>,
    /// Source IPv4, dotted.
    pub source: String,
    /// Destination IPv4, dotted.
    pub destination: String,
    /// TCP source port.
    pub source_port: u32,
    /// TCP destination port.
    pub destination_port: u32,
    /// TCP flags byte (default SYN).
    pub tcp_flags: Option<u32>,
    /// How many identical events (default 1).
    pub count: Option<u32>,
}

/// Background job of `testOnlyEmitFlowEvents`.
pub struct EmitTask {
    pin_dir: String,
    bpffs_root: PathBuf,
    specs: Vec<SyntheticEventSpec>,
    failure: Failure,
}

fn parse_ip(s: &str) -> membrane_datapath::Result<std::net::Ipv4Addr> {
    s.parse().map_err(|_| {
        DatapathError::invalid(
            "IPv4 address",
            format!("{s:?} is not a dotted IPv4 address"),
        )
    })
}

#[napi]
impl Task for EmitTask {
    type Output = u32;
    type JsValue = u32;

    fn compute(&mut self) -> Result<Self::Output> {
        let run = || -> membrane_datapath::Result<u32> {
            let pins = PinDir::new(&self.pin_dir, &self.bpffs_root)?;
            pins.prepare(&self.bpffs_root)?;
            let mut ebpf = loader::load(&objects::TEST_FLOW_EVENTS, MapPins::Dir(&pins))?;
            let what = "program mbr_test_events of object test_flow_events";
            let prog: &mut SchedClassifier = ebpf
                .program_mut("mbr_test_events")
                .ok_or_else(|| DatapathError::invalid("program", format!("{what} does not exist")))?
                .try_into()
                .map_err(|e| DatapathError::op("type", what, &e))?;
            let mut total = 0;
            for spec in &self.specs {
                let mut frame = membrane_datapath::benchkit::tcp_frame(
                    parse_ip(&spec.source)?,
                    parse_ip(&spec.destination)?,
                    spec.source_port as u16,
                    spec.destination_port as u16,
                    spec.tcp_flags.unwrap_or(0x02) as u8,
                );
                // The fixture reads the event from the IPv4 header (see
                // ebpf/test_flow_events.c).
                let tos = (spec.verdict as u8) << 4
                    | (spec.ct_status.unwrap_or(0) as u8 & 3) << 2
                    | (spec.direction.unwrap_or(2) as u8 & 3);
                let id =
                    (spec.event_type as u16) << 8 | spec.drop_reason.unwrap_or(0) as u16 & 0xff;
                let ttl = spec
                    .src_identity
                    .unwrap_or(1064)
                    .saturating_sub(1000)
                    .min(255) as u8;
                frame[15] = tos;
                frame[18..20].copy_from_slice(&id.to_be_bytes());
                frame[22] = ttl;
                let count = spec.count.unwrap_or(1).max(1);
                let mut out = vec![0u8; frame.len() + 256];
                prog.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    repeat: count,
                    ..TestRunOptions::default()
                })
                .map_err(|e| DatapathError::op("BPF_PROG_TEST_RUN", what, &e))?;
                total += count;
            }
            Ok(total)
        };
        run().map_err(|e| self.failure.record(e))
    }

    fn resolve(&mut self, _env: Env, n: Self::Output) -> Result<Self::JsValue> {
        Ok(n)
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        Err(self.failure.take_js_error(&env, err))
    }
}

/// TEST ONLY: writes real flow events into the `mbr_events` ring buffer
/// pinned under `pinDir` (created and pinned if absent) by running the
/// fixture program `ebpf/test_flow_events.c` with BPF_PROG_TEST_RUN on a
/// crafted packet per spec. Resolves to the number of events written. No
/// interface is touched.
#[napi]
pub fn test_only_emit_flow_events(
    pin_dir: String,
    events: Vec<SyntheticEventSpec>,
    bpffs_root: Option<String>,
) -> AsyncTask<EmitTask> {
    AsyncTask::new(EmitTask {
        pin_dir,
        bpffs_root: bpffs_root_or_default(bpffs_root),
        specs: events,
        failure: Failure::default(),
    })
}
