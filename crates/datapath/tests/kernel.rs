//! Kernel tests (root, real BPF): the verifier accepts every program,
//! BPF_PROG_TEST_RUN counts crafted packets, and the pinned attach / read /
//! detach cycle works with both tcx and netlink cls_bpf.
//!
//! Without root or BPF these tests FAIL with an explanation (see
//! `common::require_kernel`); they never pass silently.

mod common;

use std::path::{Path, PathBuf};

use common::{pin_foreign_hash_map, require_kernel, send_frames, VethPair};
use membrane_datapath::{
    attach::{self, AttachMode, Via},
    bpffs,
    maps::packet_counter::{Direction, PacketCounters, MAP_NAME},
    objects::{OBJECTS, PACKET_COUNTER},
    packet_counter::{self, AttachOptions, DetachOptions},
    sys,
    testrun::{icmp_echo_frame, Harness},
};

/// TC_ACT_UNSPEC / TCX_NEXT: the counter never decides a packet's fate.
const PASS_ON: i32 = -1;

#[test]
fn the_verifier_accepts_every_program_of_every_object() {
    if !require_kernel("the_verifier_accepts_every_program_of_every_object") {
        return;
    }
    for object in OBJECTS {
        let harness = Harness::load(object).unwrap_or_else(|e| panic!("{}: {e}", object.name));
        let loaded: Vec<&str> = harness.ebpf().programs().map(|(name, _)| name).collect();
        let expected = object.program_names().expect("programs");
        assert_eq!(
            loaded.len(),
            expected.len(),
            "{}: loaded {loaded:?}, expected {expected:?}",
            object.name
        );
    }
}

#[test]
fn test_run_counts_crafted_packets_per_direction() {
    if !require_kernel("test_run_counts_crafted_packets_per_direction") {
        return;
    }
    let mut harness = Harness::load(&PACKET_COUNTER).expect("load packet_counter");
    let frame = icmp_echo_frame([10, 250, 0, 1], [10, 250, 0, 2], 56);
    assert_eq!(
        frame.len(),
        98,
        "Ethernet + IPv4 + ICMP + 56 bytes of payload"
    );

    let ingress = harness
        .run_tc("mbr_cnt_ingress", &frame, 3)
        .expect("test run ingress");
    assert_eq!(ingress.verdict, PASS_ON);
    let egress = harness
        .run_tc("mbr_cnt_egress", &frame, 2)
        .expect("test run egress");
    assert_eq!(egress.verdict, PASS_ON);

    // The kernel runs test packets on a skb of the loopback device.
    let lo = sys::ifindex_from_name("lo").expect("lo");
    let all = counters_of(&harness).read_all().expect("read");
    assert_eq!(all.len(), 2, "{all:?}");
    let ingress = count(&harness, lo, Direction::Ingress);
    assert_eq!((ingress.packets, ingress.bytes), (3, 3 * 98), "{ingress:?}");
    let egress = count(&harness, lo, Direction::Egress);
    assert_eq!((egress.packets, egress.bytes), (2, 2 * 98), "{egress:?}");

    // Accumulates across runs.
    harness
        .run_tc("mbr_cnt_ingress", &frame[..60], 1)
        .expect("short frame");
    let ingress = count(&harness, lo, Direction::Ingress);
    assert_eq!(
        (ingress.packets, ingress.bytes),
        (4, 3 * 98 + 60),
        "{ingress:?}"
    );
}

fn counters_of(harness: &Harness) -> PacketCounters<&aya::maps::MapData> {
    PacketCounters::from_map(harness.ebpf().map(MAP_NAME).expect("map")).expect("typed map")
}

fn count(
    harness: &Harness,
    ifindex: u32,
    direction: Direction,
) -> membrane_datapath::maps::packet_counter::PacketCount {
    counters_of(harness)
        .get(ifindex, direction)
        .expect("lookup")
        .unwrap_or_else(|| panic!("no counter for {ifindex}/{direction}"))
}

/// Removes a test pin directory (detaching whatever is recorded in it) on drop.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = packet_counter::detach(&DetachOptions {
            iface: None,
            pin_dir: self.0.clone(),
            bpffs_root: PathBuf::from("/sys/fs/bpf"),
        });
    }
}

fn attach(iface: &str, pin_dir: &Path, mode: AttachMode) -> packet_counter::AttachReport {
    packet_counter::attach(&AttachOptions {
        iface: iface.to_owned(),
        pin_dir: pin_dir.to_path_buf(),
        bpffs_root: PathBuf::from("/sys/fs/bpf"),
        mode,
    })
    .unwrap_or_else(|e| panic!("attach to {iface} ({mode:?}): {e}"))
}

#[test]
fn pinned_attach_read_detach_with_tcx_and_netlink() {
    if !require_kernel("pinned_attach_read_detach_with_tcx_and_netlink") {
        return;
    }
    let pid = std::process::id();
    let veth = VethPair::create(&format!("mbrk{}", pid % 100_000));
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/membrane-test-{pid}-rs"));
    let _pins = PinGuard(pin_dir.clone());
    let root = Path::new("/sys/fs/bpf");
    let a = sys::ifindex_from_name(&veth.a).expect("ifindex a");
    let b = sys::ifindex_from_name(&veth.b).expect("ifindex b");

    // End a via tcx (loads and pins), end b forced through netlink cls_bpf
    // (reuses the pinned programs and map).
    let first = attach(&veth.a, &pin_dir, AttachMode::Tcx);
    assert!(first.loaded);
    assert!(first
        .attachments
        .iter()
        .all(|x| x.created && x.attachment.via == Via::Tcx));
    let again = attach(&veth.a, &pin_dir, AttachMode::Tcx);
    assert!(
        !again.loaded && again.attachments.iter().all(|x| !x.created),
        "attach is idempotent"
    );
    let second = attach(&veth.b, &pin_dir, AttachMode::Netlink);
    assert!(!second.loaded, "programs are loaded once per pin dir");
    assert!(second
        .attachments
        .iter()
        .all(|x| x.attachment.via == Via::Netlink));

    let tcx: Vec<String> = attach::query_tcx(&veth.a)
        .expect("query")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(tcx, ["mbr_cnt_ingress", "mbr_cnt_egress"]);
    let recorded = packet_counter::attachments(&pin_dir, root).expect("list");
    assert_eq!(recorded.len(), 4, "{recorded:?}");

    // Frames out of a: a's egress, then b's ingress.
    let frame = icmp_echo_frame([10, 250, 1, 1], [10, 250, 1, 2], 100);
    send_frames(a, &frame, 7);
    let counts = packet_counter::read(&pin_dir, root).expect("read pinned map");
    let find = |ifindex, direction| {
        counts
            .iter()
            .find(|c| c.ifindex == ifindex && c.direction == direction)
            .copied()
            .unwrap_or_else(|| panic!("no counter for {ifindex}/{direction}: {counts:?}"))
    };
    for (ifindex, direction) in [(a, Direction::Egress), (b, Direction::Ingress)] {
        let c = find(ifindex, direction);
        assert!(c.packets >= 7 && c.bytes >= 7 * frame.len() as u64, "{c:?}");
    }

    // Detach b only: a keeps counting, the map and programs stay.
    let report = packet_counter::detach(&DetachOptions {
        iface: Some(veth.b.clone()),
        pin_dir: pin_dir.clone(),
        bpffs_root: root.to_path_buf(),
    })
    .expect("detach b");
    assert_eq!(report.detached.len(), 2);
    assert!(bpffs::exists(&pin_dir.join("maps").join(MAP_NAME)));
    send_frames(a, &frame, 1);
    assert!(
        find(a, Direction::Egress).packets
            < packet_counter::read(&pin_dir, root)
                .expect("read")
                .iter()
                .find(|c| c.ifindex == a && c.direction == Direction::Egress)
                .expect("a egress")
                .packets
    );

    // Detach everything: links, programs, map and directories are gone.
    let report = packet_counter::detach(&DetachOptions {
        iface: None,
        pin_dir: pin_dir.clone(),
        bpffs_root: root.to_path_buf(),
    })
    .expect("detach all");
    assert_eq!(report.detached.len(), 2, "{report:?}");
    assert!(!pin_dir.exists(), "pin dir left behind: {report:?}");
    assert!(
        attach::query_tcx(&veth.a).expect("query").is_empty(),
        "tcx programs left on {}",
        veth.a
    );
    let err = packet_counter::read(&pin_dir, root).expect_err("nothing to read");
    assert_eq!(err.code(), "ENOENT", "{err}");

    // Detach is idempotent.
    packet_counter::detach(&DetachOptions {
        iface: None,
        pin_dir: pin_dir.clone(),
        bpffs_root: root.to_path_buf(),
    })
    .expect("second detach");
}

#[test]
fn attach_errors_name_what_failed() {
    if !require_kernel("attach_errors_name_what_failed") {
        return;
    }
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/membrane-test-{}-err",
        std::process::id()
    ));
    let _pins = PinGuard(pin_dir.clone());
    let err = packet_counter::attach(&AttachOptions {
        iface: "mbr-no-such0".to_owned(),
        pin_dir: pin_dir.clone(),
        bpffs_root: PathBuf::from("/sys/fs/bpf"),
        mode: AttachMode::Auto,
    })
    .expect_err("no such interface");
    assert_eq!(err.code(), "ENODEV", "{err}");
    assert!(err.to_string().contains("mbr-no-such0"), "{err}");
    assert!(!pin_dir.exists(), "a failed attach must not leave pins");

    let err = packet_counter::attach(&AttachOptions {
        iface: "lo".to_owned(),
        pin_dir: PathBuf::from("/tmp/not-bpffs"),
        bpffs_root: PathBuf::from("/sys/fs/bpf"),
        mode: AttachMode::Auto,
    })
    .expect_err("pin dir outside bpffs");
    assert_eq!(err.code(), "EINVAL", "{err}");
    assert!(err.to_string().contains("pin directory"), "{err}");
}

#[test]
fn an_incompatible_pinned_map_is_refused_and_left_alone() {
    if !require_kernel("an_incompatible_pinned_map_is_refused_and_left_alone") {
        return;
    }
    let pid = std::process::id();
    let veth = VethPair::create(&format!("mbri{}", pid % 100_000));
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/membrane-test-{pid}-incompat"));
    let _pins = PinGuard(pin_dir.clone());
    let root = Path::new("/sys/fs/bpf");
    let pins = bpffs::PinDir::new(&pin_dir, root).expect("pin dir");
    pins.prepare(root).expect("prepare");
    // Another build's map: 12-byte keys where this build uses 8.
    let foreign = pins.map(MAP_NAME);
    pin_foreign_hash_map(&foreign, 12, 16);

    let err = packet_counter::attach(&AttachOptions {
        iface: veth.a.clone(),
        pin_dir: pin_dir.clone(),
        bpffs_root: root.to_path_buf(),
        mode: AttachMode::Auto,
    })
    .expect_err("must refuse to adopt a map it cannot read");
    assert_eq!(err.code(), "EINCOMPATIBLE", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("mbr_pkt_counts") && text.contains("key size 12 bytes, expected 8"),
        "{text}"
    );
    assert!(text.contains("type Hash, expected PerCpuHash"), "{text}");

    // Nothing was attached or pinned; the foreign map is untouched.
    assert!(attach::query_tcx(&veth.a).expect("query").is_empty());
    assert!(bpffs::exists(&foreign), "the pre-existing pin must stay");
    assert!(!bpffs::exists(&pins.program("mbr_cnt_ingress")));
    assert!(packet_counter::attachments(&pin_dir, root)
        .expect("list")
        .is_empty());
    membrane_datapath::loader::remove_pin(&foreign).expect("unpin the foreign map");
}
