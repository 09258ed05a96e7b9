//! The kernel/user boundary check: every struct that crosses it is declared
//! once in C (`ebpf/lib/*.h`) and mirrored once in Rust (a `#[repr(C)]` type
//! declared with [`c_struct!`](crate::c_struct)). This module compares the
//! two through the BTF that clang writes into each object: the struct's size,
//! and every field's name, byte offset and size; and, for each map, that its
//! key and value are the types the Rust side binds to it.
//!
//! The check runs in `cargo test` over every registered type and map
//! ([`crate::maps::mirrored_types`], [`crate::maps::map_bindings`]), and again
//! at load time over the object being loaded, so a mismatched build can never
//! write misaligned entries into a live map.

use std::fmt;

pub use aya::Pod;

use crate::{
    btf::{Btf, BtfDetail, BtfKind},
    objects::EmbeddedObject,
};

/// One field of a Rust mirror: name, byte offset, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLayout {
    /// Field name; must equal the C member's name.
    pub name: &'static str,
    /// `offset_of!` of the field.
    pub offset: usize,
    /// `size_of` of the field's type.
    pub size: usize,
}

/// What a Rust mirror mirrors: a C struct, or a C scalar (for maps keyed by
/// a plain integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CKind {
    /// `struct <c_name>`.
    Struct,
    /// An integer or enum type of the same size.
    Scalar,
    /// No type at all: the key and value of a map that has none (a ring buffer).
    Absent,
}

/// The layout of a Rust mirror as the Rust compiler laid it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeLayout {
    /// The Rust type's name.
    pub rust_name: &'static str,
    /// The C type's name (`pkt_counter_key` for `struct pkt_counter_key`, `__u32`).
    pub c_name: &'static str,
    /// Struct or scalar.
    pub kind: CKind,
    /// `size_of` of the Rust type.
    pub size: usize,
    /// Fields in declaration order (empty for scalars).
    pub fields: Vec<FieldLayout>,
}

/// A Rust type that mirrors a C type of the datapath. Implemented by
/// [`c_struct!`](crate::c_struct) for structs and here for integers.
pub trait CType: Pod {
    /// The C type's name, without the `struct` keyword.
    const C_NAME: &'static str;

    /// The Rust side's layout, for comparison with BTF.
    fn layout() -> TypeLayout;
}

macro_rules! scalar_ctype {
    ($($ty:ty => $c:literal),* $(,)?) => {$(
        impl CType for $ty {
            const C_NAME: &'static str = $c;
            fn layout() -> TypeLayout {
                TypeLayout {
                    rust_name: stringify!($ty),
                    c_name: $c,
                    kind: CKind::Scalar,
                    size: ::core::mem::size_of::<$ty>(),
                    fields: Vec::new(),
                }
            }
        }
    )*};
}
scalar_ctype!(u8 => "__u8", u16 => "__u16", u32 => "__u32", u64 => "__u64", i32 => "__s32", i64 => "__s64");

/// Declares a `#[repr(C)]` mirror of a C struct and registers its layout.
///
/// ```
/// membrane_datapath::c_struct! {
///     /// Key of some map.
///     pub struct ExampleKey = "example_key" {
///         /// An interface.
///         pub ifindex: u32,
///         pub flags: u8,
///         pub pad: [u8; 3],
///     }
/// }
/// ```
///
/// The struct gets `Clone, Copy, Debug, Default, PartialEq, Eq, Hash`,
/// `unsafe impl aya::Pod` and [`CType`]. A compile-time assertion rejects
/// implicit padding: hash-map keys are compared byte by byte, so every byte
/// must be a field (write explicit `pad` fields, as the C side does).
#[macro_export]
macro_rules! c_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident = $c_name:literal {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $fty ),*
        }

        // SAFETY: repr(C), every field is a plain integer or an array of
        // them, and the assertion below proves there is no padding, so every
        // bit pattern is valid and every byte is initialised.
        unsafe impl $crate::layout::Pod for $name {}

        const _: () = assert!(
            ::core::mem::size_of::<$name>() == 0 $( + ::core::mem::size_of::<$fty>() )*,
            concat!(
                stringify!($name),
                " has implicit padding: add explicit pad fields so that every byte is a field"
            ),
        );

        impl $crate::layout::CType for $name {
            const C_NAME: &'static str = $c_name;

            fn layout() -> $crate::layout::TypeLayout {
                $crate::layout::TypeLayout {
                    rust_name: stringify!($name),
                    c_name: $c_name,
                    kind: $crate::layout::CKind::Struct,
                    size: ::core::mem::size_of::<$name>(),
                    fields: ::std::vec![
                        $( $crate::layout::FieldLayout {
                            name: stringify!($field),
                            offset: ::core::mem::offset_of!($name, $field),
                            size: ::core::mem::size_of::<$fty>(),
                        } ),*
                    ],
                }
            }
        }
    };
}

/// A Rust mirror that disagrees with the C side, with every difference found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LayoutError {
    /// The object whose BTF was read (`packet_counter`).
    pub object: String,
    /// The C side (`struct pkt_counter_key`, or `map mbr_pkt_counts`).
    pub c_type: String,
    /// The Rust side (`PacketCounterKey`).
    pub rust_type: String,
    /// One line per difference, each naming the field or attribute.
    pub problems: Vec<String>,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rust {} does not match C {} in object {}: {}",
            self.rust_type,
            self.c_type,
            self.object,
            self.problems.join("; ")
        )
    }
}

/// A map of an object and the Rust types bound to it.
#[derive(Debug, Clone)]
pub struct MapBinding {
    /// The map's name (the C variable).
    pub name: &'static str,
    /// The expected `BPF_MAP_TYPE_*`.
    pub map_type: aya::maps::MapType,
    /// The key's Rust layout.
    pub key: TypeLayout,
    /// The value's Rust layout (per CPU, for per-CPU maps).
    pub value: TypeLayout,
}

impl MapBinding {
    /// Binds a map without key or value types, such as a `BPF_MAP_TYPE_RINGBUF`
    /// (its records are mirrored structs checked on their own).
    pub fn keyless(name: &'static str, map_type: aya::maps::MapType) -> Self {
        let absent = TypeLayout {
            rust_name: "()",
            c_name: "(none)",
            kind: CKind::Absent,
            size: 0,
            fields: Vec::new(),
        };
        Self {
            name,
            map_type,
            key: absent.clone(),
            value: absent,
        }
    }

    /// Binds map `name` of type `map_type` to key `K` and value `V`.
    pub fn new<K: CType, V: CType>(name: &'static str, map_type: aya::maps::MapType) -> Self {
        Self {
            name,
            map_type,
            key: K::layout(),
            value: V::layout(),
        }
    }
}

/// What a successful check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutReport {
    /// `object: struct name` for each struct compared.
    pub structs: Vec<String>,
    /// `object: map name` for each map compared.
    pub maps: Vec<String>,
}

/// Compares a Rust layout with the BTF type `type_id` of `object`.
pub fn check_type_id(
    btf: &Btf,
    object: &str,
    type_id: u32,
    rust: &TypeLayout,
) -> Result<(), LayoutError> {
    let mut problems = Vec::new();
    let resolved = btf
        .resolve(type_id)
        .and_then(|id| Ok((id, btf.type_by_id(id)?)));
    let c_display = btf.display_name(type_id);
    let fail = |problems: Vec<String>| LayoutError {
        object: object.to_owned(),
        c_type: c_display.clone(),
        rust_type: rust.rust_name.to_owned(),
        problems,
    };
    let (id, c) = match resolved {
        Ok(found) => found,
        Err(e) => return Err(fail(vec![e.to_string()])),
    };
    match rust.kind {
        CKind::Absent => problems.push("the Rust binding expects no type here".to_owned()),
        CKind::Scalar => {
            if !matches!(c.kind, BtfKind::Int | BtfKind::Enum | BtfKind::Enum64) {
                problems.push(format!(
                    "C type is {}, Rust mirrors a scalar ({})",
                    btf.display_name(id),
                    rust.c_name
                ));
            } else if u64::from(c.size_or_type) != rust.size as u64 {
                problems.push(format!(
                    "size: C {} bytes, Rust {} bytes",
                    c.size_or_type, rust.size
                ));
            }
        }
        CKind::Struct => {
            if c.kind != BtfKind::Struct {
                problems.push(format!(
                    "C type is {}, Rust mirrors struct {}",
                    btf.display_name(id),
                    rust.c_name
                ));
            } else if c.name != rust.c_name {
                problems.push(format!(
                    "C type is struct {}, Rust mirrors struct {}",
                    c.name, rust.c_name
                ));
            } else {
                compare_struct(btf, c, rust, &mut problems);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(problems))
    }
}

/// Compares a Rust struct layout with the struct of the same C name in `btf`.
pub fn check_struct(btf: &Btf, object: &str, rust: &TypeLayout) -> Result<(), LayoutError> {
    match btf.find_struct(rust.c_name) {
        Some((id, _)) => check_type_id(btf, object, id, rust),
        None => Err(LayoutError {
            object: object.to_owned(),
            c_type: format!("struct {}", rust.c_name),
            rust_type: rust.rust_name.to_owned(),
            problems: vec![format!("no struct {} in the object's BTF", rust.c_name)],
        }),
    }
}

fn compare_struct(
    btf: &Btf,
    c: &crate::btf::BtfType,
    rust: &TypeLayout,
    problems: &mut Vec<String>,
) {
    if u64::from(c.size_or_type) != rust.size as u64 {
        problems.push(format!(
            "size: C {} bytes, Rust {} bytes",
            c.size_or_type, rust.size
        ));
    }
    let BtfDetail::Members(members) = &c.detail else {
        problems.push("C struct has no member list".to_owned());
        return;
    };
    for member in members {
        if member.name.is_empty() {
            problems.push(format!(
                "C has an anonymous member at byte {}: name it, the mirror matches fields by name",
                member.bit_offset / 8
            ));
            continue;
        }
        if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
            problems.push(format!(
                "C field `{}` is a bitfield: mirror the whole storage unit as a named integer field instead",
                member.name
            ));
            continue;
        }
        let c_offset = u64::from(member.bit_offset / 8);
        let c_size = btf.size_of(member.type_id);
        let Some(field) = rust.fields.iter().find(|f| f.name == member.name) else {
            problems.push(format!(
                "C field `{}` ({}, offset {c_offset}) has no Rust field",
                member.name,
                btf.display_name(member.type_id)
            ));
            continue;
        };
        if c_offset != field.offset as u64 {
            problems.push(format!(
                "field `{}`: C offset {c_offset}, Rust offset {}",
                member.name, field.offset
            ));
        }
        match c_size {
            Ok(size) if size != field.size as u64 => problems.push(format!(
                "field `{}`: C size {size} ({}), Rust size {}",
                member.name,
                btf.display_name(member.type_id),
                field.size
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("field `{}`: {e}", member.name)),
        }
    }
    for field in &rust.fields {
        if !members.iter().any(|m| m.name == field.name) {
            problems.push(format!(
                "Rust field `{}` (offset {}) has no C field",
                field.name, field.offset
            ));
        }
    }
}

/// Checks every map of one object against its Rust binding: the map must be
/// bound, of the bound type, and keyed and valued by the bound layouts.
pub fn check_object_maps(
    object: &EmbeddedObject,
    bindings: &[MapBinding],
    report: &mut LayoutReport,
) -> Result<(), Vec<LayoutError>> {
    let mut errors = Vec::new();
    let map_error = |map: &str, rust: String, problems: Vec<String>| LayoutError {
        object: object.name.to_owned(),
        c_type: format!("map {map}"),
        rust_type: rust,
        problems,
    };
    let unreadable = |e: crate::btf::BtfError| {
        vec![map_error(
            "(all)",
            "maps::map_bindings()".to_owned(),
            vec![e.to_string()],
        )]
    };
    let btf = object.btf().map_err(unreadable)?;
    let maps = btf.maps().map_err(unreadable)?;
    for map in maps {
        let Some(binding) = bindings.iter().find(|b| b.name == map.name) else {
            errors.push(map_error(
                &map.name,
                "(no binding)".to_owned(),
                vec![format!(
                    "map `{}` has no Rust binding: declare its key and value with c_struct! and register them in maps::map_bindings()",
                    map.name
                )],
            ));
            continue;
        };
        let mut problems = Vec::new();
        let expected_type = binding.map_type as u32;
        if map.map_type != Some(expected_type) {
            problems.push(format!(
                "map type: C {:?}, Rust binding {:?} ({expected_type})",
                map.map_type, binding.map_type
            ));
        }
        for (what, c_type, rust) in [
            ("key", map.key_type, &binding.key),
            ("value", map.value_type, &binding.value),
        ] {
            match c_type {
                None if rust.kind == CKind::Absent => {}
                None => problems.push(format!("{what}: C map declares no __type({what}, ...)")),
                Some(_) if rust.kind == CKind::Absent => problems.push(format!(
                    "{what}: C map declares a {what} type, the Rust binding expects none"
                )),
                Some(id) => {
                    if let Err(e) = check_type_id(&btf, object.name, id, rust) {
                        problems.extend(
                            e.problems
                                .into_iter()
                                .map(|p| format!("{what} {}: {p}", btf.display_name(id))),
                        );
                    }
                }
            }
        }
        if problems.is_empty() {
            report.maps.push(format!("{}: {}", object.name, map.name));
        } else {
            let rust = format!(
                "binding ({}, {})",
                binding.key.rust_name, binding.value.rust_name
            );
            errors.push(map_error(&map.name, rust, problems));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The full boundary check over a set of objects: every map of every object
/// against `bindings`, and every mirrored struct against the object(s) that
/// define it (a mirror that no object defines is an error too).
pub fn check_all(
    objects: &[&EmbeddedObject],
    bindings: &[MapBinding],
    mirrored: &[TypeLayout],
) -> Result<LayoutReport, Vec<LayoutError>> {
    let mut report = LayoutReport::default();
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for object in objects {
        if let Err(mut e) = check_object_maps(object, bindings, &mut report) {
            errors.append(&mut e);
        }
        if let Ok(btf) = object.btf() {
            parsed.push((object.name, btf));
        }
    }
    for rust in mirrored.iter().filter(|t| t.kind == CKind::Struct) {
        let mut defined = false;
        for (name, btf) in &parsed {
            if btf.find_struct(rust.c_name).is_none() {
                continue;
            }
            defined = true;
            match check_struct(btf, name, rust) {
                Ok(()) => report
                    .structs
                    .push(format!("{name}: struct {}", rust.c_name)),
                Err(e) => errors.push(e),
            }
        }
        if !defined {
            errors.push(LayoutError {
                object: "(all objects)".to_owned(),
                c_type: format!("struct {}", rust.c_name),
                rust_type: rust.rust_name.to_owned(),
                problems: vec![format!("no object's BTF defines struct {}", rust.c_name)],
            });
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}
