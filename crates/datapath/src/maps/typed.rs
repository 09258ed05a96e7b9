//! Construction boilerplate shared by the typed map wrappers: each wrapper
//! `W<T>` holds one aya typed map over `T` (`MapData`, `&MapData` or
//! `&mut MapData`) and is built from an `aya::maps::Map` the way aya's own
//! typed maps are (`TryFrom<&Map>`, `TryFrom<&mut Map>`, `TryFrom<Map>`), or
//! opened from its pin after checking the pinned map matches this build.

/// `typed_wrapper!(Wrapper, AyaType<K, V>, MAP_NAME, binding_expr)` implements
/// the constructors of `Wrapper<T> { map: AyaType<T, K, V> }`.
macro_rules! typed_wrapper {
    ($wrapper:ident, $aya:ident < $($param:ty),+ >, $name:expr, $binding:expr) => {
        impl $wrapper<::aya::maps::MapData> {
            /// Opens the map pinned at `path`, checking that it is this build's map.
            pub fn from_pin(path: &::std::path::Path) -> $crate::error::Result<Self> {
                let data = $crate::maps::open_pinned(path, &$binding)?;
                let map = ::aya::maps::Map::from_map_data(data).map_err(|e| {
                    $crate::error::DatapathError::op("open", format!("map {}", $name), &e)
                })?;
                Self::try_from(map)
            }
        }

        impl<'a> TryFrom<&'a ::aya::maps::Map> for $wrapper<&'a ::aya::maps::MapData> {
            type Error = $crate::error::DatapathError;

            fn try_from(map: &'a ::aya::maps::Map) -> $crate::error::Result<Self> {
                let map = ::aya::maps::$aya::<_, $($param),+>::try_from(map).map_err(|e| {
                    $crate::error::DatapathError::op("type", format!("map {}", $name), &e)
                })?;
                Ok(Self { map })
            }
        }

        impl<'a> TryFrom<&'a mut ::aya::maps::Map> for $wrapper<&'a mut ::aya::maps::MapData> {
            type Error = $crate::error::DatapathError;

            fn try_from(map: &'a mut ::aya::maps::Map) -> $crate::error::Result<Self> {
                let map = ::aya::maps::$aya::<_, $($param),+>::try_from(map).map_err(|e| {
                    $crate::error::DatapathError::op("type", format!("map {}", $name), &e)
                })?;
                Ok(Self { map })
            }
        }

        impl TryFrom<::aya::maps::Map> for $wrapper<::aya::maps::MapData> {
            type Error = $crate::error::DatapathError;

            fn try_from(map: ::aya::maps::Map) -> $crate::error::Result<Self> {
                let map = ::aya::maps::$aya::<_, $($param),+>::try_from(map).map_err(|e| {
                    $crate::error::DatapathError::op("type", format!("map {}", $name), &e)
                })?;
                Ok(Self { map })
            }
        }
    };
}

pub(crate) use typed_wrapper;

/// The error of a failed map operation `op` on map `name`.
pub(crate) fn map_error(
    op: &'static str,
    name: &str,
    error: &aya::maps::MapError,
) -> crate::error::DatapathError {
    crate::error::DatapathError::op(op, format!("map {name}"), error)
}

/// `Ok(None)` for a missing key, the value otherwise.
pub(crate) fn optional<V>(
    result: Result<V, aya::maps::MapError>,
    op: &'static str,
    name: &str,
) -> crate::error::Result<Option<V>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_error(op, name, &e)),
    }
}

/// `Ok(true)` when the key was removed, `Ok(false)` when it was not there.
pub(crate) fn removed(
    result: Result<(), aya::maps::MapError>,
    name: &str,
) -> crate::error::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(map_error("delete from", name, &e)),
    }
}
