//! Loading an embedded object into the kernel: layout check, adoption of
//! pinned maps, verification of every program.

use std::{fs, path::PathBuf};

use aya::{programs::Program, Ebpf, EbpfLoader};

use crate::{
    bpffs::{exists, PinDir},
    error::{DatapathError, Result},
    layout::{check_object_maps, LayoutReport},
    maps,
    objects::EmbeddedObject,
};

/// Where the maps of a loaded object live.
#[derive(Debug, Clone, Copy)]
pub enum MapPins<'a> {
    /// Fresh, unpinned maps that die with the `Ebpf` (tests, test-run harness).
    None,
    /// `<pin dir>/maps/<name>`: an existing pin is adopted (after checking it
    /// matches this build), a missing one is created and pinned.
    Dir(&'a PinDir),
}

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `max_entries` of maps the loader creates, by map name (for a ring
    /// buffer: its size in bytes). Maps adopted from pins keep their size.
    pub max_entries: Vec<(String, u32)>,
}

/// Loads `object`: checks its maps' layouts against the Rust bindings, creates
/// or adopts its maps, and loads (verifies) every program. Programs stay
/// loaded while the returned `Ebpf` lives, unless pinned or attached through a
/// pinned link.
pub fn load(object: &EmbeddedObject, pins: MapPins<'_>) -> Result<Ebpf> {
    load_with(object, pins, &LoadOptions::default())
}

/// [`load`] with options (map sizes).
pub fn load_with(
    object: &EmbeddedObject,
    pins: MapPins<'_>,
    options: &LoadOptions,
) -> Result<Ebpf> {
    check_layout(object)?;
    raise_memlock_rlimit();

    let map_names = object
        .map_names()
        .map_err(|e| DatapathError::op("read maps of", format!("object {}", object.name), &e))?;
    let mut pin_paths: Vec<(String, PathBuf)> = Vec::new();
    if let MapPins::Dir(pins) = pins {
        for name in &map_names {
            let path = pins.map(name);
            if exists(&path) {
                let binding = maps::binding(name).ok_or_else(|| {
                    DatapathError::invalid(
                        "map",
                        format!("map {name} of object {} has no Rust binding", object.name),
                    )
                })?;
                // Adopt only what this build can read and write correctly.
                maps::open_pinned(&path, &binding)?;
            }
            pin_paths.push((name.clone(), path));
        }
    }

    let mut loader = EbpfLoader::new();
    for (name, path) in &pin_paths {
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    for (name, size) in &options.max_entries {
        if !map_names.contains(name) {
            return Err(DatapathError::invalid(
                "map size",
                format!("object {} has no map {name}", object.name),
            ));
        }
        if *size == 0 {
            return Err(DatapathError::invalid(
                "map size",
                format!("map {name}: max_entries must be above 0"),
            ));
        }
        loader.map_max_entries(name.as_str(), *size);
    }
    let mut ebpf = loader
        .load(object.bytes)
        .map_err(|e| DatapathError::op("load object", format!("object {}", object.name), &e))?;

    for (name, program) in ebpf.programs_mut() {
        let what = format!("program {name} of object {}", object.name);
        match program {
            Program::SchedClassifier(p) => p.load(),
            other => {
                return Err(DatapathError::invalid(
                    "program",
                    format!(
                        "{what} has type {:?}, which the loader does not support yet",
                        other.prog_type()
                    ),
                ));
            }
        }
        .map_err(|e| DatapathError::op("load (verify)", what, &e))?;
    }
    Ok(ebpf)
}

/// Runs the BTF layout check of one object's maps.
pub fn check_layout(object: &EmbeddedObject) -> Result<LayoutReport> {
    let mut report = LayoutReport::default();
    check_object_maps(object, &maps::map_bindings(), &mut report).map_err(|mut errors| {
        // Report the first; the cargo test prints them all.
        DatapathError::Layout(errors.swap_remove(0))
    })?;
    Ok(report)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so that
/// maps can be created. Best effort: newer kernels ignore the limit.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct is passed by pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Removes a pin if present; "not found" is not an error.
pub fn remove_pin(path: &std::path::Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DatapathError::io("unpin", path.display().to_string(), e)),
    }
}

/// Opens the program pinned at `path` and checks that it uses the map with id
/// `map_id` (pinned at `map_pin`): a program of another pin directory or build
/// is refused, with `reset` saying how to start over.
pub fn open_pinned_program_using(
    name: &str,
    path: &std::path::Path,
    map_id: u32,
    map_pin: &std::path::Path,
    reset: &str,
) -> Result<aya::programs::SchedClassifier> {
    let prog = aya::programs::SchedClassifier::from_pin(path)
        .map_err(|e| DatapathError::op("open pinned", format!("program {name}"), &e))?;
    let map_ids = prog
        .info()
        .and_then(|info| info.map_ids())
        .map_err(|e| DatapathError::op("get info of", format!("program {name}"), &e))?;
    if map_ids.is_some_and(|ids| !ids.contains(&map_id)) {
        return Err(DatapathError::Incompatible {
            object: format!("program {name}"),
            path: path.display().to_string(),
            detail: format!(
                "it does not use the map pinned at {}; {reset}",
                map_pin.display()
            ),
        });
    }
    Ok(prog)
}
