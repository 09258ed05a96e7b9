//! Typed access to the datapath's maps.
//!
//! Each map has a module with its key and value mirrors (declared with
//! [`c_struct!`](crate::c_struct), twins of the C structs in
//! `ebpf/lib/*.h`) and a wrapper in the style of aya's typed maps
//! (`PerCpuHashMap<T, K, V>` with `T` = `MapData`, `&MapData` or
//! `&mut MapData`).
//!
//! [`map_bindings`] and [`mirrored_types`] are the registry the BTF layout
//! check walks: a map that an object defines but that is not bound here, or a
//! mirror whose layout drifted from C, fails `cargo test` and refuses to load.

pub mod abi;
pub mod clock;
pub mod config;
pub mod conntrack;
pub mod endpoint;
pub mod events;
pub mod fragments;
pub mod ipcache;
pub mod metrics;
pub mod packet_counter;
pub mod policy;
mod typed;

use std::path::Path;

use aya::maps::MapData;

use crate::{
    error::{DatapathError, Result},
    layout::{CType as _, MapBinding, TypeLayout},
};

/// Every map of every embedded object, with the Rust types bound to it.
pub fn map_bindings() -> Vec<MapBinding> {
    let mut all = vec![
        packet_counter::binding(),
        ipcache::binding(),
        metrics::binding(),
        config::binding(),
        events::binding(),
        fragments::binding(),
        clock::binding(),
    ];
    all.extend(endpoint::bindings());
    all.extend(conntrack::bindings());
    all.extend(policy::bindings());
    all
}

/// Every Rust mirror of a C struct. Register new mirrors here.
pub fn mirrored_types() -> Vec<TypeLayout> {
    vec![
        packet_counter::PacketCounterKey::layout(),
        packet_counter::PacketCounterValue::layout(),
        endpoint::EndpointInfo::layout(),
        ipcache::IpcacheKey::layout(),
        ipcache::IpcacheEntry::layout(),
        policy::PolicyKey::layout(),
        policy::PolicyEntry::layout(),
        conntrack::CtKey::layout(),
        conntrack::CtEntry::layout(),
        metrics::MetricsKey::layout(),
        metrics::MetricsValue::layout(),
        config::DatapathConfig::layout(),
        events::FlowEvent::layout(),
        fragments::FragKey::layout(),
        fragments::FragEntry::layout(),
        clock::ClockCache::layout(),
    ]
}

/// The binding of the map named `name`.
pub fn binding(name: &str) -> Option<MapBinding> {
    map_bindings().into_iter().find(|b| b.name == name)
}

/// Opens a pinned map and checks that the kernel object matches `binding`
/// (map type, key size, value size), so a typed wrapper over it is sound.
pub fn open_pinned(path: &Path, binding: &MapBinding) -> Result<MapData> {
    let object = format!("map {}", binding.name);
    let data = MapData::from_pin(path).map_err(|e| match crate::error::find_errno(&e) {
        Some(libc::ENOENT) => DatapathError::NotPinned {
            object: object.clone(),
            path: path.display().to_string(),
            hint: "nothing is attached there; attach first, or check the pin directory",
        },
        _ => DatapathError::op("open pinned", object.clone(), &e),
    })?;
    check_pinned(&data, path, binding)?;
    Ok(data)
}

/// Verifies that a map's kernel metadata matches its Rust binding.
pub fn check_pinned(data: &MapData, path: &Path, binding: &MapBinding) -> Result<()> {
    binding_mismatch(data, binding)?.map_or(Ok(()), |detail| {
        Err(DatapathError::Incompatible {
            object: format!("map {}", binding.name),
            path: path.display().to_string(),
            detail,
        })
    })
}

/// How a map's kernel metadata (type, key and value sizes) differs from its
/// Rust binding, or `None` when it matches.
pub fn binding_mismatch(data: &MapData, binding: &MapBinding) -> Result<Option<String>> {
    let object = format!("map {}", binding.name);
    let info = data
        .info()
        .map_err(|e| DatapathError::op("get info of", object, &e))?;
    let mut problems = Vec::new();
    match info.map_type() {
        Ok(t) if t == binding.map_type => {}
        Ok(t) => problems.push(format!("type {t:?}, expected {:?}", binding.map_type)),
        Err(e) => problems.push(format!("unknown map type: {e}")),
    }
    if info.key_size() as usize != binding.key.size {
        problems.push(format!(
            "key size {} bytes, expected {} ({})",
            info.key_size(),
            binding.key.size,
            binding.key.rust_name
        ));
    }
    if info.value_size() as usize != binding.value.size {
        problems.push(format!(
            "value size {} bytes, expected {} ({})",
            info.value_size(),
            binding.value.size,
            binding.value.rust_name
        ));
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}
