//! Sets up linking of the N-API addon (undefined napi_* symbols resolved by
//! the Node process at load time).
fn main() {
    napi_build::setup();
}
