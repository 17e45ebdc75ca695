//! Tests of the test kit itself (testkit/): what its parts decide without a
//! service running, and that it finds the programs cargo built. They live
//! here, as a test of the packetflix package, so `cargo nextest run
//! --all-targets` at the top runs them with every other test.

use std::path::Path;

use packetflix_testkit::bins;

#[test]
fn the_kit_finds_the_binaries_cargo_built_for_this_test() {
    assert_eq!(bins::service(), Path::new(env!("CARGO_BIN_EXE_packetflix")));
    assert_eq!(
        bins::capture_client(),
        Path::new(env!("CARGO_BIN_EXE_packetflix-capture"))
    );
    assert_eq!(bins::repo(), Path::new(env!("CARGO_MANIFEST_DIR")));
}
