//! The eBPF objects compiled from `ebpf/*.c` by `build.rs`, embedded in the
//! crate so that a binary carries the datapath it was built with.

use crate::btf::{elf_programs, Btf, BtfError};

/// One compiled eBPF object.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedObject {
    /// The program file's stem, e.g. `"packet_counter"`.
    pub name: &'static str,
    /// The source, relative to the repository root.
    pub source: &'static str,
    /// The ELF object, 8-byte aligned as aya requires.
    pub bytes: &'static [u8],
}

impl EmbeddedObject {
    /// The object's BTF.
    pub fn btf(&self) -> Result<Btf, BtfError> {
        Btf::from_elf(self.bytes)
    }

    /// Names of the programs (entry points) in the object, sorted.
    pub fn program_names(&self) -> Result<Vec<String>, BtfError> {
        Ok(elf_programs(self.bytes)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Names of the maps the object defines, sorted.
    pub fn map_names(&self) -> Result<Vec<String>, BtfError> {
        let mut names: Vec<String> = self.btf()?.maps()?.into_iter().map(|m| m.name).collect();
        names.sort();
        Ok(names)
    }
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// The embedded object named `name` (the file stem of its source).
pub fn get(name: &str) -> Option<&'static EmbeddedObject> {
    OBJECTS.iter().copied().find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ebpf");
        let mut sources: Vec<String> = std::fs::read_dir(dir)
            .expect("ebpf dir")
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".c"))
                    .map(str::to_owned)
            })
            .collect();
        sources.sort();
        let mut embedded: Vec<String> = OBJECTS.iter().map(|o| o.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(sources, embedded);
        assert!(!PACKET_COUNTER.bytes.is_empty());
    }

    #[test]
    fn packet_counter_inventory() {
        let object = &PACKET_COUNTER;
        assert_eq!(
            object.program_names().expect("programs"),
            ["mbr_cnt_egress", "mbr_cnt_ingress"]
        );
        assert_eq!(object.map_names().expect("maps"), ["mbr_pkt_counts"]);
    }
}
