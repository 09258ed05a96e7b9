//! The kernel/user boundary check (DESIGN.md principle 4): every map of every
//! embedded object and every Rust mirror against the BTF of the compiled C.
//! Needs no privileges: it only reads the objects.

use aya::maps::MapType;
use membrane_datapath::{
    btf::Btf,
    c_struct,
    layout::{
        self, check_all, check_object_maps, check_struct, CType as _, LayoutReport, MapBinding,
    },
    maps::{
        self,
        packet_counter::{PacketCounterKey, PacketCounterValue},
    },
    objects::{OBJECTS, PACKET_COUNTER},
};

#[test]
fn every_map_and_every_mirror_matches_the_btf() {
    match check_all(OBJECTS, &maps::map_bindings(), &maps::mirrored_types()) {
        Ok(report) => {
            println!("layout check passed: {report:#?}");
            assert!(
                report
                    .maps
                    .contains(&"packet_counter: mbr_pkt_counts".to_owned()),
                "{report:?}"
            );
            assert!(
                report
                    .structs
                    .contains(&"packet_counter: struct pkt_counter_key".to_owned()),
                "{report:?}"
            );
            assert!(
                report
                    .structs
                    .contains(&"packet_counter: struct pkt_counter_value".to_owned()),
                "{report:?}"
            );
            // Every registered struct mirror was compared somewhere.
            for t in maps::mirrored_types() {
                assert!(
                    report
                        .structs
                        .iter()
                        .any(|s| s.ends_with(&format!("struct {}", t.c_name))),
                    "{} was not checked",
                    t.rust_name
                );
            }
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("layout mismatches:\n{}", lines.join("\n"));
        }
    }
}

#[test]
fn every_object_has_btf_and_bound_maps_only() {
    for object in OBJECTS {
        let btf = object
            .btf()
            .unwrap_or_else(|e| panic!("{}: {e}", object.name));
        for map in btf
            .maps()
            .unwrap_or_else(|e| panic!("{}: {e}", object.name))
        {
            assert!(
                maps::binding(&map.name).is_some(),
                "map {} of {} has no Rust binding",
                map.name,
                object.name
            );
        }
    }
}

#[test]
fn the_btf_reader_sees_the_c_declarations() {
    let btf = PACKET_COUNTER.btf().expect("BTF");
    let maps = btf.maps().expect("maps");
    let counts = maps
        .iter()
        .find(|m| m.name == "mbr_pkt_counts")
        .expect("mbr_pkt_counts");
    assert_eq!(counts.map_type, Some(MapType::PerCpuHash as u32));
    assert_eq!(counts.max_entries, Some(8192));
    assert_eq!(counts.map_flags, Some(1), "BPF_F_NO_PREALLOC");
    assert_eq!(
        btf.display_name(counts.key_type.expect("key")),
        "struct pkt_counter_key"
    );
    assert_eq!(
        btf.display_name(counts.value_type.expect("value")),
        "struct pkt_counter_value"
    );
    let (id, _) = btf.find_struct("pkt_counter_key").expect("struct");
    assert_eq!(btf.size_of(id).expect("size"), 8);
}

#[test]
fn the_btf_reader_rejects_garbage() {
    assert!(Btf::parse(&[]).is_err());
    assert!(
        Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err(),
        "truncated header"
    );
    assert!(Btf::from_elf(b"not an elf").is_err());
}

// Deliberately wrong twins of the real C structs: each must fail the check,
// and the failure must name the field that differs.

c_struct! {
    /// `pkt_counter_key` with `ifindex` moved after `direction`/`pad`.
    struct SwappedKey = "pkt_counter_key" {
        direction: u8,
        pad: [u8; 3],
        ifindex: u32,
    }
}

c_struct! {
    /// `pkt_counter_value` with `bytes` narrowed to 32 bits.
    struct NarrowValue = "pkt_counter_value" {
        packets: u64,
        bytes: u32,
        reserved: u32,
    }
}

c_struct! {
    /// `pkt_counter_key` with `direction` renamed.
    struct RenamedKey = "pkt_counter_key" {
        ifindex: u32,
        dir: u8,
        pad: [u8; 3],
    }
}

fn check(layout: &layout::TypeLayout) -> layout::LayoutError {
    let btf = PACKET_COUNTER.btf().expect("BTF");
    check_struct(&btf, PACKET_COUNTER.name, layout)
        .expect_err("a mismatched mirror must fail the check")
}

#[test]
fn swapped_fields_fail_and_name_the_fields() {
    let err = check(&SwappedKey::layout());
    let text = err.to_string();
    println!("{text}");
    assert_eq!(err.c_type, "struct pkt_counter_key");
    assert_eq!(err.rust_type, "SwappedKey");
    assert!(
        text.contains("field `ifindex`: C offset 0, Rust offset 4"),
        "{text}"
    );
    assert!(
        text.contains("field `direction`: C offset 4, Rust offset 0"),
        "{text}"
    );
    assert!(
        text.contains("field `pad`: C offset 5, Rust offset 1"),
        "{text}"
    );
}

#[test]
fn a_narrowed_field_fails_and_names_the_field() {
    let err = check(&NarrowValue::layout());
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.contains("field `bytes`: C size 8 (__u64), Rust size 4"),
        "{text}"
    );
    assert!(
        text.contains("Rust field `reserved` (offset 12) has no C field"),
        "{text}"
    );
}

#[test]
fn a_renamed_field_fails_and_names_both_sides() {
    let err = check(&RenamedKey::layout());
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.contains("C field `direction` (__u8, offset 4) has no Rust field"),
        "{text}"
    );
    assert!(
        text.contains("Rust field `dir` (offset 4) has no C field"),
        "{text}"
    );
}

#[test]
fn a_map_bound_to_the_wrong_types_fails_and_names_the_map() {
    // Key and value swapped in the binding.
    let wrong = vec![MapBinding::new::<PacketCounterValue, PacketCounterKey>(
        "mbr_pkt_counts",
        MapType::PerCpuHash,
    )];
    let errors = check_object_maps(&PACKET_COUNTER, &wrong, &mut LayoutReport::default())
        .expect_err("must fail");
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    println!("{text}");
    assert!(text.contains("map mbr_pkt_counts"), "{text}");
    assert!(text.contains("key struct pkt_counter_key: C type is struct pkt_counter_key, Rust mirrors struct pkt_counter_value"), "{text}");

    // Right types, wrong map type.
    let wrong = vec![MapBinding::new::<PacketCounterKey, PacketCounterValue>(
        "mbr_pkt_counts",
        MapType::Hash,
    )];
    let errors = check_object_maps(&PACKET_COUNTER, &wrong, &mut LayoutReport::default())
        .expect_err("must fail");
    assert!(errors[0].to_string().contains("map type"), "{}", errors[0]);
}

#[test]
fn an_unbound_map_fails() {
    let errors = check_object_maps(&PACKET_COUNTER, &[], &mut LayoutReport::default())
        .expect_err("must fail");
    assert!(
        errors[0]
            .to_string()
            .contains("map `mbr_pkt_counts` has no Rust binding"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_mirror_that_no_object_defines_fails() {
    c_struct! {
        struct Orphan = "no_such_struct" {
            x: u32,
        }
    }
    let errors =
        check_all(OBJECTS, &maps::map_bindings(), &[Orphan::layout()]).expect_err("must fail");
    assert!(
        errors[0]
            .to_string()
            .contains("no object's BTF defines struct no_such_struct"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_loader_runs_the_same_check() {
    let report = membrane_datapath::loader::check_layout(&PACKET_COUNTER).expect("layout");
    assert_eq!(report.maps, ["packet_counter: mbr_pkt_counts"]);
}
