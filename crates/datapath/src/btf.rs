//! A small, strict reader of BTF (the BPF Type Format) as clang writes it
//! into the `.BTF` section of an eBPF object.
//!
//! It exists for the layout check ([`crate::layout`]) and the object
//! inventory: aya parses BTF too, but keeps struct members private. Only
//! reading is supported; the format is the kernel's
//! (Documentation/bpf/btf.rst): a header, a type section of `btf_type`
//! records each followed by kind-specific data, and a string section.

use std::fmt;

use object::{Object as _, ObjectSection as _};

/// A malformed or unexpected BTF blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BTF: {0}")]
pub struct BtfError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, BtfError> {
    Err(BtfError(msg.into()))
}

/// `BTF_KIND_*` from linux/btf.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BtfKind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl BtfKind {
    fn from_raw(raw: u32) -> Result<Self, BtfError> {
        Ok(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            other => return err(format!("unknown type kind {other}")),
        })
    }
}

/// A member of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfMember {
    /// Field name; empty for an anonymous struct/union member.
    pub name: String,
    /// Type id of the field.
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Width in bits when the field is a bitfield, else 0.
    pub bitfield_size: u32,
}

/// One variable of a DATASEC (e.g. a map definition in `.maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfVarSecInfo {
    /// Type id of the VAR.
    pub type_id: u32,
    /// Offset in the section.
    pub offset: u32,
    /// Size in the section.
    pub size: u32,
}

/// Kind-specific data of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfDetail {
    /// No extra data (PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG).
    None,
    /// INT: the encoding word (bits, offset, signedness).
    Int(u32),
    /// ARRAY.
    Array {
        /// Element type id.
        elem_type: u32,
        /// Index type id.
        index_type: u32,
        /// Number of elements.
        nelems: u32,
    },
    /// STRUCT or UNION members.
    Members(Vec<BtfMember>),
    /// ENUM / ENUM64 enumerators.
    Enumerators(Vec<(String, i64)>),
    /// FUNC_PROTO parameters (name, type id).
    Params(Vec<(String, u32)>),
    /// VAR linkage.
    Var(u32),
    /// DATASEC variables.
    Datasec(Vec<BtfVarSecInfo>),
    /// DECL_TAG component index.
    DeclTag(i32),
}

/// One BTF type record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfType {
    /// Name; empty for anonymous types.
    pub name: String,
    /// Kind.
    pub kind: BtfKind,
    /// The record's kind_flag bit.
    pub kind_flag: bool,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, referenced type id otherwise.
    pub size_or_type: u32,
    /// Kind-specific data.
    pub detail: BtfDetail,
}

/// A map definition found in the `.maps` section (libbpf BTF-style maps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfMapDef {
    /// The map's name (the C variable name).
    pub name: String,
    /// `BPF_MAP_TYPE_*` from `__uint(type, ...)`.
    pub map_type: Option<u32>,
    /// Type id of the key, from `__type(key, ...)`.
    pub key_type: Option<u32>,
    /// Type id of the value, from `__type(value, ...)`.
    pub value_type: Option<u32>,
    /// `__uint(max_entries, ...)`.
    pub max_entries: Option<u32>,
    /// `__uint(map_flags, ...)`.
    pub map_flags: Option<u32>,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string table.
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<BtfType>,
}

const BTF_MAGIC: u16 = 0xeb9f;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| BtfError(format!("type section truncated at byte {}", self.pos)))?;
        self.pos += 4;
        Ok(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError(format!("header truncated at byte {at}")))
}

impl Btf {
    /// Parses a raw `.BTF` blob in host byte order.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        match magic {
            Some(BTF_MAGIC) => {}
            Some(m) if m == BTF_MAGIC.swap_bytes() => {
                return err("foreign byte order; only host-endian BTF is supported")
            }
            _ => return err("bad magic; not a BTF blob"),
        }
        let hdr_len = read_u32(data, 4)? as usize;
        let type_off = read_u32(data, 8)? as usize;
        let type_len = read_u32(data, 12)? as usize;
        let str_off = read_u32(data, 16)? as usize;
        let str_len = read_u32(data, 20)? as usize;
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| BtfError("type section out of bounds".into()))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError("string section out of bounds".into()))?;
        let string_at = |off: u32| -> Result<String, BtfError> {
            let tail = strings
                .get(off as usize..)
                .ok_or_else(|| BtfError(format!("string offset {off} out of bounds")))?;
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| BtfError(format!("string at {off} is not NUL-terminated")))?;
            Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
        };

        let void = BtfType {
            name: String::new(),
            kind: BtfKind::Int,
            kind_flag: false,
            size_or_type: 0,
            detail: BtfDetail::None,
        };
        let mut out = vec![void];
        let mut r = Reader {
            data: types,
            pos: 0,
        };
        while r.pos < types.len() {
            let name = string_at(r.u32()?)?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = info & 0xffff;
            let kind = BtfKind::from_raw((info >> 24) & 0x1f)?;
            let kind_flag = info >> 31 == 1;
            let detail = match kind {
                BtfKind::Int => BtfDetail::Int(r.u32()?),
                BtfKind::Array => BtfDetail::Array {
                    elem_type: r.u32()?,
                    index_type: r.u32()?,
                    nelems: r.u32()?,
                },
                BtfKind::Struct | BtfKind::Union => {
                    let mut members = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let name = string_at(r.u32()?)?;
                        let type_id = r.u32()?;
                        let raw = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (raw & 0xff_ffff, raw >> 24)
                        } else {
                            (raw, 0)
                        };
                        members.push(BtfMember {
                            name,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    BtfDetail::Members(members)
                }
                BtfKind::Enum => {
                    let mut values = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let name = string_at(r.u32()?)?;
                        let raw = r.u32()?;
                        let value = if kind_flag {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        values.push((name, value));
                    }
                    BtfDetail::Enumerators(values)
                }
                BtfKind::Enum64 => {
                    let mut values = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let name = string_at(r.u32()?)?;
                        let lo = u64::from(r.u32()?);
                        let hi = u64::from(r.u32()?);
                        values.push((name, ((hi << 32) | lo) as i64));
                    }
                    BtfDetail::Enumerators(values)
                }
                BtfKind::FuncProto => {
                    let mut params = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let name = string_at(r.u32()?)?;
                        params.push((name, r.u32()?));
                    }
                    BtfDetail::Params(params)
                }
                BtfKind::Var => BtfDetail::Var(r.u32()?),
                BtfKind::Datasec => {
                    let mut vars = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        vars.push(BtfVarSecInfo {
                            type_id: r.u32()?,
                            offset: r.u32()?,
                            size: r.u32()?,
                        });
                    }
                    BtfDetail::Datasec(vars)
                }
                BtfKind::DeclTag => BtfDetail::DeclTag(r.u32()? as i32),
                BtfKind::Ptr
                | BtfKind::Fwd
                | BtfKind::Typedef
                | BtfKind::Volatile
                | BtfKind::Const
                | BtfKind::Restrict
                | BtfKind::Func
                | BtfKind::Float
                | BtfKind::TypeTag => BtfDetail::None,
            };
            out.push(BtfType {
                name,
                kind,
                kind_flag,
                size_or_type,
                detail,
            });
        }
        Ok(Self { types: out })
    }

    /// Parses the `.BTF` section of an ELF eBPF object.
    pub fn from_elf(elf: &[u8]) -> Result<Self, BtfError> {
        let file =
            object::File::parse(elf).map_err(|e| BtfError(format!("not an ELF object: {e}")))?;
        let section = file.section_by_name(".BTF").ok_or_else(|| {
            BtfError("the object has no .BTF section (was it compiled with -g?)".into())
        })?;
        let data = section
            .data()
            .map_err(|e| BtfError(format!("reading .BTF: {e}")))?;
        Self::parse(data)
    }

    /// The type with id `id` (0 is `void`).
    pub fn type_by_id(&self, id: u32) -> Result<&BtfType, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| BtfError(format!("type id {id} out of range")))
    }

    /// All types with their ids, `void` excluded.
    pub fn types(&self) -> impl Iterator<Item = (u32, &BtfType)> {
        self.types
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, t)| (i as u32, t))
    }

    /// The struct named `name` (without the `struct` keyword).
    pub fn find_struct(&self, name: &str) -> Option<(u32, &BtfType)> {
        self.types()
            .find(|(_, t)| t.kind == BtfKind::Struct && t.name == name)
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags)
    /// to the underlying type.
    pub fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..64 {
            let t = self.type_by_id(id)?;
            match t.kind {
                BtfKind::Typedef
                | BtfKind::Volatile
                | BtfKind::Const
                | BtfKind::Restrict
                | BtfKind::TypeTag => {
                    id = t.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        err(format!("type {id}: typedef chain too deep"))
    }

    /// Size in bytes of a type, as `sizeof` in C would give it.
    pub fn size_of(&self, id: u32) -> Result<u64, BtfError> {
        let id = self.resolve(id)?;
        let t = self.type_by_id(id)?;
        match (&t.kind, &t.detail) {
            (
                BtfKind::Int
                | BtfKind::Struct
                | BtfKind::Union
                | BtfKind::Enum
                | BtfKind::Enum64
                | BtfKind::Float,
                _,
            ) => Ok(u64::from(t.size_or_type)),
            (BtfKind::Ptr, _) => Ok(8),
            (
                BtfKind::Array,
                BtfDetail::Array {
                    elem_type, nelems, ..
                },
            ) => Ok(self.size_of(*elem_type)? * u64::from(*nelems)),
            (kind, _) => err(format!("type {id} ({kind:?}) has no size")),
        }
    }

    /// A C-like spelling of a type for messages: `struct pkt_counter_key`,
    /// `__u32`, `__u8[3]`, `void *`.
    pub fn display_name(&self, id: u32) -> String {
        let Ok(t) = self.type_by_id(id) else {
            return format!("<bad type {id}>");
        };
        if id == 0 {
            return "void".to_owned();
        }
        match (&t.kind, &t.detail) {
            (BtfKind::Struct, _) => format!("struct {}", or_anon(&t.name)),
            (BtfKind::Union, _) => format!("union {}", or_anon(&t.name)),
            (BtfKind::Enum | BtfKind::Enum64, _) => format!("enum {}", or_anon(&t.name)),
            (BtfKind::Ptr, _) => format!("{} *", self.display_name(t.size_or_type)),
            (BtfKind::Const, _) => format!("const {}", self.display_name(t.size_or_type)),
            (BtfKind::Volatile, _) => format!("volatile {}", self.display_name(t.size_or_type)),
            (
                BtfKind::Array,
                BtfDetail::Array {
                    elem_type, nelems, ..
                },
            ) => {
                format!("{}[{nelems}]", self.display_name(*elem_type))
            }
            _ => or_anon(&t.name).to_owned(),
        }
    }

    /// The map definitions of the `.maps` section.
    pub fn maps(&self) -> Result<Vec<BtfMapDef>, BtfError> {
        let Some((_, datasec)) = self
            .types()
            .find(|(_, t)| t.kind == BtfKind::Datasec && t.name == ".maps")
        else {
            return Ok(Vec::new());
        };
        let BtfDetail::Datasec(vars) = &datasec.detail else {
            return err(".maps is not a DATASEC");
        };
        let mut maps = Vec::with_capacity(vars.len());
        for var in vars {
            let var_type = self.type_by_id(var.type_id)?;
            if var_type.kind != BtfKind::Var {
                return err(format!(".maps entry {} is not a VAR", var.type_id));
            }
            let def_id = self.resolve(var_type.size_or_type)?;
            let def = self.type_by_id(def_id)?;
            let BtfDetail::Members(members) = &def.detail else {
                return err(format!("map {} is not defined by a struct", var_type.name));
            };
            let mut map = BtfMapDef {
                name: var_type.name.clone(),
                map_type: None,
                key_type: None,
                value_type: None,
                max_entries: None,
                map_flags: None,
            };
            for member in members {
                match member.name.as_str() {
                    "type" => map.map_type = Some(self.uint_attr(member.type_id)?),
                    "max_entries" => map.max_entries = Some(self.uint_attr(member.type_id)?),
                    "map_flags" => map.map_flags = Some(self.uint_attr(member.type_id)?),
                    "key" => map.key_type = Some(self.pointee(member.type_id)?),
                    "value" => map.value_type = Some(self.pointee(member.type_id)?),
                    _ => {}
                }
            }
            maps.push(map);
        }
        Ok(maps)
    }

    /// `__uint(name, N)` is `int (*name)[N]`: a pointer to an array of N.
    fn uint_attr(&self, id: u32) -> Result<u32, BtfError> {
        let array = self.type_by_id(self.pointee(id)?)?;
        match &array.detail {
            BtfDetail::Array { nelems, .. } => Ok(*nelems),
            _ => err(format!(
                "map attribute type {id} is not a pointer to an array"
            )),
        }
    }

    /// `__type(name, T)` is `T *name`: the pointee.
    fn pointee(&self, id: u32) -> Result<u32, BtfError> {
        let ptr_id = self.resolve(id)?;
        let ptr = self.type_by_id(ptr_id)?;
        if ptr.kind != BtfKind::Ptr {
            return err(format!("map attribute type {id} is not a pointer"));
        }
        Ok(ptr.size_or_type)
    }
}

fn or_anon(name: &str) -> &str {
    if name.is_empty() {
        "<anon>"
    } else {
        name
    }
}

impl fmt::Display for BtfKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The programs of an ELF eBPF object: global functions outside `.text`,
/// with their section names.
pub fn elf_programs(elf: &[u8]) -> Result<Vec<(String, String)>, BtfError> {
    use object::ObjectSymbol as _;
    let file = object::File::parse(elf).map_err(|e| BtfError(format!("not an ELF object: {e}")))?;
    let mut programs = Vec::new();
    for symbol in file.symbols() {
        if symbol.kind() != object::SymbolKind::Text || !symbol.is_global() {
            continue;
        }
        let Some(index) = symbol.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let section_name = section.name().unwrap_or_default();
        if section_name == ".text" {
            continue;
        }
        if let Ok(name) = symbol.name() {
            programs.push((name.to_owned(), section_name.to_owned()));
        }
    }
    programs.sort();
    Ok(programs)
}
