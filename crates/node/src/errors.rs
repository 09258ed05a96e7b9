//! Turning a [`DatapathError`] into a JavaScript `Error` that programs can
//! branch on: `code` (`"EPERM"`, `"ENOENT"`, `"EINCOMPATIBLE"`, ...),
//! `errno` (number or undefined), `op` and `object`.

use membrane_datapath::DatapathError;
use napi::{bindgen_prelude::JsObjectValue as _, Env, Error, JsValue as _, Status};

/// A JS `Error` carrying the datapath error's fields as properties. Falls
/// back to a plain error if the environment cannot build the object.
pub fn to_js_error(env: &Env, failure: &DatapathError) -> Error {
    to_js_error_with(env, failure, &[])
}

/// [`to_js_error`] with extra numeric properties, e.g. `done` and `total`
/// of a batch that failed part way.
pub fn to_js_error_with(env: &Env, failure: &DatapathError, extra: &[(&str, f64)]) -> Error {
    let message = failure.to_string();
    let plain = || Error::new(Status::GenericFailure, message.clone());
    let Ok(mut object) = env.create_error(plain()) else {
        return plain();
    };
    let set = (|| -> napi::Result<()> {
        object.set_named_property("code", failure.code())?;
        match failure.errno() {
            Some(errno) => object.set_named_property("errno", errno)?,
            None => object.set_named_property("errno", ())?,
        }
        object.set_named_property("op", failure.operation())?;
        object.set_named_property("object", failure.object())?;
        for (name, value) in extra {
            object.set_named_property(name, *value)?;
        }
        Ok(())
    })();
    if set.is_err() {
        return plain();
    }
    Error::from(object.to_unknown())
}
